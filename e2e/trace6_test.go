package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/trace"
)

// trace6Spec: default is a dual-stack nat network (NAT66), lab an
// IPv6-only routed network with a global prefix, other an IPv6-only nat
// network that names no peers.
const trace6Spec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
  lab:
    mode: routed
    bridge: grt0
    ipv6: 2001:db8:71::1/64
  other:
    mode: nat
    bridge: gnat1
    ipv6: fd42:2::1/64
`

// trace6Host is natHost with IPv6 on the uplink: the host is
// 2001:db8:1::1 on up0, its IPv6 default route goes to the "internet"
// namespace's 2001:db8:1::ff, and the far host is 2001:db8:ff::2 (on the
// internet namespace's lo). The internet namespace routes lab's prefix back
// by the route guestnet routes prints, and the nat network's prefix too:
// someone on the uplink's LAN who knows it tries to get in.
func trace6Host(l *Lab) (host, inet string) {
	host, inet = natHost(l)
	l.must("ip", "-n", host, "-6", "addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad")
	l.must("ip", "-n", inet, "-6", "addr", "add", "2001:db8:1::ff/64", "dev", "a0", "nodad")
	l.must("ip", "-n", inet, "-6", "addr", "add", "2001:db8:ff::2/128", "dev", "lo")
	l.must("ip", "-n", host, "-6", "route", "add", "default", "via", "2001:db8:1::ff", "dev", "up0")
	for _, p := range []string{"2001:db8:71::/64", "fd42:99::/64", "fd42:2::/64"} {
		l.must("ip", "-n", inet, "-6", "route", "add", p, "via", "2001:db8:1::1")
	}
	return host, inet
}

// trace6Apply applies trace6Spec (apply puts the bridges' IPv6 addresses
// there and turns IPv6 forwarding on).
func trace6Apply(l *Lab, host string) {
	l.Guestnet(host, "apply", l.Spec(trace6Spec))
}

// traceGuest6 makes a guest namespace attached to network with a static IPv6
// address (nodad: the test is not about DAD) and its default route via
// gw, plus an IPv4 address and route when addr4 is set.
func traceGuest6(l *Lab, host, network, name, hostIf, addr4, gw4, addr6, gw6 string) string {
	g := l.Guest(host, network, name, hostIf, addr4, gw4)
	l.must("ip", "-n", g, "-6", "addr", "add", addr6, "dev", "eth0", "nodad")
	l.must("ip", "-n", g, "-6", "route", "add", "default", "via", gw6)
	return g
}

// traceServe6 answers each TCP connection on [addr]:port in ns with "NAME
// SOURCE" (who answered, and the source it saw), until the test ends.
func traceServe6(l *Lab, ns, addrport, name string) {
	l.t.Helper()
	l.answerTCP(ns, addrport, func(peer net.IP) string { return name + " " + peer.String() })
}

// traceProbe6 sends one real packet from ns, source laddr, to raddr over
// IPv6 and returns who answered and the source they saw, or "dropped"; an
// ICMPv6 echo (busybox ping -6) says only "answered".
func traceProbe6(l *Lab, ns, laddr, proto, raddr string) (who, seen string) {
	if proto == "icmp" {
		if exec.Command("ip", "netns", "exec", ns, "busybox", "ping", "-6", "-c", "1", "-W", "1", "-I", laddr, raddr).Run() == nil {
			return "answered", ""
		}
		return "dropped", ""
	}
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var c net.Conn
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(laddr)}}
	if err := n.Do(func() (err error) { c, err = d.Dial("tcp6", raddr); return }); err != nil {
		return "dropped", ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 128)
	k, err := c.Read(buf)
	f := strings.Fields(string(buf[:k]))
	if err != nil || len(f) != 2 {
		return "dropped", ""
	}
	return f[0], f[1]
}

// TestTrace6Matrix: on IPv6 paths, trace's verdict (who the packet
// reaches: a guest, the internet, or dropped) equals what a real TCP
// connection or ICMPv6 echo between namespaces did, and --live agrees
// with the kernel's route: out of a nat network through NAT66 (the far end
// sees the uplink's address), from the internet into the nat network
// (refused), into a routed network (allowed), across networks (refused
// without peers), and with IPv6 forwarding off and ip6tables' FORWARD
// dropping by policy (Docker with ip6tables, moby/moby#48365).
func TestTrace6Matrix(t *testing.T) {
	l := newLab(t)
	host, inet := trace6Host(l)
	trace6Apply(l, host)
	g1 := traceGuest6(l, host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1", "fd42:99::10/64", "fd42:99::1")
	g3 := traceGuest6(l, host, "lab", "g3", "vg3", "", "", "2001:db8:71::10/64", "2001:db8:71::1")
	g4 := traceGuest6(l, host, "other", "g4", "vg4", "", "", "fd42:2::10/64", "fd42:2::1")
	names := map[string]string{"fd42:99::10": "g1", "2001:db8:71::10": "g3", "fd42:2::10": "g4", "2001:db8:ff::2": "inet"}
	for addr, name := range names {
		ns := map[string]string{"g1": g1, "g3": g3, "g4": g4, "inet": inet}[name]
		traceServe6(l, ns, "["+addr+"]:8080", name)
	}

	type row struct {
		what     string
		ns       string // where the probe starts
		src, dst string
		proto    string // tcp (port 8080) or icmp
		want     string // who must answer
		names    string // what the trace must say
		seen     string // the source the answerer must see, if checked
	}
	rows := []row{
		{"nat guest -> internet (NAT66)", g1, "fd42:99::10", "2001:db8:ff::2", "tcp", "inet", "source fd42:99::10 becomes 2001:db8:1::1", "2001:db8:1::1"},
		{"nat guest -> internet, ICMPv6 echo", g1, "fd42:99::10", "2001:db8:ff::2", "icmp", "answered", "", ""},
		{"internet -> nat guest", inet, "2001:db8:ff::2", "fd42:99::10", "tcp", "dropped", "chain to-default", ""},
		{"internet -> routed guest", inet, "2001:db8:ff::2", "2001:db8:71::10", "tcp", "g3", "chain to-lab", "2001:db8:ff::2"},
		{"routed guest -> internet (not NATed)", g3, "2001:db8:71::10", "2001:db8:ff::2", "tcp", "inet", "chain from-lab", "2001:db8:71::10"},
		{"other -> default (no peers)", g4, "fd42:2::10", "fd42:99::10", "tcp", "dropped", `iifname != "gnat0" reject`, ""},
		{"default -> lab (no peers)", g1, "fd42:99::10", "2001:db8:71::10", "tcp", "dropped", `iifname != "grt0" reject`, ""},
	}
	var table []string
	check := func(r row, when, want, names6 string) {
		raddr, target := r.dst, "icmp"
		if r.proto == "tcp" {
			raddr, target = "["+r.dst+"]:8080", "tcp/8080"
		}
		got, seen := traceProbe6(l, r.ns, r.src, r.proto, raddr)
		out, errs, code := l.Run(host, "-o", "json", "trace", r.src, r.dst, target)
		var res trace.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%s: trace -o json: exit %d, %v\n%s%s", r.what, code, err, out, errs)
		}
		sim := "dropped"
		switch {
		case res.CannotTell:
			sim = "cannot tell"
		case res.Delivered && r.proto == "icmp":
			sim = "answered"
		case res.Delivered && res.Local:
			sim = "host"
		case res.Delivered:
			sim = names[res.Dst.String()]
		}
		var said []string
		for _, h := range res.Hops {
			said = append(said, h.Stage+" "+h.Verdict+" "+h.Detail)
		}
		text := strings.Join(said, "\n")
		stop := ""
		if !res.Delivered && len(res.Hops) > 0 {
			stop = res.Hops[len(res.Hops)-1].Detail
		}
		live, _, _ := l.Run(host, "trace", "--live", r.src, r.dst, target)
		agree := strings.Contains(live, "live: AGREE")
		table = append(table, fmt.Sprintf("| %-55s | %-8s | %-8s | %-16s | %-5v | %s |", r.what+when, sim, got, seen, agree, stop))
		if got != want {
			t.Errorf("%s%s: real packets reach %q, want %q", r.what, when, got, want)
		}
		if sim != got {
			t.Errorf("%s%s: trace says %q, real packets %q\n%s", r.what, when, sim, got, text)
		}
		if r.seen != "" && want == r.want && got == want && seen != r.seen {
			t.Errorf("%s%s: %s saw source %s, want %s", r.what, when, got, seen, r.seen)
		}
		if names6 != "" && !strings.Contains(text, names6) {
			t.Errorf("%s%s: trace does not say %q:\n%s", r.what, when, names6, text)
		}
		if !agree {
			t.Errorf("%s%s: the kernel's route decision disagrees with the simulation:\n%s", r.what, when, live)
		}
	}
	for _, r := range rows {
		check(r, "", r.want, r.names)
	}
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
	check(rows[0], " (IPv6 forwarding off)", "dropped", "net.ipv6.conf.all.forwarding = 0")
	check(rows[3], " (IPv6 forwarding off)", "dropped", "net.ipv6.conf.all.forwarding = 0")
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	// ip6tables' FORWARD drops by policy, iptables' does not: IPv6 is
	// dropped, IPv4 of the same guest is not.
	l.In(host, "ip6tables", "-P", "FORWARD", "DROP")
	check(rows[0], " (ip6tables FORWARD DROP)", "dropped", "table ip6 filter chain FORWARD: policy drop")
	check(rows[3], " (ip6tables FORWARD DROP)", "dropped", "table ip6 filter chain FORWARD: policy drop")
	l.Serve(inet, "203.0.113.10:8080")
	_, err := l.Dial(g1, "203.0.113.10:8080")
	out, _, code := l.Run(host, "trace", "10.99.0.10", "203.0.113.10", "tcp/8080")
	if err != nil || code != 0 {
		t.Errorf("IPv4 under ip6tables' FORWARD drop: real dial %v, trace exit %d, want both through\n%s", err, code, out)
	}
	t.Logf("\n| path | trace | packets | source seen | live agrees | trace stops at |\n|---|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}
