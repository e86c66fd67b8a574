package dhcp

import (
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Serve reads requests from conn (a UDP socket on port 67 bound to the
// network's bridge) and answers each in its own goroutine, so that lease
// writes of concurrent clients share one disk sync. It returns when conn
// is closed.
func (h *Handler) Serve(conn net.PacketConn) error {
	sem := make(chan struct{}, 1024) // bounds work in flight under a flood
	done := make(chan struct{})
	defer close(done)
	go func() { // leases end by themselves: log them as they do
		t := time.NewTicker(ExpiryEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				h.LogExpired()
			}
		}
	}()
	for {
		buf := make([]byte, 1500)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			h.Stats.Ignored.Add(1)
			continue // malformed: drop it, never crash
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			if resp := h.Handle(req); resp != nil {
				conn.WriteTo(resp.ToBytes(), h.destination(req, resp))
			}
		}()
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
