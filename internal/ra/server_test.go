package ra

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/guestnet/guestnet/internal/model"
)

type packet struct {
	b   []byte
	hop int
	src netip.Addr
}

type sent struct {
	ra  *ndp.RouterAdvertisement
	dst netip.Addr
}

// fakeConn is a bridge's socket: the test feeds it packets and reads what
// the advertiser sends.
type fakeConn struct {
	in     chan packet
	out    chan sent
	closed chan struct{}
	once   sync.Once
}

var _ Conn = (*fakeConn)(nil)

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan packet), out: make(chan sent, 1000), closed: make(chan struct{})}
}

func (c *fakeConn) ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), &ipv6.ControlMessage{HopLimit: p.hop}, p.src, nil
	case <-c.closed:
		return 0, nil, netip.Addr{}, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	c.out <- sent{m.(*ndp.RouterAdvertisement), dst}
	return nil
}

func (c *fakeConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

func (c *fakeConn) next(t *testing.T) sent {
	t.Helper()
	select {
	case s := <-c.out:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no RA sent")
		return sent{}
	}
}

func testRA() model.RA {
	n := model.Network{Name: "lab", Mode: model.Routed, Bridge: "gn-lab", IPv6: netip.MustParsePrefix("fd42:1::1/64")}
	r, _ := n.RA()
	return r
}

// TestAdvertiser: the first RA goes at once to all nodes; a solicitation
// from a link-local address is answered to that address alone; a
// malformed one is dropped and the service goes on; a flood of
// solicitations costs at most UnicastPerSecond unicast answers and one
// multicast RA; Stop sends the final RA with router lifetime 0.
func TestAdvertiser(t *testing.T) {
	c := newFakeConn()
	opened := make(chan struct{}, 10)
	tries := 0
	open := func() (Conn, net.HardwareAddr, error) {
		opened <- struct{}{}
		if tries++; tries == 1 {
			return nil, nil, ErrNotReady // the link-local address is tentative at first
		}
		return c, mac, nil
	}
	// A clock that stands still: every solicitation falls in one second
	// and within MinDelayBetweenRAs of the first multicast RA.
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	a := start(testRA(), open, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })

	first := c.next(t)
	if first.dst != AllNodes || first.ra.RouterLifetime != model.RouterLifetime {
		t.Fatalf("first RA to %v with router lifetime %v; want all nodes, %v", first.dst, first.ra.RouterLifetime, model.RouterLifetime)
	}
	if tries != 2 {
		t.Errorf("opened %d times, want 2 (once not ready, then ready)", tries)
	}

	guest := netip.MustParseAddr("fe80::42")
	c.in <- packet{rsBytes(t), 255, guest}
	if s := c.next(t); s.dst != guest {
		t.Errorf("answer to an RS from %v went to %v", guest, s.dst)
	}

	// Malformed: a truncated RS, an RS that was forwarded, garbage.
	for _, p := range []packet{{[]byte{133, 0}, 255, guest}, {rsBytes(t), 64, guest}, {[]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, 255, guest}} {
		c.in <- p
	}
	c.in <- packet{rsBytes(t), 255, guest}
	if s := c.next(t); s.dst != guest {
		t.Errorf("after malformed packets, the answer went to %v (the service must go on)", s.dst)
	}

	// A flood: 200 RS from distinct sources within one (frozen) second.
	for i := range 200 {
		c.in <- packet{rsBytes(t), 255, netip.AddrFrom16([16]byte{0xfe, 0x80, 15: byte(i)})}
	}
	// The unicast budget is spent: the rest share one multicast RA, sent
	// once MinDelayBetweenRAs (real time) has passed since the first.
	var unicast, multicast, final int
	for multicast == 0 {
		s := c.next(t)
		if s.dst == AllNodes {
			multicast++
		} else {
			unicast++
		}
	}
	a.Stop()
	for len(c.out) > 0 {
		s := <-c.out
		switch {
		case s.ra.RouterLifetime == 0:
			final++
		case s.dst == AllNodes:
			multicast++
		default:
			unicast++
		}
	}
	if unicast != UnicastPerSecond-2 { // two were spent above
		t.Errorf("%d unicast answers to a flood of 200 in one second, want %d", unicast, UnicastPerSecond-2)
	}
	if multicast != 1 {
		t.Errorf("%d multicast RAs for the flood, want 1 (MinDelayBetweenRAs)", multicast)
	}
	if final != 1 {
		t.Errorf("%d final RAs (router lifetime 0), want 1", final)
	}
	t.Logf("flood of 200 RS: %d unicast answers, %d multicast, then %d final RA", unicast, multicast, final)
}
