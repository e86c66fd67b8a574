package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// poolSpec is the security review's setup: two addresses, a one-minute
// lease (the shortest the spec allows).
const poolSpec = `
networks:
  default:
    mode: isolated
    bridge: gpool0
    ipv4: 10.96.0.1/24
    dhcp:
      range: 10.96.0.100-10.96.0.101
      lease: 1m
`

// TestPoolNoDoubleLease replays the review's reproduction of a lease given
// to two clients, with busybox udhcpc guests against the real daemon: A
// gets .100, C .101; after the leases expire B gets .100 and A moves to
// .101; D must then get nothing while B's lease is valid, and B's lease
// must be in the daemon and, after a restart, on disk and served again.
// It waits out a lease (62 s), so it runs in parallel with other tests.
func TestPoolNoDoubleLease(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(poolSpec)
	d := l.Serve_(host, spec)
	hook := l.clientScript()
	macs := map[string]string{"A": "02:00:00:00:96:0a", "B": "02:00:00:00:96:0b", "C": "02:00:00:00:96:0c", "D": "02:00:00:00:96:0d"}
	g := map[string]string{}
	for _, n := range []string{"A", "B", "C", "D"} {
		g[n] = l.dhcpGuest(host, "default", "p"+strings.ToLower(n), "vp"+strings.ToLower(n), macs[n])
	}
	udhcpc := func(n string, extra ...string) (string, error) {
		args := append([]string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", hook}, extra...)
		return l.tryIn(g[n], args...)
	}
	obtain := func(n, want string, extra ...string) {
		t.Helper()
		out, err := udhcpc(n, extra...)
		if got := l.addrOf(g[n]); err != nil || got != want {
			t.Fatalf("%s (%s) got %q, want %s: %v\n%s", n, macs[n], got, want, err, out)
		}
		t.Logf("%s (%s) obtained %s", n, macs[n], want)
	}
	obtain("A", "10.96.0.100")
	obtain("C", "10.96.0.101")
	// The guests stop using their addresses when the leases run out (an
	// ARP probe before an offer must not find them there).
	for _, n := range []string{"A", "C"} {
		l.In(g[n], "ip", "addr", "flush", "dev", "eth0")
	}
	t.Log("waiting 62 s for the one-minute leases to expire")
	time.Sleep(62 * time.Second)
	obtain("B", "10.96.0.100")
	// A asks for its old address, is refused it, and takes C's expired one.
	obtain("A", "10.96.0.101", "-r", "10.96.0.100")
	bound := time.Now()
	for _, extra := range [][]string{nil, {"-r", "10.96.0.100"}} {
		if out, err := udhcpc("D", extra...); err == nil || l.addrOf(g["D"]) != "" {
			t.Errorf("D got %q from a pool whose two addresses are leased (udhcpc %v):\n%s", l.addrOf(g["D"]), extra, out)
		}
	}

	want := map[string]string{"10.96.0.100": macs["B"], "10.96.0.101": macs["A"]}
	checkLeases := func(from string) {
		t.Helper()
		if _, errs, _ := l.Run(host, "leases"); !strings.Contains(errs, from) {
			t.Fatalf("guestnet leases: want leases read %s, got %q", from, errs)
		}
		out := l.Guestnet(host, "leases", "-o", "json")
		var leases []struct{ IP, MAC, State string }
		if err := json.Unmarshal([]byte(out), &leases); err != nil {
			t.Fatalf("leases -o json: %v\n%s", err, out)
		}
		live := map[string][]string{}
		for _, le := range leases {
			if le.State == "bound" {
				live[le.IP] = append(live[le.IP], le.MAC)
			}
		}
		for ip, m := range want {
			if len(live[ip]) != 1 || live[ip][0] != m {
				t.Errorf("leases %s: %s is held by %v, want only %s\n%s", from, ip, live[ip], m, out)
			}
		}
		for ip, ms := range live {
			if len(ms) > 1 {
				t.Errorf("leases %s: %s has %d live leases: %v", from, ip, len(ms), ms)
			}
		}
		t.Logf("leases %s: %v", from, live)
	}
	checkLeases("from the daemon")
	d.Stop()
	checkLeases("from the store") // on disk, read with no daemon running
	l.Serve_(host, spec)
	checkLeases("from the daemon")
	if time.Since(bound) > 50*time.Second {
		t.Fatalf("too slow: B's lease is about to expire (%v since it was bound)", time.Since(bound))
	}
	// The restarted daemon still holds .100 for B: D is refused it, B renews it.
	if out, err := udhcpc("D", "-r", "10.96.0.100"); err == nil || l.addrOf(g["D"]) != "" {
		t.Errorf("after restart D got %q:\n%s", l.addrOf(g["D"]), out)
	}
	obtain("B", "10.96.0.100", "-r", "10.96.0.100")
}

// TestPoolHostnameNotTakenOver: a second guest asking DHCP for a name
// another guest holds gets its address but not the name; the DNS server
// keeps answering with the first guest's address.
func TestPoolHostnameNotTakenOver(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Serve_(host, l.Spec(strings.Replace(poolSpec, "10.96.0.100-10.96.0.101", "10.96.0.100-10.96.0.110", 1)+
		"      hosts: [{mac: \"02:00:00:00:96:aa\", ip: 10.96.0.10, name: vm1}]\n    dns:\n      domain: lab.internal\n"))
	hook := l.clientScript()
	first := l.dhcpGuest(host, "default", "h1", "vh1", "02:00:00:00:96:01")
	second := l.dhcpGuest(host, "default", "h2", "vh2", "02:00:00:00:96:02")
	third := l.dhcpGuest(host, "default", "h3", "vh3", "02:00:00:00:96:03")
	// The first holder of "web" sits above the second: the old lookup let
	// the lowest address win, which gave the name to the newcomer.
	for _, c := range []struct{ g, name, ask string }{{first, "web", "10.96.0.105"}, {second, "WEB", "10.96.0.100"}, {third, "vm1", "10.96.0.101"}} {
		out, err := l.tryIn(c.g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-r", c.ask, "-x", "hostname:"+c.name, "-s", hook)
		if err != nil || l.addrOf(c.g) != c.ask {
			t.Fatalf("udhcpc asking for %s and %q got %q: %v\n%s", c.ask, c.name, l.addrOf(c.g), err, out)
		}
	}
	a1 := l.addrOf(first)
	for _, c := range []struct{ query, want string }{{"web.lab.internal", a1}, {"vm1.lab.internal", "10.96.0.10"}} {
		out, _ := l.tryIn(second, "busybox", "nslookup", c.query, "10.96.0.1")
		// busybox nslookup prints the server's address first; the answer follows "Name:".
		i := strings.Index(out, "Name:")
		if i < 0 || !strings.Contains(out[i:], c.want) {
			t.Errorf("nslookup %s: want %s\n%s", c.query, c.want, out)
			continue
		}
		for _, other := range []string{l.addrOf(second), l.addrOf(third)} {
			if strings.Contains(out[i:], other+"\n") {
				t.Errorf("nslookup %s answers with %s, a guest that asked for the name later:\n%s", c.query, other, out)
			}
		}
		t.Logf("ok  nslookup %s -> %s", c.query, c.want)
	}
	var leases []struct{ IP, MAC, Hostname string }
	json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases)
	for _, le := range leases {
		if le.IP != a1 && le.Hostname != "" {
			t.Errorf("%s (%s) holds the name %q", le.IP, le.MAC, le.Hostname)
		}
	}
}
