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
