package dhcp

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeConn is a Conn whose requests the test feeds, with the interface
// each came in on, and whose replies it records.
type fakeConn struct {
	in     chan fakeDatagram
	out    chan fakeReply
	closed chan struct{}
}

type fakeDatagram struct {
	b       []byte
	ifindex int
}

type fakeReply struct {
	msg     *dhcpv4.DHCPv4
	ifindex int
	from    netip.Addr
	dst     string
}

var _ Conn = (*fakeConn)(nil)

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan fakeDatagram), out: make(chan fakeReply, 16), closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.b), d.ifindex, &net.UDPAddr{Port: 68}, nil
	case <-c.closed:
		return 0, 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, ifindex int, from netip.Addr, dst net.Addr) error {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		panic(err)
	}
	c.out <- fakeReply{m, ifindex, from, dst.String()}
	return nil
}

func (c *fakeConn) Close() error { close(c.closed); return nil }

func (c *fakeConn) send(t *testing.T, ifindex int, m *dhcpv4.DHCPv4) {
	t.Helper()
	c.in <- fakeDatagram{m.ToBytes(), ifindex}
}

// reply waits for the next reply the mux sends (the test's own deadline
// ends a test where none comes).
func (c *fakeConn) reply() fakeReply { return <-c.out }

func handlerFor(server, from, to string) *Handler {
	cfg := testConfig()
	cfg.Server = netip.MustParsePrefix(server)
	cfg.Ranges[0].From, cfg.Ranges[0].To = addr(from), addr(to)
	cfg.Hosts = nil
	return &Handler{Pool: NewPool(cfg, time.Now, nil), Store: &memStore{leases: map[netip.Addr]Lease{}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestMuxRoutesByInterface: one socket serves two networks; a request is
// answered by the network of the bridge it came in on, out of that bridge
// only, from that network's server address; a request on any other
// interface is never answered, only counted.
func TestMuxRoutesByInterface(t *testing.T) {
	a := handlerFor("10.99.0.1/24", "10.99.0.100", "10.99.0.110")
	b := handlerFor("10.98.0.1/24", "10.98.0.100", "10.98.0.110")
	m := &Mux{}
	m.Set(7, a)
	m.Set(9, b)
	c := newFakeConn()
	done := make(chan error)
	go func() { done <- m.Serve(c) }()

	c.send(t, 9, discover(t, mac(1)))
	r := c.reply()
	if r.ifindex != 9 || r.from != addr("10.98.0.1") || r.dst != "255.255.255.255:68" || r.msg.MessageType() != dhcpv4.MessageTypeOffer || !netip.MustParsePrefix("10.98.0.0/24").Contains(addrOf(r.msg.YourIPAddr)) {
		t.Errorf("DISCOVER on ifindex 9: %d from %s to %s: %s %s", r.ifindex, r.from, r.dst, r.msg.MessageType(), r.msg.YourIPAddr)
	}

	// On an interface without DHCP (the uplink): no answer. The requests
	// are read in order, so once the next one is answered, it was seen.
	c.send(t, 3, discover(t, mac(2)))
	c.in <- fakeDatagram{[]byte("not dhcp"), 7}
	c.send(t, 7, discover(t, mac(3)))
	r = c.reply()
	if r.ifindex != 7 || r.from != addr("10.99.0.1") || r.msg.ClientHWAddr.String() != mac(3).String() || !netip.MustParsePrefix("10.99.0.0/24").Contains(addrOf(r.msg.YourIPAddr)) {
		t.Errorf("DISCOVER on ifindex 7: %d from %s: %s for %s", r.ifindex, r.from, r.msg.YourIPAddr, r.msg.ClientHWAddr)
	}
	if got := m.Foreign.Load(); got != 1 {
		t.Errorf("requests on an interface without DHCP: counted %d, want 1", got)
	}
	if got := a.Stats.Ignored.Load(); got != 1 {
		t.Errorf("malformed request on ifindex 7: counted %d ignored, want 1", got)
	}
	if got := a.Stats.Discover.Load() + b.Stats.Discover.Load(); got != 2 {
		t.Errorf("DISCOVERs handled: %d, want 2 (the uplink's is not)", got)
	}

	// A renewal from a client with its address is unicast, out of its
	// bridge.
	ip := addrOf(r.msg.YourIPAddr)
	req, err := dhcpv4.NewRequestFromOffer(r.msg)
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, 7, req)
	if r = c.reply(); r.msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST: %s", r.msg.MessageType())
	}
	renew, err := dhcpv4.New(dhcpv4.WithHwAddr(mac(3)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, 7, renew)
	if r = c.reply(); r.ifindex != 7 || r.dst != ip.String()+":68" || r.msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal: %s on ifindex %d to %s, want ACK unicast to %s:68 on 7", r.msg.MessageType(), r.ifindex, r.dst, ip)
	}

	// A network that stops is no longer answered: its bridge is foreign.
	m.Set(7, nil)
	c.send(t, 7, discover(t, mac(4)))
	c.send(t, 9, discover(t, mac(5)))
	if r = c.reply(); r.ifindex != 9 || m.Foreign.Load() != 2 {
		t.Errorf("after Set(7, nil): reply on %d, %d foreign requests, want 9 and 2", r.ifindex, m.Foreign.Load())
	}

	c.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}

// TestConnInterface: the real socket (IP_PKTINFO, on loopback, no root)
// says which interface a datagram came in on and sends out of the one
// named, from the address named.
func TestConnInterface(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no loopback interface: %v", err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(pc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.WriteTo([]byte("request"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, ifindex, src, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "request" || ifindex != lo.Index {
		t.Fatalf("ReadFrom: %q from %v on ifindex %d (%v), want ifindex %d (lo)", buf[:n], src, ifindex, err, lo.Index)
	}
	if err := c.WriteTo([]byte("reply"), lo.Index, addr("127.0.0.1"), src); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost reply fails, never hangs
	n, from, err := client.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "reply" || from.String() != pc.LocalAddr().String() {
		t.Fatalf("client got %q from %v (%v), want reply from %s", buf[:n], from, err, pc.LocalAddr())
	}
}
