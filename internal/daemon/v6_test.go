package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/dhcp6"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/ra"
)

const v6Spec = `networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
    dhcp6:
      range: [fd42:99::100-fd42:99::1ff]
      lease: 1h
    dns: {domain: lab.internal}
`

// raSent is an RA a fake socket sent.
type raSent struct {
	bridge string
	ra     *ndp.RouterAdvertisement
	dst    netip.Addr
}

// fakeSockets6 hands out sockets that record what they send: one ICMPv6
// socket per bridge, and the DHCPv6 socket, fed by the test.
type fakeSockets6 struct {
	ras  chan raSent
	dhcp *fakeConn6
}

var _ Sockets6 = (*fakeSockets6)(nil)

func (f *fakeSockets6) RA(bridge string) (ra.Conn, net.HardwareAddr, error) {
	return &fakeRAConn{bridge: bridge, out: f.ras, closed: make(chan struct{})}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil
}
func (f *fakeSockets6) LinkLocal(int) (netip.Addr, error)      { return netip.MustParseAddr("fe80::1"), nil }
func (f *fakeSockets6) DHCP6() (dhcp6.Conn, error)             { return f.dhcp, nil }
func (f *fakeSockets6) NeighbourMAC(string, netip.Addr) string { return "" }

type fakeRAConn struct {
	bridge string
	out    chan raSent
	closed chan struct{}
	once   sync.Once
}

func (c *fakeRAConn) ReadRaw([]byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	<-c.closed
	return 0, nil, netip.Addr{}, net.ErrClosed
}
func (c *fakeRAConn) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	c.out <- raSent{c.bridge, m.(*ndp.RouterAdvertisement), dst}
	return nil
}
func (c *fakeRAConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

type msg6 struct {
	ifindex int
	b       []byte
}

// fakeConn6 is the DHCPv6 socket: in carries clients' messages, out the
// answers.
type fakeConn6 struct {
	in     chan msg6
	out    chan []byte
	joined chan int
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	from []netip.Addr // each answer's source address
}

func (c *fakeConn6) ReadFrom(b []byte) (int, int, netip.AddrPort, error) {
	select {
	case m := <-c.in:
		return copy(b, m.b), m.ifindex, netip.MustParseAddrPort("[fe80::42]:546"), nil
	case <-c.closed:
		return 0, 0, netip.AddrPort{}, net.ErrClosed
	}
}
func (c *fakeConn6) WriteTo(b []byte, _ int, src netip.Addr, _ netip.AddrPort) error {
	c.mu.Lock()
	c.from = append(c.from, src)
	c.mu.Unlock()
	c.out <- append([]byte(nil), b...)
	return nil
}
func (c *fakeConn6) Join(ifindex int) error { c.joined <- ifindex; return nil }
func (c *fakeConn6) Close() error           { c.once.Do(func() { close(c.closed) }); return nil }

// TestRADHCP6Service runs the daemon's "ra + dhcp6" service over fake
// sockets: the network's RA goes out at once, a DHCPv6 Request gets its
// Reply with the lease on disk and in `guestnet leases`, the service shows
// in status, and a reload that removes the network sends the final RA
// (router lifetime 0).
func TestRADHCP6Service(t *testing.T) {
	k := &fake.Kernel{Host: fake.BaseHost(vm0)}
	config := filepath.Join(t.TempDir(), "guestnet.yaml")
	r := &rig{t: t, k: k, config: config}
	r.write(v6Spec)
	s6 := &fakeSockets6{ras: make(chan raSent, 100), dhcp: &fakeConn6{in: make(chan msg6), out: make(chan []byte, 10),
		joined: make(chan int, 10), closed: make(chan struct{})}}
	r.d = &Daemon{Engine: engine.New(k, filepath.Join(t.TempDir(), "state.json")), Config: []string{config},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: &events{watched: make(chan struct{})},
		Sockets: loopSockets{}, Sockets6: s6}
	var bound []dhcp.Lease6
	var mu sync.Mutex
	r.d.Guard6 = binder6(func(network string, l dhcp.Lease6) { mu.Lock(); bound = append(bound, l); mu.Unlock() })
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- r.d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	}
	defer func() { cancel(); <-done }()

	first := nextRA(t, s6.ras)
	if first.bridge != "gnat0" || first.dst != ra.AllNodes || first.ra.RouterLifetime != 30*time.Minute || !first.ra.ManagedConfiguration {
		t.Errorf("first RA: %s to %v, lifetime %v, M %v; want gnat0, all nodes, 30m, M", first.bridge, first.dst, first.ra.RouterLifetime, first.ra.ManagedConfiguration)
	}
	if st := r.status(); !strings.Contains(st, "ra + dhcp6=running \n") {
		t.Errorf("status:\n%s", st)
	}

	cid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x42}}
	req := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest, TransactionID: dhcpv6.TransactionID{7}}
	req.AddOption(dhcpv6.OptClientID(cid))
	req.AddOption(dhcpv6.OptServerID(dhcp6.ServerDUID("default")))
	req.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}})
	// The client's message comes in on the bridge the socket joined.
	s6.dhcp.in <- msg6{<-s6.dhcp.joined, req.ToBytes()}
	var rep *dhcpv6.Message
	select {
	case b := <-s6.dhcp.out:
		var err error
		if rep, err = dhcpv6.MessageFromBytes(b); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Reply")
	}
	addrs := rep.Options.OneIANA().Options.Addresses()
	if rep.Type() != dhcpv6.MessageTypeReply || len(addrs) != 1 {
		t.Fatalf("Request: %s", rep.Summary())
	}
	got, _ := netip.AddrFromSlice(addrs[0].IPv6Addr)
	// The Reply leaves from the bridge's link-local address (RFC 8415
	// §18.3; the fake's is fe80::1), not whatever the kernel would pick
	// while that address is tentative (the bridge's global one).
	s6.dhcp.mu.Lock()
	if len(s6.dhcp.from) != 1 || s6.dhcp.from[0] != netip.MustParseAddr("fe80::1") {
		t.Errorf("the Reply left from %v, want the bridge's link-local fe80::1", s6.dhcp.from)
	}
	s6.dhcp.mu.Unlock()
	stored, err := r.d.store.Load6("default")
	if err != nil || len(stored) != 1 || stored[0].IP != got {
		t.Errorf("store after the Reply: %v %v, want %v", stored, err, got)
	}
	if ls := r.d.leases(""); len(ls) != 1 || ls[0].IP != got.String() || ls[0].DUID == "" || ls[0].MAC != "02:00:00:00:00:42" {
		t.Errorf("guestnet leases: %+v, want the DHCPv6 lease with its DUID and MAC", ls)
	}
	mu.Lock()
	if len(bound) != 1 || bound[0].IP != got {
		t.Errorf("Guard6 told %v, want the lease of %v", bound, got)
	}
	mu.Unlock()
	r.d.mu.Lock()
	if l6 := r.d.Leases6()["default"]; len(l6) != 1 {
		t.Errorf("Leases6: %v", l6)
	}
	r.d.mu.Unlock()

	// The network goes: its last RA says router lifetime 0.
	r.write("networks:\n  other:\n    mode: nat\n    bridge: gnat1\n    ipv4: 10.98.0.1/24\n")
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for {
		s := nextRA(t, s6.ras)
		if s.ra.RouterLifetime == 0 {
			if s.bridge != "gnat0" || s.dst != ra.AllNodes {
				t.Errorf("final RA on %s to %v", s.bridge, s.dst)
			}
			break
		}
	}
	if st := r.status(); strings.Contains(st, "ra + dhcp6") {
		t.Errorf("status still shows the service with no IPv6 network:\n%s", st)
	}
}

func nextRA(t *testing.T, c chan raSent) raSent {
	t.Helper()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no RA")
		return raSent{}
	}
}

type binder6 func(string, dhcp.Lease6)

func (b binder6) Bound6(n string, l dhcp.Lease6) { b(n, l) }
func (binder6) Unbound6(string, dhcp.Lease6)     {}
