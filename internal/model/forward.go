package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PortForward is a declared forward of a network (spec form).
type PortForward struct {
	Proto    string         `json:"proto"` // tcp or udp
	PortFrom int            `json:"port_from"`
	PortTo   int            `json:"port_to"` // == PortFrom for one port
	To       netip.Addr     `json:"to"`
	ToPort   int            `json:"to_port,omitempty"` // 0: the same port
	From     []netip.Prefix `json:"from,omitempty"`    // sources allowed; none: any
	Listen   []netip.Addr   `json:"listen,omitempty"`  // host addresses; none: any of the host's
}

// Forward is one element of guestnet's forwards map: a source prefix, a
// listening prefix (0.0.0.0/0 for any local address), a protocol and port,
// and the guest address and port it goes to.
type Forward struct {
	Src    netip.Prefix `json:"src"`
	Dst    netip.Prefix `json:"dst"`
	Proto  string       `json:"proto"`
	Port   int          `json:"port"`
	To     netip.Addr   `json:"to"`
	ToPort int          `json:"to_port"`
}

var anyIPv4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)

// Elements expands a forward into map elements: one per source, listen
// address and port (a port range keeps each port).
func (f PortForward) Elements() []Forward {
	srcs := f.From
	if len(srcs) == 0 {
		srcs = []netip.Prefix{anyIPv4}
	}
	dsts := []netip.Prefix{anyIPv4}
	if len(f.Listen) > 0 {
		dsts = nil
		for _, a := range f.Listen {
			dsts = append(dsts, HostPrefix(a))
		}
	}
	var out []Forward
	for _, s := range srcs {
		for _, d := range dsts {
			for p := f.PortFrom; p <= f.PortTo; p++ {
				to := f.ToPort
				if to == 0 {
					to = p
				}
				out = append(out, Forward{Src: s.Masked(), Dst: d, Proto: f.Proto, Port: p, To: f.To, ToPort: to})
			}
		}
	}
	return out
}

// Key is what identifies an element in the map.
func (f Forward) Key() string { return fmt.Sprintf("%s . %s . %s . %d", f.Src, f.Dst, f.Proto, f.Port) }

func (f Forward) String() string { return fmt.Sprintf("%s : %s . %d", f.Key(), f.To, f.ToPort) }

// SortForwards puts forwards in map order.
func SortForwards(fs []Forward) {
	slices.SortFunc(fs, func(a, b Forward) int {
		return cmp.Or(a.Src.Addr().Compare(b.Src.Addr()), cmp.Compare(a.Src.Bits(), b.Src.Bits()),
			a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()),
			strings.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
}

// Floating is a public address that is a guest's, both ways: inbound to
// Public reaches Guest, and Guest's outbound leaves as Public.
type Floating struct {
	Public netip.Addr `json:"public"`
	Guest  netip.Addr `json:"guest"`
	Uplink string     `json:"uplink,omitempty"` // where the host answers ARP for Public; default: the link holding its subnet
}

// FloatingUplink is the link where the host answers for a public address:
// the one named, or the one whose connected subnet holds the address.
func (h Host) FloatingUplink(fl Floating) (string, bool) {
	if fl.Uplink != "" {
		_, ok := h.Link(fl.Uplink)
		return fl.Uplink, ok
	}
	for _, l := range h.Links {
		for _, p := range l.Addrs {
			if p.Bits() < 32 && p.Masked().Contains(fl.Public) && l.Owner() == "" {
				return l.Name, true
			}
		}
	}
	return "", false
}

// Exact reports whether a forward holds for any source and any local
// address: it goes in the hash map.
func (f Forward) Exact() bool { return f.Src.Bits() == 0 && f.Dst.Bits() == 0 }

// SplitForwards separates hash-map forwards from interval-map ones.
func SplitForwards(fs []Forward) (exact, ranged []Forward) {
	for _, f := range fs {
		if f.Exact() {
			exact = append(exact, f)
		} else {
			ranged = append(ranged, f)
		}
	}
	return exact, ranged
}
