package dhcp6

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"golang.org/x/net/ipv6"
)

// AllServers is the multicast group clients send to (RFC 8415 §7.1,
// All_DHCP_Relay_Agents_and_Servers).
var AllServers = netip.MustParseAddr("ff02::1:2")

// Ports of RFC 8415 §7.2.
const (
	ServerPort = 547
	ClientPort = 546
)

// Conn is the host's DHCPv6 socket: every bridge's messages, each with the
// interface it came in on.
type Conn interface {
	ReadFrom(b []byte) (n, ifindex int, src netip.AddrPort, err error)
	// WriteTo sends b out of interface ifindex from src (the bridge's
	// link-local address) to dst (the client's).
	WriteTo(b []byte, ifindex int, src netip.Addr, dst netip.AddrPort) error
	// Join joins AllServers on interface ifindex (a bridge that serves).
	Join(ifindex int) error
	Close() error
}

// udpConn is Conn over a UDP socket with IPV6_RECVPKTINFO.
type udpConn struct{ p *ipv6.PacketConn }

// NewConn wraps a UDP socket listening on [::]:547 (opened inside the
// served namespace).
func NewConn(pc net.PacketConn) (Conn, error) {
	p := ipv6.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		return nil, fmt.Errorf("dhcp6: ask for packet info: %w", err)
	}
	return udpConn{p}, nil
}

func (c udpConn) ReadFrom(b []byte) (int, int, netip.AddrPort, error) {
	n, cm, src, err := c.p.ReadFrom(b)
	if err != nil {
		return 0, 0, netip.AddrPort{}, err
	}
	u, ok := src.(*net.UDPAddr)
	if !ok || cm == nil {
		return n, 0, netip.AddrPort{}, nil
	}
	return n, cm.IfIndex, u.AddrPort(), nil
}

func (c udpConn) WriteTo(b []byte, ifindex int, src netip.Addr, dst netip.AddrPort) error {
	cm := &ipv6.ControlMessage{IfIndex: ifindex}
	if src.IsValid() {
		cm.Src = src.AsSlice()
	}
	_, err := c.p.WriteTo(b, cm,
		&net.UDPAddr{IP: dst.Addr().AsSlice(), Port: int(dst.Port()), Zone: fmt.Sprint(ifindex)})
	return err
}

func (c udpConn) Join(ifindex int) error {
	err := c.p.JoinGroup(&net.Interface{Index: ifindex}, &net.UDPAddr{IP: AllServers.AsSlice()})
	if err != nil && !errors.Is(err, errAddrInUse) {
		return fmt.Errorf("join %v on interface %d: %w", AllServers, ifindex, err)
	}
	return nil
}

func (c udpConn) Close() error { return c.p.Close() }

// Mux sends each message to the handler of the bridge it came in on.
type Mux struct {
	Log *slog.Logger
	// Source is the bridge's link-local address, the answers' source
	// (RFC 8415 §18.3: the client answers to it). An error (the address
	// is missing or still tentative: the kernel would pick another)
	// leaves the message unanswered; the client sends it again.
	Source func(ifindex int) (netip.Addr, error)

	mu       sync.RWMutex
	handlers map[int]*Handler
}

// Set serves h on interface ifindex; nil stops serving it.
func (m *Mux) Set(ifindex int, h *Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handlers == nil {
		m.handlers = map[int]*Handler{}
	}
	if h == nil {
		delete(m.handlers, ifindex)
		return
	}
	m.handlers[ifindex] = h
}

func (m *Mux) handler(ifindex int) *Handler {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.handlers[ifindex]
}

// MaxInFlight bounds the messages handled at once (each may wait on the
// lease store's sync); past it the reader waits, and the socket's buffer
// holds what comes meanwhile.
const MaxInFlight = 64

// Serve answers c's messages until c is closed. A message that does not
// parse, comes from a relay (none is supported: guests are on the link)
// or from an interface no handler serves, is dropped.
func (m *Mux) Serve(c Conn) error {
	sem := make(chan struct{}, MaxInFlight)
	for {
		b := make([]byte, 1500)
		n, ifindex, src, err := c.ReadFrom(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		h := m.handler(ifindex)
		if h == nil || !src.IsValid() {
			continue
		}
		var from netip.Addr
		if m.Source != nil {
			if from, err = m.Source(ifindex); err != nil {
				if m.Log != nil {
					m.Log.Debug("dhcp6: not answered", "from", src, "err", err)
				}
				continue
			}
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			rep := Answer(h, b[:n], src.Addr())
			if rep == nil {
				return
			}
			if err := c.WriteTo(rep, ifindex, from, src); err != nil && m.Log != nil {
				m.Log.Warn("dhcp6: send", "to", src, "err", err)
			}
		}()
	}
}

// Answer parses a client's message and returns the answer's bytes, nil
// for none. A guest controls every byte of b: whatever it holds, Answer
// returns, never panics.
func Answer(h *Handler, b []byte, src netip.Addr) []byte {
	d, err := dhcpv6.FromBytes(b)
	if err != nil {
		h.Stats.Dropped.Add(1)
		return nil
	}
	msg, ok := d.(*dhcpv6.Message)
	if !ok {
		h.Stats.Dropped.Add(1)
		return nil
	}
	rep := h.Handle(msg, src)
	if rep == nil {
		return nil
	}
	return rep.ToBytes()
}
