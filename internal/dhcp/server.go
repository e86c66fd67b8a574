package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv4"
)

// Conn is the one DHCP socket of a host: UDP port 67 on every interface.
// Each request says which interface it came in on, and each reply is sent
// out of the interface named, whatever the routing table says (dnsmasq
// serves all its interfaces from one socket the same way, with
// IP_PKTINFO).
type Conn interface {
	// ReadFrom reads a datagram and the index of the interface it came
	// in on (0 if the kernel did not say).
	ReadFrom(b []byte) (n, ifindex int, src net.Addr, err error)
	// WriteTo sends b, a reply from UDP port 67 of address from, to dst
	// out of interface ifindex (a broadcast to 255.255.255.255 leaves that
	// interface only).
	WriteTo(b []byte, ifindex int, from netip.Addr, dst Dest) error
	Close() error
}

// Dest is where a reply goes: UDP to Addr, in a frame to MAC when MAC is
// set.
type Dest struct {
	// Addr is port 68 of the client's ciaddr, of the yiaddr it is given,
	// or of 255.255.255.255.
	Addr netip.AddrPort
	// MAC, when set, is the client's chaddr: the reply is a unicast frame
	// to it, with Addr (yiaddr) as its destination, an address the client
	// does not hold yet (RFC 2131 4.1).
	MAC net.HardwareAddr
}

// broadcast is the destination of a reply to every client on the bridge.
var broadcast = Dest{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpv4.ClientPort)}

// clientAt is UDP port 68 of a.
func clientAt(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, dhcpv4.ClientPort) }

func (d Dest) String() string {
	s := d.Addr.String()
	if d.MAC != nil {
		s += " at " + d.MAC.String()
	}
	return s
}

// NewConn gives c (a UDP socket on port 67) the interface of each request
// and the choice of interface for each reply: IP_PKTINFO, through
// golang.org/x/net/ipv4. Replies to a MAC (Dest.MAC) leave through
// frames; with frames nil they are broadcast instead, as they were
// before guestnet unicast them. The Conn closes frames with c.
func NewConn(c net.PacketConn, frames FrameSender) (Conn, error) {
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		return nil, fmt.Errorf("ask for each DHCP request's interface (IP_PKTINFO): %w", err)
	}
	return pktinfoConn{p, frames}, nil
}

type pktinfoConn struct {
	p      *ipv4.PacketConn
	frames FrameSender // nil: replies to a MAC are broadcast
}

func (c pktinfoConn) ReadFrom(b []byte) (int, int, net.Addr, error) {
	n, cm, src, err := c.p.ReadFrom(b)
	if cm == nil {
		return n, 0, src, err
	}
	return n, cm.IfIndex, src, err
}

func (c pktinfoConn) WriteTo(b []byte, ifindex int, from netip.Addr, dst Dest) error {
	if dst.MAC != nil {
		if c.frames != nil && from.Is4() {
			pkt := udpIPv4(from, dst.Addr.Addr(), dhcpv4.ServerPort, dst.Addr.Port(), b)
			if err := c.frames.SendIPv4(pkt, ifindex, dst.MAC); err != nil {
				return fmt.Errorf("send to %s on ifindex %d: %w", dst, ifindex, err)
			}
			return nil
		}
		dst = broadcast
	}
	cm := &ipv4.ControlMessage{IfIndex: ifindex}
	if from.IsValid() {
		cm.Src = from.AsSlice()
	}
	if _, err := c.p.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst.Addr)); err != nil {
		return fmt.Errorf("send to %s on ifindex %d: %w", dst, ifindex, err)
	}
	return nil
}

func (c pktinfoConn) Close() error {
	err := c.p.Close()
	if c.frames != nil {
		err = errors.Join(err, c.frames.Close())
	}
	return err
}

// Mux answers the DHCP requests of every network from one socket: each
// request goes to the handler of the bridge it came in on. A request that
// came in on any other interface (the uplink, a bridge without DHCP) is
// never answered, only counted in Foreign. One socket, one reader and one
// expiry ticker serve any number of networks.
type Mux struct {
	// Foreign counts requests that came in on an interface with no DHCP
	// handler: ignored.
	Foreign atomic.Uint64
	// SendErrors counts replies the kernel refused (the bridge went away,
	// ENOBUFS under a burst): the client asks again.
	SendErrors atomic.Uint64
	sendWarn   warnLimit

	mu   sync.RWMutex
	nets map[int]*Handler           // interface index -> its network's handler
	busy map[*Handler]chan struct{} // each network's requests in flight
}

// InFlight bounds each network's requests being answered at once (a
// flood's work in flight). A request beyond it is dropped and counted as
// ignored, as a full socket buffer of its own would drop it: one
// network's flood never stalls the reader the other networks share.
const InFlight = 1024

// Set makes h answer the requests that come in on interface ifindex; a
// nil h stops answering there.
func (m *Mux) Set(ifindex int, h *Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nets == nil {
		m.nets, m.busy = map[int]*Handler{}, map[*Handler]chan struct{}{}
	}
	if old := m.nets[ifindex]; old != nil {
		delete(m.busy, old)
	}
	if h == nil {
		delete(m.nets, ifindex)
		return
	}
	m.nets[ifindex] = h
	m.busy[h] = make(chan struct{}, InFlight)
}

// Handler is the handler of interface ifindex, nil for none.
func (m *Mux) Handler(ifindex int) *Handler {
	h, _ := m.handler(ifindex)
	return h
}

func (m *Mux) handler(ifindex int) (*Handler, chan struct{}) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h := m.nets[ifindex]
	return h, m.busy[h]
}

func (m *Mux) handlers() []*Handler {
	m.mu.RLock()
	defer m.mu.RUnlock()
	hs := make([]*Handler, 0, len(m.nets))
	for _, h := range m.nets {
		hs = append(hs, h)
	}
	return hs
}

// Serve reads requests from conn and answers each in its own goroutine,
// so that lease writes of concurrent clients share one disk sync. It
// returns when conn is closed.
func (m *Mux) Serve(conn Conn) error {
	done := make(chan struct{})
	defer close(done)
	go m.logExpired(done)
	for {
		buf := make([]byte, 1500)
		n, ifindex, _, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		h, busy := m.handler(ifindex)
		if h == nil {
			m.Foreign.Add(1)
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			h.Stats.Ignored.Add(1)
			continue // malformed: drop it, never crash
		}
		select {
		case busy <- struct{}{}:
		default:
			h.Stats.Ignored.Add(1) // InFlight already
			continue
		}
		go func() {
			defer func() { <-busy }()
			if resp := h.Handle(req); resp != nil {
				err := conn.WriteTo(resp.ToBytes(), ifindex, h.Pool.cfg.Server.Addr(), h.destination(req, resp))
				if err != nil {
					m.sendFailed(h, resp, err)
				}
			}
		}()
	}
}

// logExpired logs the leases that end by themselves, as they do, on every
// network, until done closes.
func (m *Mux) logExpired(done <-chan struct{}) {
	t := time.NewTicker(ExpiryEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, h := range m.handlers() {
				h.LogExpired()
			}
		}
	}
}

// sendFailed counts a reply the kernel refused and logs it (at most once
// per ForeignLogEvery, with the count held back).
func (m *Mux) sendFailed(h *Handler, resp *dhcpv4.DHCPv4, err error) {
	m.SendErrors.Add(1)
	if n, ok := m.sendWarn.allow(h.now()); ok {
		h.Log.Warn("dhcp: reply not sent; the client will ask again", "type", resp.MessageType().String(),
			"mac", resp.ClientHWAddr.String(), "err", err, "failed_since_last_warning", n)
	}
}

// destination is where a reply goes (RFC 2131 4.1, with giaddr always 0:
// Handle drops relayed messages):
//   - a NAK is broadcast;
//   - a client that has its address (ciaddr on the network) gets a UDP
//     datagram to it;
//   - a client that set the broadcast bit gets a broadcast;
//   - any other gets a frame to its chaddr with its yiaddr as destination:
//     one copy to its bridge port, where a broadcast is copied to every
//     port (at 64 ports and 1,000 new clients a second, those copies made
//     in the daemon's sendto were what held its replies back:
//     bench/dhcp-results.md).
//
// A ciaddr outside the network's subnet is not trusted as an address (the
// reply would be routed off the link, to whoever the guest named), nor is
// a yiaddr outside it; a chaddr that is not one Ethernet station's (a
// group address) gets the broadcast it would amount to anyway.
func (h *Handler) destination(req, resp *dhcpv4.DHCPv4) Dest {
	switch {
	case resp.MessageType() == dhcpv4.MessageTypeNak:
		return broadcast
	case h.onLink(req.ClientIPAddr):
		return Dest{Addr: clientAt(addrOf(req.ClientIPAddr))}
	case req.IsBroadcast():
		return broadcast
	case req.HWType == iana.HWTypeEthernet && len(req.ClientHWAddr) == 6 && req.ClientHWAddr[0]&1 == 0 && h.onLink(resp.YourIPAddr):
		return Dest{Addr: clientAt(addrOf(resp.YourIPAddr)), MAC: req.ClientHWAddr}
	}
	return broadcast
}
