package dhcp

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
)

// fakeConn is a Conn whose requests the test feeds, with the interface
// each came in on, and whose replies it records.
type fakeConn struct {
	in     chan fakeDatagram
	out    chan fakeReply
	closed chan struct{}
	fail   error // returned by every WriteTo, when set
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

func (c *fakeConn) WriteTo(b []byte, ifindex int, from netip.Addr, dst Dest) error {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		panic(err)
	}
	c.out <- fakeReply{m, ifindex, from, dst.String()}
	return c.fail
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
// only, from that network's server address (a new client's OFFER to its
// MAC); a request on any other
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
	if r.ifindex != 9 || r.from != addr("10.98.0.1") || r.dst != r.msg.YourIPAddr.String()+":68 at "+mac(1).String() || r.msg.MessageType() != dhcpv4.MessageTypeOffer || !netip.MustParsePrefix("10.98.0.0/24").Contains(addrOf(r.msg.YourIPAddr)) {
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
	c, err := NewConn(pc, nil)
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
	if err := c.WriteTo([]byte("reply"), lo.Index, addr("127.0.0.1"), Dest{Addr: src.(*net.UDPAddr).AddrPort()}); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost reply fails, never hangs
	n, from, err := client.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "reply" || from.String() != pc.LocalAddr().String() {
		t.Fatalf("client got %q from %v (%v), want reply from %s", buf[:n], from, err, pc.LocalAddr())
	}
}

// TestDestination: where each reply goes, by RFC 2131 4.1 (giaddr is
// always 0 here: relayed messages are dropped before).
func TestDestination(t *testing.T) {
	h := handlerFor("10.99.0.1/24", "10.99.0.100", "10.99.0.110")
	yi := dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 105))
	for _, c := range []struct {
		name      string
		req, resp []dhcpv4.Modifier
		want      string
	}{
		{"new client, broadcast bit clear: a frame to its MAC, to yiaddr",
			nil, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), yi}, "10.99.0.105:68 at 52:54:00:00:00:01"},
		{"ACK to a new client (INIT-REBOOT, SELECTING): its MAC too",
			nil, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), yi}, "10.99.0.105:68 at 52:54:00:00:00:01"},
		{"broadcast bit set: broadcast",
			[]dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), yi}, "255.255.255.255:68"},
		{"NAK: broadcast, whatever the client asked",
			nil, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeNak)}, "255.255.255.255:68"},
		{"NAK to a renewing client: broadcast",
			[]dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 104))}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeNak)}, "255.255.255.255:68"},
		{"renewal (ciaddr on the network): UDP to ciaddr",
			[]dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 104))}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), yi}, "10.99.0.104:68"},
		{"renewal with the broadcast bit: ciaddr first",
			[]dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 104)), dhcpv4.WithBroadcast(true)}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), yi}, "10.99.0.104:68"},
		{"ciaddr off the network: not trusted; the frame to the MAC",
			[]dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(203, 0, 113, 10))}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), yi}, "10.99.0.105:68 at 52:54:00:00:00:01"},
		{"chaddr a group address: broadcast",
			[]dhcpv4.Modifier{dhcpv4.WithHwAddr(net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1})}, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), yi}, "255.255.255.255:68"},
		{"yiaddr off the network: broadcast",
			nil, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), dhcpv4.WithYourIP(net.IPv4(203, 0, 113, 10))}, "255.255.255.255:68"},
		{"no yiaddr (ACK to an INFORM without ciaddr): broadcast",
			nil, []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, "255.255.255.255:68"},
	} {
		req := discover(t, mac(1), c.req...)
		resp, err := dhcpv4.NewReplyFromRequest(req, c.resp...)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.destination(req, resp).String(); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// fakeFrames records what a Conn sends through its FrameSender.
type fakeFrames struct {
	pkt     []byte
	ifindex int
	dst     net.HardwareAddr
	closed  bool
}

var _ FrameSender = (*fakeFrames)(nil)

func (f *fakeFrames) SendIPv4(pkt []byte, ifindex int, dst net.HardwareAddr) error {
	f.pkt, f.ifindex, f.dst = pkt, ifindex, dst
	return nil
}

func (f *fakeFrames) Close() error { f.closed = true; return nil }

// TestConnFrames: a reply to a MAC leaves through the FrameSender as one
// IPv4/UDP packet from the server's address, port 67, to yiaddr, port
// 68, on the request's interface; closing the Conn closes the sender.
func TestConnFrames(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFrames{}
	c, err := NewConn(pc, f)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("an OFFER")
	if err := c.WriteTo(msg, 7, addr("10.99.0.1"), Dest{Addr: netip.MustParseAddrPort("10.99.0.105:68"), MAC: mac(1)}); err != nil {
		t.Fatal(err)
	}
	if f.ifindex != 7 || f.dst.String() != mac(1).String() {
		t.Errorf("frame out of ifindex %d to %s, want 7 and %s", f.ifindex, f.dst, mac(1))
	}
	h, err := ipv4.ParseHeader(f.pkt)
	if err != nil {
		t.Fatalf("the packet's IPv4 header: %v (% x)", err, f.pkt)
	}
	if !h.Src.Equal(net.IPv4(10, 99, 0, 1)) || !h.Dst.Equal(net.IPv4(10, 99, 0, 105)) || h.Protocol != 17 || h.TotalLen != len(f.pkt) {
		t.Errorf("IPv4 header %v, want UDP 10.99.0.1 -> 10.99.0.105, total length %d", h, len(f.pkt))
	}
	u := f.pkt[h.Len:]
	if sp, dp := binary.BigEndian.Uint16(u[0:2]), binary.BigEndian.Uint16(u[2:4]); sp != 67 || dp != 68 || string(u[8:]) != string(msg) {
		t.Errorf("UDP %d -> %d carrying %q, want 67 -> 68 carrying %q", sp, dp, u[8:], msg)
	}
	c.Close()
	if !f.closed {
		t.Error("Close left the frame socket open")
	}
}

// TestUDPIPv4Checksums: both checksums of the packets the Conn sends to a
// MAC verify, checked here by the RFC 1071 rule written out again (the
// one's-complement sum over the covered bytes, checksum included, is
// 0xffff), for payloads of odd and even length. Real clients check them
// too: udhcpc and dhclient drop a reply whose checksums are wrong
// (e2e TestDHCPUnicastReplies).
func TestUDPIPv4Checksums(t *testing.T) {
	ones := func(parts ...[]byte) uint16 {
		var s uint64
		for _, b := range parts {
			for i := 0; i < len(b); i += 2 {
				w := uint64(b[i]) << 8
				if i+1 < len(b) {
					w |= uint64(b[i+1])
				}
				s += w
			}
		}
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		return uint16(s)
	}
	for _, payload := range [][]byte{[]byte("odd"), []byte("even"), make([]byte, 300)} {
		p := udpIPv4(addr("10.99.0.1"), addr("10.99.0.105"), 67, 68, payload)
		if got := ones(p[:20]); got != 0xffff {
			t.Errorf("IPv4 header checksum of a %d-byte payload does not verify: sum %#04x", len(payload), got)
		}
		u := p[20:]
		pseudo := []byte{10, 99, 0, 1, 10, 99, 0, 105, 0, 17, byte(len(u) >> 8), byte(len(u))}
		if got := ones(pseudo, u); got != 0xffff || binary.BigEndian.Uint16(u[6:8]) == 0 {
			t.Errorf("UDP checksum %#04x of a %d-byte payload does not verify: sum %#04x", binary.BigEndian.Uint16(u[6:8]), len(payload), got)
		}
	}
}

// TestMuxCountsSendErrors: a reply the kernel refuses is counted (and
// logged), and the mux goes on serving.
func TestMuxCountsSendErrors(t *testing.T) {
	h := handlerFor("10.99.0.1/24", "10.99.0.100", "10.99.0.110")
	m := &Mux{}
	m.Set(7, h)
	c := newFakeConn()
	c.fail = errors.New("no buffer space available")
	done := make(chan error)
	go func() { done <- m.Serve(c) }()
	c.send(t, 7, discover(t, mac(1)))
	c.reply()
	c.send(t, 7, discover(t, mac(2)))
	c.reply()
	c.Close()
	<-done
	// Each reply's goroutine counts its error after WriteTo returns: wait
	// for both (the test's own deadline ends a test where they never come).
	for m.SendErrors.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if got := m.SendErrors.Load(); got != 2 {
		t.Errorf("send errors counted: %d, want 2", got)
	}
}
