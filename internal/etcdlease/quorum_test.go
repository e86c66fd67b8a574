package etcdlease

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// exchange runs DISCOVER and REQUEST for hw; the REQUEST's reply (nil:
// none) and the offered address.
func exchange(t testing.TB, h *tHost, hw net.HardwareAddr) (*dhcpv4.DHCPv4, netip.Addr) {
	off := h.h.Handle(msg(t, hw, dhcpv4.MessageTypeDiscover))
	if off == nil {
		return nil, netip.Addr{}
	}
	r := h.h.Handle(msg(t, hw, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServer.Addr().AsSlice()))))
	return r, addrOf(off.YourIPAddr)
}

func renew(t testing.TB, h *tHost, hw net.HardwareAddr, a netip.Addr) *dhcpv4.DHCPv4 {
	return h.h.Handle(msg(t, hw, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(a.AsSlice())))
}

// TestQuorumLost: a three-member cluster loses two members. A new lease
// is refused (no ACK) with the reason in the health; a renewal of a lease
// this host wrote is ACKed with the time it has left, not extended. One
// member back: new leases again.
func TestQuorumLost(t *testing.T) {
	ms := startCluster(t, 3)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	h := startHost(t, endpoints(ms), "/quorum/", "a", 2*time.Second, clk, quiet)
	t.Cleanup(func() { h.c.Close() })
	m1, m2 := net.HardwareAddr{0x52, 0x54, 0, 0, 1, 1}, net.HardwareAddr{0x52, 0x54, 0, 0, 1, 2}
	r, a1 := exchange(t, h, m1)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("first lease with a healthy cluster: %v", reply(r))
	}
	clk.add(20 * time.Second)

	ms[1].kill()
	ms[2].kill()
	start := time.Now()
	r, a2 := exchange(t, h, m2)
	if r != nil {
		t.Fatalf("a new lease with two of three members dead was answered: %v", reply(r))
	}
	refusedIn := time.Since(start)
	if n := h.h.Stats.NoQuorum.Load(); n != 1 {
		t.Errorf("NoQuorum counts %d refusals, want 1", n)
	}
	r = renew(t, h, m1, a1)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || addrOf(r.YourIPAddr) != a1 {
		t.Fatalf("renewal of a known lease without quorum: %v", reply(r))
	}
	if got := r.IPAddressLeaseTime(0); got != 40*time.Second {
		t.Errorf("renewal without quorum granted %v, want the 40s the lease has left", got)
	}
	if got := r.IPAddressRenewalTime(0); got != 20*time.Second {
		t.Errorf("T1 of the held renewal is %v, want half the time left (20s)", got)
	}
	if h.h.Stats.Held.Load() != 1 {
		t.Errorf("Held counts %d, want 1", h.h.Stats.Held.Load())
	}
	// Another client's renewal of an address that is not its: no ACK.
	if r := renew(t, h, m2, a1); r != nil && r.MessageType() == dhcpv4.MessageTypeAck {
		t.Errorf("a stranger's renewal of %s was ACKed without quorum", a1)
	}
	health := waitHealth(t, h.c, false)
	if health.Error == "" || len(health.Reachable) != 1 || health.Reachable[0] != ms[0].client {
		t.Errorf("health without quorum: %+v", health)
	}
	t.Logf("no quorum: a new lease refused after %v; health %+v", refusedIn.Round(time.Millisecond), health)
	cl := h.c.Cluster()
	if cl.Etcd.Quorum || len(cl.Blocks) == 0 || cl.Host != "a" {
		t.Errorf("cluster view without quorum: %+v", cl)
	}

	ms[1].start(t, "etcd")
	waitQuorum(t, endpoints(ms[:2]), 20*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r = renew(t, h, m2, a2)
		if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
			r, a2 = exchange(t, h, m2)
		}
		if r != nil && r.MessageType() == dhcpv4.MessageTypeAck {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new lease 20s after one member came back: %v", reply(r))
		}
	}
	r = renew(t, h, m1, a1)
	if r == nil || r.IPAddressLeaseTime(0) != testLease {
		t.Errorf("renewal with the quorum back: %v, lease %v, want a full %v", reply(r), r.IPAddressLeaseTime(0), testLease)
	}
	waitHealth(t, h.c, true)
}

// waitHealth waits until the client's health says quorum is q.
func waitHealth(t testing.TB, c *Client, q bool) (h model.EtcdHealth) {
	t.Helper()
	since := time.Now() // a check made after the change
	deadline := time.Now().Add(3*HealthEvery + 5*time.Second)
	for {
		h = c.Health()
		if h.Quorum == q && h.Checked.After(since) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never said quorum %v: %+v", q, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPutRefusesAnotherClientsAddress: a host whose view is stale (its
// watch has not told it of another host's lease, or it believes it owns
// a block it does not) cannot write a lease over another client's live
// one; its pool learns the lease instead.
func TestPutRefusesAnotherClientsAddress(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	a := startHost(t, endpoints(ms), "/stale/", "a", 2*time.Second, clk, quiet)
	b := startHost(t, endpoints(ms), "/stale/", "b", 2*time.Second, clk, quiet)
	t.Cleanup(func() { a.c.Close(); b.c.Close() })
	r, x := exchange(t, a, net.HardwareAddr{0x52, 0x54, 0, 0, 2, 1})
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("lease on a: %v", reply(r))
	}
	b.n.mu.Lock()
	delete(b.n.revs, x) // b never saw a's write
	b.n.mu.Unlock()
	err := b.n.Put(dhcp.Lease{MAC: "52:54:00:00:02:02", IP: x, Expiry: clk.now().Add(time.Minute)})
	if err == nil || !strings.Contains(err.Error(), "held by 52:54:00:00:02:01") {
		t.Fatalf("b's write over a's live lease of %s: %v", x, err)
	}
	if l, ok := b.h.Pool.Lookup("52:54:00:00:02:01"); !ok || l.IP != x {
		t.Errorf("b's pool did not learn a's lease: %+v", l)
	}
	clk.add(2 * time.Minute) // a's lease expired: the address may go to another client
	if err := b.n.Put(dhcp.Lease{MAC: "52:54:00:00:02:02", IP: x, Expiry: clk.now().Add(time.Minute)}); err != nil {
		t.Fatalf("b's write over a's expired lease: %v", err)
	}
}

// TestLivenessLapses: a host's liveness key goes when its client stops
// keeping it (a crash), after its TTL, and comes back with the host.
func TestLivenessLapses(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	h := startHost(t, endpoints(ms), "/live/", "a", 2*time.Second, clk, quiet)
	cli := rawClient(t, endpoints(ms))
	k := keys{"/live/"}
	has := func() bool {
		r, err := cli.Get(context.Background(), k.host("a"))
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Kvs) == 1
	}
	waitFor(t, 5*time.Second, "the liveness key", has)
	time.Sleep(3 * time.Second) // longer than the TTL: kept alive
	if !has() {
		t.Fatal("the liveness key lapsed while the host runs")
	}
	h.c.Close()
	start := time.Now()
	waitFor(t, 10*time.Second, "the liveness key to lapse", func() bool { return !has() })
	t.Logf("liveness key gone %v after the host stopped (TTL 2s)", time.Since(start).Round(100*time.Millisecond))
}

func waitFor(t testing.TB, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
