package state

import (
	"maps"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// Intent is the state to record before the kernel writes that take a host
// from old to target begin (write-ahead): everything either side owns, so
// that whatever instant a kill -9 stops those writes at, the next apply or
// destroy knows every link, address, route and sysctl guestnet may have
// changed and can finish or undo it.
//
//   - Networks of either side count as applied; one on both sides takes the
//     target's definition (the one being made), with the ports, bindings and
//     floating addresses of both, and the uplink record of a bridge-mode
//     network from whichever side has one (the target's is the newer).
//   - ForwardingWas is "0" when either side turned ip_forward on, and
//     Forwarding6Was likewise for IPv6; AcceptRAWas holds the interfaces
//     either side raised (the old side's value first: it is the original).
//   - The ruleset mark is dropped: the rules may change under it, so the next
//     plan reads them back.
func Intent(old, target State) State {
	in := State{Networks: map[string]Net{}, ForwardingWas: target.ForwardingWas, Forwarding6Was: target.Forwarding6Was}
	if old.ForwardingWas == "0" {
		in.ForwardingWas = "0"
	}
	if old.Forwarding6Was == "0" {
		in.Forwarding6Was = "0"
	}
	for _, m := range []map[string]string{target.AcceptRAWas, old.AcceptRAWas} {
		for ifname, v := range m {
			if in.AcceptRAWas == nil {
				in.AcceptRAWas = map[string]string{}
			}
			in.AcceptRAWas[ifname] = v
		}
	}
	for name, n := range old.Networks {
		in.Networks[name] = n.Clone()
	}
	for name, t := range target.Networks {
		o, ok := in.Networks[name]
		if !ok {
			in.Networks[name] = t.Clone()
			continue
		}
		u := t.Clone()
		if u.Uplink == nil {
			u.Uplink = o.Uplink
		}
		u.Ports = union(o.Ports, u.Ports)
		u.Floats = union(o.Floats, u.Floats)
		for port, b := range o.Binds {
			if _, ok := u.Binds[port]; !ok {
				if u.Binds == nil {
					u.Binds = map[string]model.PortBind{}
				}
				u.Binds[port] = b
			}
		}
		in.Networks[name] = u
	}
	if len(in.Networks) == 0 {
		in.Networks = nil
	}
	return in
}

// union is a then the elements of b not in a.
func union[T comparable](a, b []T) []T {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Clone is a deep copy of the state.
func (s State) Clone() State {
	c := State{ForwardingWas: s.ForwardingWas, Forwarding6Was: s.Forwarding6Was, AcceptRAWas: maps.Clone(s.AcceptRAWas)}
	if s.Nft != nil {
		m := *s.Nft
		c.Nft = &m
	}
	if s.Networks != nil {
		c.Networks = make(map[string]Net, len(s.Networks))
		for name, n := range s.Networks {
			c.Networks[name] = n.Clone()
		}
	}
	return c
}

// Clone copies the network record deeply enough to change its ports,
// bindings, floating addresses and uplink record without touching n (the
// model.Network, which nothing changes in place, is shared).
func (n Net) Clone() Net {
	c := Net{Network: n.Network, Ports: slices.Clone(n.Ports), Floats: slices.Clone(n.Floats), Binds: maps.Clone(n.Binds)}
	if n.Uplink != nil {
		u := *n.Uplink
		u.Addrs, u.Brd, u.Routes = slices.Clone(u.Addrs), maps.Clone(u.Brd), slices.Clone(u.Routes)
		c.Uplink = &u
	}
	return c
}
