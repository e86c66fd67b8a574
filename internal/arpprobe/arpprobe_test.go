package arpprobe

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// link is a bridge as the prober's packet socket sees it: every frame
// written is seen again (a packet socket sees outgoing frames), and each
// holder answers a request for its address with a reply, as a guest's
// kernel does (to a probe from 0.0.0.0, RFC 5227). It counts requests.
type link struct {
	mu       sync.Mutex
	holders  map[netip.Addr]net.HardwareAddr
	requests map[netip.Addr]int
	frames   chan []byte
	closed   bool
}

var _ net.PacketConn = (*link)(nil)

func newLink(holders map[netip.Addr]net.HardwareAddr) *link {
	return &link{holders: holders, requests: map[netip.Addr]int{}, frames: make(chan []byte, 64)}
}

func (l *link) ReadFrom(b []byte) (int, net.Addr, error) {
	f, ok := <-l.frames
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(b, f), nil, nil
}

func (l *link) WriteTo(b []byte, _ net.Addr) (int, error) {
	var f ethernet.Frame
	var p arp.Packet
	if err := f.UnmarshalBinary(b); err != nil {
		return 0, err
	}
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, net.ErrClosed
	}
	l.frames <- append([]byte(nil), b...)
	if p.Operation == arp.OperationRequest {
		l.requests[p.TargetIP]++
		if hw, ok := l.holders[p.TargetIP]; ok {
			l.send(arp.OperationReply, hw, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
		}
	}
	return len(b), nil
}

// send puts a frame from a guest on the link; the caller holds l.mu.
func (l *link) send(op arp.Operation, hw net.HardwareAddr, ip netip.Addr, toHW net.HardwareAddr, to netip.Addr) {
	r, _ := arp.NewPacket(op, hw, ip, toHW, to)
	pb, _ := r.MarshalBinary()
	fb, _ := (&ethernet.Frame{Destination: toHW, Source: hw, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	l.frames <- fb
}

func (l *link) count(a netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests[a]
}

func (l *link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.frames)
	}
	return nil
}

func (l *link) LocalAddr() net.Addr              { return nil }
func (l *link) SetDeadline(time.Time) error      { return nil }
func (l *link) SetReadDeadline(time.Time) error  { return nil }
func (l *link) SetWriteDeadline(time.Time) error { return nil }

var (
	bridgeMAC = net.HardwareAddr{0x02, 0x67, 0x6e, 0, 0, 1}
	guestMAC  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 7}
	held      = netip.MustParseAddr("10.99.0.100")
	free      = netip.MustParseAddr("10.99.0.101")
)

// newTestProber runs the production Prober over a link. arp.New wants an
// interface with an IPv4 address (it is not used: probes come from
// 0.0.0.0); loopback has one in every namespace.
func newTestProber(t *testing.T, l *link, wait time.Duration) *Prober {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no loopback interface: %v", err)
	}
	c, err := arp.New(lo, l)
	if err != nil {
		t.Fatal(err)
	}
	p := newProber(c, bridgeMAC, wait)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestProbeAnsweredAndSilent(t *testing.T) {
	l := newLink(map[netip.Addr]net.HardwareAddr{held: guestMAC})
	p := newTestProber(t, l, 20*time.Millisecond)
	if mac, err := p.Probe(held); err != nil || mac != guestMAC.String() {
		t.Errorf("probe of a held address: %q, %v; want %s", mac, err, guestMAC)
	}
	if mac, err := p.Probe(free); err != nil || mac != "" {
		t.Errorf("probe of a free address: %q, %v; want no answer", mac, err)
	}
	if n := l.count(free); n < 1 || n > 2 {
		t.Errorf("%d requests for a silent address, want 1 or 2 (one resent at half the wait)", n)
	}
	if _, err := p.Probe(netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("an IPv6 address was probed")
	}
}

// Concurrent probes of one address share one request, later ones read the
// cache, and a prefetched address is answered without another request.
func TestProbeJoinsCachesAndPrefetches(t *testing.T) {
	l := newLink(map[netip.Addr]net.HardwareAddr{held: guestMAC})
	p := newTestProber(t, l, time.Hour) // only an answer ends a probe of held
	var wg sync.WaitGroup
	macs := make([]string, 8)
	for i := range macs {
		wg.Add(1)
		go func() { defer wg.Done(); macs[i], _ = p.Probe(held) }()
	}
	wg.Wait()
	for i, m := range macs {
		if m != guestMAC.String() {
			t.Errorf("probe %d: %q", i, m)
		}
	}
	if n := l.count(held); n < 1 || n > len(macs) {
		t.Errorf("%d requests for %d concurrent probes", n, len(macs))
	}
	before := l.count(held)
	if m, _ := p.Probe(held); m != guestMAC.String() || l.count(held) != before {
		t.Errorf("a repeated probe sent a request (%d -> %d) or lost the answer (%q)", before, l.count(held), m)
	}

	other := netip.MustParseAddr("10.99.0.102")
	l.mu.Lock()
	l.holders[other] = guestMAC
	l.mu.Unlock()
	p.Prefetch([]netip.Addr{other})
	if m, _ := p.Probe(other); m != guestMAC.String() || l.count(other) != 1 {
		t.Errorf("after a prefetch: %q with %d requests, want the answer from one request", m, l.count(other))
	}
}

// A holder that announces its address (gratuitous ARP) while the probe
// waits is an answer too.
func TestProbeGratuitousARPCounts(t *testing.T) {
	l := newLink(map[netip.Addr]net.HardwareAddr{})
	p := newTestProber(t, l, time.Hour)
	done := make(chan string)
	go func() { m, _ := p.Probe(held); done <- m }()
	for l.count(held) == 0 {
		time.Sleep(time.Millisecond)
	}
	l.mu.Lock()
	l.send(arp.OperationRequest, guestMAC, held, ethernet.Broadcast, held)
	l.mu.Unlock()
	if m := <-done; m != guestMAC.String() {
		t.Errorf("probe: %q, want the announcer %s", m, guestMAC)
	}
}
