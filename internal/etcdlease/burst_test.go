package etcdlease

// Bursts of concurrent DISCOVERs against a real etcd: a host claims the
// blocks its clients need (single-flight Grow, claim ahead), not one per
// DISCOVER; and when no block is left, a host borrows a free address in
// another host's block, so a client is refused only when the range is
// full.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// burstHost is a host of a network with the given ranges and block size.
func burstHost(t *testing.T, eps []string, prefix, name string, block int, ranges []model.Range, clk *fakeClock) *tHost {
	t.Helper()
	c, err := Open(Config{Leases: model.Leases{Etcd: eps, Prefix: prefix, Block: block, Host: name}, TTL: time.Minute, Now: clk.now, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := c.Network("s", ranges)
	pool := dhcp.NewPool(dhcp.Config{Network: "s", Server: testServer, Host: name, Blocks: n,
		DHCP: model.DHCP{Ranges: ranges, Lease: testLease}}, clk.now, nil)
	n.Attach(pool)
	return &tHost{name: name, c: c, n: n, h: &dhcp.Handler{Pool: pool, Store: c, Log: quiet, Now: clk.now}}
}

// lease runs DISCOVER and REQUEST for hw on h: the address ACKed, or
// why there is none.
func lease(t testing.TB, h *tHost, hw net.HardwareAddr) (netip.Addr, string) {
	off := h.h.Handle(msg(t, hw, dhcpv4.MessageTypeDiscover))
	if off == nil {
		return netip.Addr{}, "no offer"
	}
	r := h.h.Handle(msg(t, hw, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServer.Addr().AsSlice()))))
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		return netip.Addr{}, "offer " + off.YourIPAddr.String() + ", reply " + reply(r)
	}
	return addrOf(r.YourIPAddr), ""
}

// burst runs the exchanges of clients on hosts at once (client i on host
// i mod len(hosts)) and checks that each got a distinct address.
func burst(t *testing.T, hosts []*tHost, clients int, base byte) (got map[string]netip.Addr, refused []string) {
	t.Helper()
	var mu sync.Mutex
	got = map[string]netip.Addr{}
	var wg sync.WaitGroup
	for i := range clients {
		hw := net.HardwareAddr{0x52, 0x54, 0, base, byte(i >> 8), byte(i)}
		h := hosts[i%len(hosts)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, why := lease(t, h, hw)
			mu.Lock()
			defer mu.Unlock()
			if why != "" {
				refused = append(refused, fmt.Sprintf("%s on %s: %s", hw, h.name, why))
				return
			}
			got[hw.String()] = a
		}()
	}
	wg.Wait()
	by := map[netip.Addr]string{}
	for m, a := range got {
		if o, ok := by[a]; ok {
			t.Fatalf("%s ACKed to %s and %s", a, o, m)
		}
		by[a] = m
	}
	return got, refused
}

var burstRange = []model.Range{{From: netip.MustParseAddr("10.60.0.10"), To: netip.MustParseAddr("10.60.0.160")}} // 151 addresses

// TestBurstClaimsWhatItNeeds: 20 DISCOVERs at once on each of 3 hosts,
// blocks of 16 in a range of 151 (the e2e's TestStretch60Clients): every
// client gets an address, and no host holds more than the 2 blocks its
// 20 clients need (each concurrent DISCOVER used to claim its own).
func TestBurstClaimsWhatItNeeds(t *testing.T) {
	eps := endpoints(startCluster(t, 1))
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	var hosts []*tHost
	for i := range 3 {
		hosts = append(hosts, burstHost(t, eps, "/burst/", fmt.Sprintf("h%d", i+1), 16, burstRange, clk))
	}
	got, refused := burst(t, hosts, 60, 1)
	if len(refused) > 0 {
		t.Errorf("%d of 60 clients refused in a range of 151: %v", len(refused), refused)
	}
	waitIdle(hosts)
	for _, h := range hosts {
		t.Logf("%s holds %d blocks: %v", h.name, len(h.n.Blocks()), h.n.Blocks())
		if n := len(h.n.Blocks()); n > 2 {
			t.Errorf("%s claimed %d blocks of 16 for its 20 clients: it hoards what other hosts need", h.name, n)
		}
	}
	t.Logf("%d clients got addresses", len(got))
}

// waitIdle waits for claims ahead in flight to land.
func waitIdle(hosts []*tHost) {
	for _, h := range hosts {
		h.n.mu.Lock()
		f := h.n.flight
		h.n.mu.Unlock()
		if f != nil {
			<-f.done
		}
	}
}

// TestBorrowWhenNoBlockLeft: host h1 holds every block of a range of 12
// (blocks of 4) with 6 clients; h2 has no block and none is free. h2's
// clients get the free addresses inside h1's blocks (borrowed, written with
// a compare-and-swap) until the range is full, and only then is a client
// refused. h1 then has no address either, and says so.
func TestBorrowWhenNoBlockLeft(t *testing.T) {
	eps := endpoints(startCluster(t, 1))
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	rng := []model.Range{{From: netip.MustParseAddr("10.60.0.10"), To: netip.MustParseAddr("10.60.0.21")}}
	h1 := burstHost(t, eps, "/borrow/", "h1", 4, rng, clk)
	for i := range 3 { // claim the three blocks
		if err := h1.n.claimOne(); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	if got, _ := burst(t, []*tHost{h1}, 6, 1); len(got) != 6 {
		t.Fatalf("h1 gave %d addresses to its 6 clients", len(got))
	}
	// h1 is alive for h2 (its liveness key is written asynchronously): a
	// block of a host with no liveness key and no live lease inside is
	// h2's to reclaim, not to borrow from.
	waitAlive(t, eps, "/borrow/", "h1")
	h2 := burstHost(t, eps, "/borrow/", "h2", 4, rng, clk)
	waitLeases(t, h2, 6)
	got, refused := burst(t, []*tHost{h2}, 6, 2)
	if len(refused) > 0 || len(got) != 6 {
		t.Fatalf("h2 with 6 addresses free in h1's blocks: %d ACKed, refused %v", len(got), refused)
	}
	if len(h2.n.Blocks()) != 0 {
		t.Fatalf("h2 claimed %v: every block is h1's", h2.n.Blocks())
	}
	for m, a := range got {
		t.Logf("h2 borrowed %s for %s", a, m)
	}
	waitLeases(t, h1, 12)
	if a, why := lease(t, h2, net.HardwareAddr{0x52, 0x54, 0, 3, 0, 1}); why == "" {
		t.Fatalf("h2 gave %s with the range full", a)
	}
	if a, why := lease(t, h1, net.HardwareAddr{0x52, 0x54, 0, 3, 0, 2}); why == "" {
		t.Fatalf("h1 gave %s with the range full", a)
	}
}

// waitLeases waits until h's pool knows n leases (its watch).
func waitLeases(t *testing.T, h *tHost, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.h.Pool.Leases()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s's pool has %d leases, want %d", h.name, len(h.h.Pool.Leases()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitAlive waits until host's liveness key is in etcd.
func waitAlive(t *testing.T, eps []string, prefix, host string) {
	t.Helper()
	cli := rawClient(t, eps)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(context.Background(), keys{prefix}.host(host))
		if err == nil && len(resp.Kvs) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's liveness key is not in etcd: %v", host, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
