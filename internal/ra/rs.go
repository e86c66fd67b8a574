package ra

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Solicitation is a router solicitation that passed RFC 4861 §6.1.1.
type Solicitation struct {
	// From is the soliciting guest's address; the unspecified address
	// (a guest with no address yet) is answered by multicast.
	From netip.Addr
}

// Unicast reports whether the answer may go to the guest alone.
func (s Solicitation) Unicast() bool { return s.From.IsValid() && !s.From.IsUnspecified() }

// ErrInvalid is a message that is not a valid router solicitation; the
// service drops it and goes on.
var ErrInvalid = errors.New("not a valid router solicitation")

// ParseRS checks an ICMPv6 message (b, from the raw socket: the ICMPv6
// header on) as RFC 4861 §6.1.1 asks of a router: a hop limit of 255 (so
// it was not forwarded), code 0, a well-formed body and options, and no
// source link-layer option from the unspecified address. A guest controls
// every byte of b: whatever it holds, ParseRS returns, never panics.
// hopLimit is the IPv6 hop limit of the packet, -1 when unknown.
func ParseRS(b []byte, hopLimit int, src netip.Addr) (Solicitation, error) {
	if hopLimit != -1 && hopLimit != 255 {
		return Solicitation{}, fmt.Errorf("%w: hop limit %d, not 255", ErrInvalid, hopLimit)
	}
	if len(b) < 8 || b[0] != byte(ipv6.ICMPTypeRouterSolicitation) {
		return Solicitation{}, fmt.Errorf("%w: %d bytes of ICMPv6 type %d", ErrInvalid, len(b), firstByte(b))
	}
	if b[1] != 0 {
		return Solicitation{}, fmt.Errorf("%w: code %d", ErrInvalid, b[1])
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return Solicitation{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rs, ok := m.(*ndp.RouterSolicitation)
	if !ok {
		return Solicitation{}, fmt.Errorf("%w: %T", ErrInvalid, m)
	}
	src = src.WithZone("")
	if src.IsValid() && !src.Is6() {
		return Solicitation{}, fmt.Errorf("%w: source %v", ErrInvalid, src)
	}
	if !src.IsValid() || src.IsUnspecified() {
		for _, o := range rs.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Source {
				return Solicitation{}, fmt.Errorf("%w: source link-layer address from the unspecified address", ErrInvalid)
			}
		}
		return Solicitation{From: netip.IPv6Unspecified()}, nil
	}
	return Solicitation{From: src}, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
