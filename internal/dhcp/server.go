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
	// WriteTo sends b to dst out of interface ifindex, from address from
	// (a broadcast to 255.255.255.255 leaves that interface only).
	WriteTo(b []byte, ifindex int, from netip.Addr, dst net.Addr) error
	Close() error
}

// NewConn gives c (a UDP socket on port 67) the interface of each request
// and the choice of interface for each reply: IP_PKTINFO, through
// golang.org/x/net/ipv4.
func NewConn(c net.PacketConn) (Conn, error) {
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		return nil, fmt.Errorf("ask for each DHCP request's interface (IP_PKTINFO): %w", err)
	}
	return pktinfoConn{p}, nil
}

type pktinfoConn struct{ p *ipv4.PacketConn }

func (c pktinfoConn) ReadFrom(b []byte) (int, int, net.Addr, error) {
	n, cm, src, err := c.p.ReadFrom(b)
	if cm == nil {
		return n, 0, src, err
	}
	return n, cm.IfIndex, src, err
}

func (c pktinfoConn) WriteTo(b []byte, ifindex int, from netip.Addr, dst net.Addr) error {
	cm := &ipv4.ControlMessage{IfIndex: ifindex}
	if from.IsValid() {
		cm.Src = from.AsSlice()
	}
	_, err := c.p.WriteTo(b, cm, dst)
	return err
}

func (c pktinfoConn) Close() error { return c.p.Close() }

// Mux answers the DHCP requests of every network from one socket: each
// request goes to the handler of the bridge it came in on. A request that
// came in on any other interface (the uplink, a bridge without DHCP) is
// never answered, only counted in Foreign. One socket, one reader and one
// expiry ticker serve any number of networks.
type Mux struct {
	// Foreign counts requests that came in on an interface with no DHCP
	// handler: ignored.
	Foreign atomic.Uint64

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
				conn.WriteTo(resp.ToBytes(), ifindex, h.Pool.cfg.Server.Addr(), h.destination(req, resp))
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

// destination is where a reply goes (RFC 2131 4.1): unicast to a client
// that already has its address, else broadcast on the bridge. Relayed
// messages never get here (Handle drops them), and a ciaddr outside the
// network's subnet is not trusted as an address: the reply is broadcast
// on the bridge, never routed off the link to whoever the guest named.
func (h *Handler) destination(req, resp *dhcpv4.DHCPv4) net.Addr {
	if resp.MessageType() != dhcpv4.MessageTypeNak && h.onLink(req.ClientIPAddr) {
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}
