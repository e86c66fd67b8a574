package etcdlease

// Breaker tests of issue 16: an operator's mistakes (hosts that disagree
// on the block size, an etcd started late) must never give one address
// to two clients, nor need a restart.

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// TestPutRefusesAnotherClientsSeenLease: b's watch has seen a's lease
// (its revision is known) but b's pool had not yet when it bound the
// address (two hosts that both believe they own a block: the same
// leases.host, or blocks of different sizes). The write compares the
// revision only: it must not replace a live lease of another client.
func TestPutRefusesAnotherClientsSeenLease(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	a := startHost(t, endpoints(ms), "/seen/", "a", 2*time.Second, clk, quiet)
	b := startHost(t, endpoints(ms), "/seen/", "b", 2*time.Second, clk, quiet)
	t.Cleanup(func() { a.c.Close(); b.c.Close() })
	x := netip.MustParseAddr("10.60.0.10")
	if err := a.n.Put(dhcp.Lease{MAC: "52:54:00:00:03:01", IP: x, Expiry: clk.now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b's watch to see a's lease", func() bool {
		b.n.mu.Lock()
		defer b.n.mu.Unlock()
		return b.n.revs[x] != 0
	})
	err := b.n.Put(dhcp.Lease{MAC: "52:54:00:00:03:02", IP: x, Expiry: clk.now().Add(time.Minute)})
	if !errors.Is(err, ErrTaken) {
		t.Fatalf("b's write over a's live lease of %s (seen by its watch): %v, want ErrTaken", x, err)
	}
	if l := readEtcd(t, rawClient(t, endpoints(ms)), keys{"/seen/"}).leases[x]; l.MAC != "52:54:00:00:03:01" {
		t.Errorf("etcd holds %s for %s, want a's client 52:54:00:00:03:01", l.MAC, x)
	}
	// The same client renewing on b (a guest that moved) still may.
	if err := b.n.Put(dhcp.Lease{MAC: "52:54:00:00:03:01", IP: x, Expiry: clk.now().Add(2 * time.Minute)}); err != nil {
		t.Errorf("the holder's own renewal on b: %v", err)
	}
}

// TestBlockSizeMismatch: host b runs with another leases.block than a
// (an operator changed it on one host of a live cluster). Neither may
// claim a block that overlaps one of the other's (they would both hand
// out its addresses); blocks that overlap none still serve.
func TestBlockSizeMismatch(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	a := startHost(t, endpoints(ms), "/size/", "a", 2*time.Second, clk, quiet)
	t.Cleanup(func() { a.c.Close() })
	if err := a.n.Grow(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(Config{Leases: model.Leases{Etcd: endpoints(ms), Prefix: "/size/", Block: 3, Host: "b"},
		TTL: 2 * time.Second, Now: clk.now, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := c.Network("s", testRanges)
	gerr := n.Grow()
	for _, ba := range a.n.Blocks() {
		for _, bb := range n.Blocks() {
			if ba.Contains(bb.From) || ba.Contains(bb.To) || bb.Contains(ba.From) {
				t.Errorf("b (block 3) claimed %v-%v, which overlaps a's block %v-%v", bb.From, bb.To, ba.From, ba.To)
			}
		}
	}
	if gerr != nil {
		t.Errorf("b's Grow: %v (a block that overlaps none of a's is free)", gerr)
	}
	if len(n.Blocks()) != 1 {
		t.Errorf("b holds %v, want one block", n.Blocks())
	}
	// And a (block 4) in turn claims none that overlaps b's.
	for range 2 {
		if err := a.n.Grow(); err != nil {
			t.Fatal(err)
		}
	}
	for _, ba := range a.n.Blocks() {
		for _, bb := range n.Blocks() {
			if ba.Contains(bb.From) || ba.Contains(bb.To) || bb.Contains(ba.From) {
				t.Errorf("a claimed %v-%v, which overlaps b's block %v-%v", ba.From, ba.To, bb.From, bb.To)
			}
		}
	}
	t.Logf("a (block 4) holds %v; b (block 3) holds %v", a.n.Blocks(), n.Blocks())
}

// TestEtcdLateAtStart: the host starts while its etcd is down (serve
// started before the cluster, a reboot of both); DHCP refuses new leases
// and says why, then serves once etcd is back, without a restart.
func TestEtcdLateAtStart(t *testing.T) {
	ms := startCluster(t, 1)
	ms[0].kill()
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	h := startHost(t, endpoints(ms), "/late/", "a", 2*time.Second, clk, quiet)
	t.Cleanup(func() { h.c.Close() })
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 4, 1}
	if r, _ := exchange(t, h, hw); r != nil {
		t.Fatalf("a lease with etcd down was answered: %v", reply(r))
	}
	if hl := waitHealth(t, h.c, false); hl.Error == "" {
		t.Errorf("health with etcd down says no error: %+v", hl)
	}
	bin, _ := exec.LookPath("etcd")
	ms[0].start(t, bin)
	start := time.Now()
	waitFor(t, 20*time.Second, "a lease once etcd is back", func() bool {
		r, _ := exchange(t, h, hw)
		return r != nil && r.MessageType() == dhcpv4.MessageTypeAck
	})
	t.Logf("first ACK %v after etcd came back", time.Since(start).Round(100*time.Millisecond))
	waitHealth(t, h.c, true)
}

// TestSameHostNameTwice: two running hosts with one name (the same
// leases.host, or the same router ID, on two machines) would both
// believe they own the same blocks. The second must not allocate from
// them and must say why; once the first is gone (a crash: its liveness
// lapses), the second takes the name and its blocks, as a restarted
// host does.
func TestSameHostNameTwice(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	first := startHost(t, endpoints(ms), "/twice/", "a", 2*time.Second, clk, quiet)
	r, x := exchange(t, first, net.HardwareAddr{0x52, 0x54, 0, 0, 5, 1})
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("lease on the first host: %v", reply(r))
	}
	second := startInstance(t, endpoints(ms), "/twice/", "a", "another machine", 2*time.Second, clk, quiet)
	t.Cleanup(func() { second.c.Close() })
	waitFor(t, 5*time.Second, "the second host to see the first's lease", func() bool { return len(second.n.Leases()) == 1 })
	if r, y := exchange(t, second, net.HardwareAddr{0x52, 0x54, 0, 0, 5, 2}); r != nil {
		t.Errorf("the second host named a served a new lease (%s; the first gave %s): %v", y, x, reply(r))
	}
	if b := second.n.Blocks(); len(b) != 0 {
		t.Errorf("the second host named a allocates from %v, the first's blocks", b)
	}
	waitFor(t, 5*time.Second, "the second host's health to name the clash", func() bool {
		return strings.Contains(second.c.Health().Error, "another")
	})
	t.Logf("health of the second: %s", second.c.Health().Error)
	first.c.Close() // as a crash: the liveness key lapses after its TTL
	start := time.Now()
	waitFor(t, 10*time.Second, "the second host to take the name", func() bool { return len(second.n.Blocks()) == 1 })
	t.Logf("the second host took the name and its block %v after %v", second.n.Blocks(), time.Since(start).Round(100*time.Millisecond))
	if r, y := exchange(t, second, net.HardwareAddr{0x52, 0x54, 0, 0, 5, 2}); r == nil || r.MessageType() != dhcpv4.MessageTypeAck || y == x {
		t.Errorf("lease on the second host once it holds the name: %s %v", y, reply(r))
	}
	if e := second.c.Health().Error; strings.Contains(e, "another") {
		t.Errorf("health still names a clash: %s", e)
	}
}

// TestRestartTakesItsOwnName: a host that comes back after a crash (same
// instance, kept by the daemon in its state folder) takes its liveness
// key over at once and allocates again without waiting for the TTL.
func TestRestartTakesItsOwnName(t *testing.T) {
	ms := startCluster(t, 1)
	clk := &fakeClock{t: time.Unix(2e9, 0)}
	open := func() *Client {
		c, err := Open(Config{Leases: model.Leases{Etcd: endpoints(ms), Prefix: "/again/", Block: 4, Host: "a"},
			TTL: 30 * time.Second, Now: clk.now, Log: quiet, Instance: "run-of-a"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	n := c.Network("s", testRanges)
	if err := n.Grow(); err != nil {
		t.Fatal(err)
	}
	c.Close() // as a crash: the key stays for its 30s TTL
	c = open()
	t.Cleanup(func() { c.Close() })
	n = c.Network("s", testRanges)
	start := time.Now()
	if err := n.Grow(); err != nil {
		t.Fatalf("Grow of the host that came back: %v", err)
	}
	if b := n.Blocks(); len(b) == 0 || b[0].From != testRanges[0].From {
		t.Errorf("the host that came back holds %v, want its block from %s", b, testRanges[0].From)
	}
	t.Logf("the host that came back holds its name and block after %v (TTL 30s)", time.Since(start).Round(10*time.Millisecond))
}
