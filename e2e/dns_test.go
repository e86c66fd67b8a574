package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The upstream's TXT names: several --txt-record entries for one name, each
// a record of one 250-byte string, so the answers are ~1,700 bytes (over
// the 1,232 guestnet advertises upstream) and ~2,550 bytes.
var bigTXT = map[string]int{"mid.example.test": 6, "big.example.test": 9}

// startUpstreamDNS runs dnsmasq in the pretend internet at 203.0.113.53,
// authoritative for example.test, and ends it (by PID) when the test ends.
func startUpstreamDNS(l *Lab, inet string) {
	l.t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		l.t.Fatal("dnsmasq is not installed: apt-get install -y dnsmasq-base")
	}
	l.must("ip", "-n", inet, "addr", "add", "203.0.113.53/32", "dev", "lo")
	args := []string{"netns", "exec", inet, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
		"--port", "53", "--listen-address=203.0.113.53", "--bind-interfaces", "--user=root", "--pid-file=",
		"--address=/web.example.test/203.0.113.80"}
	for name, n := range bigTXT {
		for i := range n {
			args = append(args, fmt.Sprintf("--txt-record=%s,%03d%s", name, i, strings.Repeat("x", 247)))
		}
	}
	up := exec.Command("ip", args...)
	if err := up.Start(); err != nil {
		l.t.Fatalf("dnsmasq: %v", err)
	}
	l.t.Cleanup(func() { up.Process.Kill(); up.Wait() })
	l.waitUDP(inet, 53)
}

// digResult is what dig printed: its status, header flags, answer count,
// message size and transport; timedOut when no answer came at all.
type digResult struct {
	out       string
	status    string
	flags     []string
	answers   int
	size      int
	transport string // UDP or TCP, from ";; SERVER: ... (UDP)"
	timedOut  bool
}

var (
	digStatus = regexp.MustCompile(`status: (\w+)`)
	digFlags  = regexp.MustCompile(`;; flags: ([a-z ]*);.*ANSWER: (\d+)`)
	digSize   = regexp.MustCompile(`MSG SIZE\s+rcvd: (\d+)`)
	digServer = regexp.MustCompile(`;; SERVER: .*\((UDP|TCP)\)`)
)

func (r digResult) tc() bool {
	for _, f := range r.flags {
		if f == "tc" {
			return true
		}
	}
	return false
}

func (r digResult) String() string {
	if r.timedOut {
		return "no answer (timed out)"
	}
	return fmt.Sprintf("%s, flags [%s], %d answers, %d bytes over %s", r.status, strings.Join(r.flags, " "), r.answers, r.size, r.transport)
}

// dig asks server from ns (one try, 1 s); the last answer dig printed is
// the one parsed (after a TCP retry, the retry's).
func (l *Lab) dig(ns, server string, args ...string) digResult {
	l.t.Helper()
	out, _ := l.tryIn(ns, append([]string{"dig", "@" + server, "+time=1", "+tries=1"}, args...)...)
	r := digResult{out: out}
	st := digStatus.FindAllStringSubmatch(out, -1)
	if len(st) == 0 {
		r.timedOut = true
		return r
	}
	r.status = st[len(st)-1][1]
	if f := digFlags.FindAllStringSubmatch(out, -1); len(f) > 0 {
		r.flags = strings.Fields(f[len(f)-1][1])
		r.answers, _ = strconv.Atoi(f[len(f)-1][2])
	}
	if s := digSize.FindAllStringSubmatch(out, -1); len(s) > 0 {
		r.size, _ = strconv.Atoi(s[len(s)-1][1])
	}
	if s := digServer.FindAllStringSubmatch(out, -1); len(s) > 0 {
		r.transport = s[len(s)-1][1]
	}
	return r
}

const dnsSpec = dhcpSpec + `    dns:
      domain: lab.internal
      upstream: [203.0.113.53]
  other:
    mode: nat
    bridge: gnat1
    ipv4: 10.99.1.1/24
    dns:
      domain: other.internal
      upstream: [203.0.113.53]
`

// TestDNSLargeAnswers: a guest asks its network's DNS for a local name, a
// small forwarded answer, and TXT answers of ~1,700 and ~2,550 bytes from
// dnsmasq upstream: with EDNS0 (dig +bufsize=4096) they arrive over UDP cut
// to 1,232 bytes with TC (guestnet's cap for guests); without EDNS cut to
// 512 bytes with TC; whole over TCP (dig's own retry, and +tcp).
func TestDNSLargeAnswers(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host, inet := natHost(l)
	startUpstreamDNS(l, inet)
	l.Serve_(host, l.Spec(dnsSpec))
	g := l.dhcpGuest(host, "default", "g1", "vg1", "")
	if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-x", "hostname:alpha", "-s", l.clientScript()); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	alpha := l.addrOf(g)
	const gw = "10.99.0.1"

	for _, c := range []struct{ what, want string }{
		{"vm1.lab.internal", "10.99.0.10"},
		{"alpha.lab.internal", alpha},
		{"-x " + alpha, "alpha.lab.internal."},
		{"web.example.test", "203.0.113.80"},
	} {
		out, err := l.tryIn(g, append([]string{"dig", "@" + gw, "+short", "+time=1", "+tries=1"}, strings.Fields(c.what)...)...)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Errorf("dig +short %s from its guest: got %q (err %v), want %s", c.what, out, err, c.want)
			continue
		}
		t.Logf("ok  dig +short %-24s -> %s", c.what, c.want)
	}

	for name, n := range bigTXT {
		// EDNS0 advertising 4,096 bytes: guestnet caps UDP answers to
		// guests at 1,232 bytes whatever they advertise (no IP fragments,
		// no amplification): cut with TC over UDP...
		r := l.dig(g, gw, "+bufsize=4096", "+ignore", name, "TXT")
		if r.status != "NOERROR" || !r.tc() || r.answers >= n || r.size > 1232 || r.transport != "UDP" {
			t.Errorf("%s with +bufsize=4096 +ignore: %s; want NOERROR, tc, fewer than %d answers, at most 1,232 bytes, UDP\n%s", name, r, n, r.out)
		}
		t.Logf("ok  dig +bufsize=4096 +ignore %s TXT: %s", name, r)

		// ...and whole when dig follows TC to TCP, as resolvers do.
		r = l.dig(g, gw, "+bufsize=4096", name, "TXT")
		if r.status != "NOERROR" || r.tc() || r.answers != n || r.size <= 1232 || r.transport != "TCP" {
			t.Errorf("%s with +bufsize=4096: %s; want a TCP retry with %d answers, over 1,232 bytes\n%s", name, r, n, r.out)
		}
		t.Logf("ok  dig +bufsize=4096 %s TXT (retries on TC): %s", name, r)

		// No EDNS, over UDP, TC not followed: cut to 512 bytes, tc set.
		r = l.dig(g, gw, "+noedns", "+ignore", name, "TXT")
		if r.status != "NOERROR" || !r.tc() || r.answers >= n || r.size > 512 || r.transport != "UDP" {
			t.Errorf("%s with +noedns +ignore: %s; want tc, fewer than %d answers, at most 512 bytes, UDP\n%s", name, r, n, r.out)
		}
		t.Logf("ok  dig +noedns +ignore %s TXT: %s", name, r)

		// dig's default: on TC it retries over TCP and gets it all.
		r = l.dig(g, gw, "+noedns", name, "TXT")
		if !strings.Contains(r.out, "Truncated, retrying in TCP mode") || r.tc() || r.answers != n || r.transport != "TCP" {
			t.Errorf("%s with +noedns (default retry): %s; want a TCP retry with %d answers\n%s", name, r, n, r.out)
		}
		t.Logf("ok  dig +noedns %s TXT (retries on TC): %s", name, r)

		r = l.dig(g, gw, "+tcp", name, "TXT")
		if r.status != "NOERROR" || r.tc() || r.answers != n || r.transport != "TCP" {
			t.Errorf("%s with +tcp: %s; want %d answers over TCP\n%s", name, r, n, r.out)
		}
		t.Logf("ok  dig +tcp %s TXT: %s", name, r)
	}
}

// TestDNSNotOpenResolver: the DNS of network default answers its own
// guests only. From the pretend internet (routed through the host to the
// bridge address) and from a guest of network other, a recursive query, a
// guest's name and a PTR get no answer, over UDP and TCP; both reach the
// address otherwise (ping), and the other guest's own DNS answers it. The
// host itself may ask (loopback). The kernel's table is exactly the
// rendered one.
func TestDNSNotOpenResolver(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host, inet := natHost(l)
	startUpstreamDNS(l, inet)
	specPath := l.Spec(dnsSpec)
	l.Serve_(host, specPath)
	g := l.Guest(host, "default", "g1", "vg1", "10.99.0.20/24", "10.99.0.1")
	o := l.Guest(host, "other", "o1", "vo1", "10.99.1.10/24", "10.99.1.1")
	l.must("ip", "-n", inet, "route", "add", "10.99.0.0/23", "via", "198.51.100.1")
	const gw = "10.99.0.1"

	l.tableIsRendered(host, specPath)

	// The controls: what is refused below is reachable, and the guests' dig works.
	l.expect("internet -> 10.99.0.1 (ping)", true, l.Ping(inet, gw))
	l.expect("other's guest -> 10.99.0.1 (ping)", true, l.Ping(o, gw))
	if r := l.dig(g, gw, "web.example.test"); r.status != "NOERROR" || r.answers != 1 {
		t.Errorf("the guest of default asking its DNS: %s\n%s", r, r.out)
	}
	if r := l.dig(o, "10.99.1.1", "web.example.test"); r.status != "NOERROR" || r.answers != 1 {
		t.Errorf("the guest of other asking its own DNS: %s\n%s", r, r.out)
	}

	queries := [][]string{
		{"big.example.test", "TXT", "+bufsize=4096"}, // recursive, ~2,550 bytes: the amplification
		{"web.example.test"},
		{"vm1.lab.internal"},
		{"-x", "10.99.0.10"},
	}
	var rows []string
	for _, from := range []struct{ what, ns string }{{"internet (routed in)", inet}, {"guest of other", o}} {
		for _, q := range queries {
			for _, tcp := range []bool{false, true} {
				args := q
				proto := "udp"
				if tcp {
					args, proto = append([]string{"+tcp"}, q...), "tcp"
				}
				r := l.dig(from.ns, gw, args...)
				what := fmt.Sprintf("%s: dig @%s %s (%s)", from.what, gw, strings.Join(q, " "), proto)
				// The firewall drops it: no answer at all (the server's own
				// REFUSED for such sources is checked in internal/dns).
				if !r.timedOut {
					t.Errorf("%s: %s; want no answer (dropped by table inet guestnet chain input)\n%s", what, r, r.out)
				}
				rows = append(rows, fmt.Sprintf("| %-70s | %s |", what, r))
			}
		}
	}
	// guestnet trace says the same, naming the rule.
	out, _, code := l.Run(host, "trace", "203.0.113.10", gw, "udp/53")
	if code != 1 || !strings.Contains(out, `chain dns-default: iifname != "gnat0" iifname != "lo" drop`) {
		t.Errorf("trace internet -> %s udp/53: exit %d, want 1 naming the DNS rule\n%s", gw, code, out)
	}
	if out, _, code := l.Run(host, "trace", "10.99.0.20", gw, "udp/53"); code != 0 {
		t.Errorf("trace guest -> %s udp/53: exit %d, want 0 (delivered)\n%s", gw, code, out)
	}

	// The host's own queries (lo) are answered, whichever of its addresses
	// they leave from (the nat network's masquerade rewrites them on lo).
	for _, src := range [][]string{nil, {"-b", "127.0.0.1"}, {"-b", "10.99.0.1"}} {
		r := l.dig(host, gw, append(src, "vm1.lab.internal")...)
		what := "host: dig @10.99.0.1 " + strings.Join(append(src, "vm1.lab.internal"), " ")
		if r.status != "NOERROR" || r.answers != 1 {
			t.Errorf("%s: %s\n%s", what, r, r.out)
		}
		rows = append(rows, fmt.Sprintf("| %-70s | %s |", what, r))
	}
	t.Logf("\n| query | result |\n|---|---|\n%s", strings.Join(rows, "\n"))
}

func needDig(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatal("dig is not installed: apt-get install -y bind9-dnsutils")
	}
}
