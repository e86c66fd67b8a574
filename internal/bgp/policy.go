package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// Policy is what a learned path is checked against before it is
// installed (Importable).
type Policy struct {
	// Import are the prefixes a learned one must lie inside (the spec's
	// import:, model.DefaultImport when not written).
	Import []netip.Prefix
	// Protect are this host's networks (Speaker.Protect): a learned
	// prefix equal to or inside one is never installed.
	Protect []netip.Prefix
	// Own are this host's addresses the routes do not show (listen
	// addresses, router ID, the local end of each session): never a next
	// hop.
	Own []netip.Addr
}

// neverRouted are the special-purpose ranges (RFC 6890) a learned
// prefix may not be equal to or inside, even with import: [0.0.0.0/0]:
// no peer is the way there. A route for link-local would take a cloud's
// metadata address (169.254.169.254) to the peer; one for multicast, the
// host's own multicast sends (VRRP, mDNS).
var neverRouted = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved, and the limited broadcast"},
	// IPv6 (RFC 4291): a route for link-local or multicast would take the
	// host's neighbour discovery, router solicitations and MLD to the
	// peer; a v4-mapped prefix is no destination on the wire.
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped"},
	{model.LinkLocal, "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// connected reports whether r is a connected subnet: the kernel's route
// for an address's subnet (protocol kernel, no gateway; scope link for
// IPv4, where IPv6 says universe). IPv6's fe80::/64 of every interface is
// left out: a link-local next hop is reached through its session's
// interface instead (see importable).
func connected(r model.Route) bool {
	if r.Proto != model.ProtoKernel || r.Gw.IsValid() || !r.Dst.IsValid() {
		return false
	}
	if r.Dst.Addr().Is4() {
		return r.Scope == 253
	}
	return r.Dst.Bits() > 0 && !r.Dst.Addr().Is4In6() && !within(r.Dst, model.LinkLocal)
}

// within reports whether p is equal to or inside outer.
func within(p, outer netip.Prefix) bool {
	return outer.Bits() <= p.Bits() && outer.Contains(p.Addr())
}

// Importable decides whether a best path for dst through next hop nh may
// be installed in a kernel whose main table is routes: dev is the link of
// the connected subnet that holds nh; when it may not, dev is "" and why
// says why, for a person (doctor prints it), and refused tells a refusal
// on purpose (the prefix is not to be installed here: Learned.Refused)
// from a route that should be installed and cannot be (its next hop
// unreachable or this host, someone else's route in the way). The rules,
// for both families: dst lies inside one of pol.Import (a default route
// only when 0.0.0.0/0 or ::/0 is listed) and in none of the
// special-purpose ranges (neverRouted); it is neither equal to nor inside
// this host's networks (pol.Protect) or connected subnets; nh is of dst's
// family and directly reachable (inside a connected subnet), neither this
// host's own address nor a guest's (inside pol.Protect) nor the network
// or broadcast address of its subnet (for IPv6, the Subnet-Router anycast
// address); and no route of someone else (not protocol bgp) has the same
// destination and metric, since installing would replace it. (An IPv6
// path's link-local next hop, which Importable does not take, is in
// importable.)
func Importable(dst netip.Prefix, nh netip.Addr, pol Policy, routes []model.Route) (dev, why string, refused bool) {
	_, dev, why, refused = importable(candidate{Prefix: dst, NextHop: nh}, pol, indexRoutes(routes))
	return dev, why, refused
}

// routeIndex is a main table as Importable reads it, made once per
// install pass: a peer that announces 100,000 prefixes must not cost
// 100,000 scans of a table that holds them too (a pass took 2.7 s at
// 10,000 prefixes, growing with the square: BenchmarkPassFlood).
type routeIndex struct {
	connected []model.Route // connected subnets (few)
	// inWay are the routes of someone else (not protocol bgp) with
	// metric BGPMetric, by destination.
	inWay map[netip.Prefix]model.Route
}

func indexRoutes(routes []model.Route) routeIndex {
	ix := routeIndex{inWay: map[netip.Prefix]model.Route{}}
	for _, r := range routes {
		if connected(r) {
			ix.connected = append(ix.connected, r)
		}
		if r.Metric == model.BGPMetric && r.Proto != model.ProtoBGP {
			ix.inWay[r.Dst] = r
		}
	}
	return ix
}

// via is the longest connected subnet holding a, or nil.
func (ix routeIndex) via(a netip.Addr) *model.Route {
	var best *model.Route
	for i, r := range ix.connected {
		if r.Dst.Contains(a) && (best == nil || r.Dst.Bits() > best.Dst.Bits()) {
			best = &ix.connected[i]
		}
	}
	return best
}

// familyName is "IPv4" or "IPv6", for messages.
func familyName(a netip.Addr) string {
	if model.FamilyOf(a) == model.IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// importable is Importable for a path c, which for IPv6 may carry a
// link-local next hop beside (or instead of) the global one (RFC 2545):
// the global one is taken when it is directly reachable; otherwise the
// link-local one, through the interface of the session's subnet (the
// connected subnet holding the peer: a link-local address means nothing
// elsewhere). gw is the gateway to install, without zone.
func importable(c candidate, pol Policy, ix routeIndex) (gw netip.Addr, dev, why string, refused bool) {
	dst, nh := c.Prefix, c.NextHop.WithZone("")
	fam := familyName(dst.Addr())
	deflt := "0.0.0.0/0"
	if fam == "IPv6" {
		deflt = "::/0"
	}
	switch {
	case !dst.IsValid():
		return gw, "", "no prefix", true
	case dst.Bits() == 0 && !slices.Contains(pol.Import, dst):
		return gw, "", "a default route: installed only when import lists " + deflt, true
	case !slices.ContainsFunc(pol.Import, func(i netip.Prefix) bool { return within(dst, i) }):
		return gw, "", fmt.Sprintf("outside import (%s)", prefixList(pol.Import)), true
	}
	for _, m := range neverRouted {
		if within(dst, m.p) {
			return gw, "", fmt.Sprintf("inside %s (%s): never routed to a peer, whatever import says", m.p, m.what), true
		}
	}
	for _, p := range pol.Protect {
		if within(dst, p) {
			return gw, "", fmt.Sprintf("inside this host's network %s", p), true
		}
	}
	for _, r := range ix.connected {
		if within(dst, r.Dst) {
			return gw, "", fmt.Sprintf("inside this host's connected subnet %s (dev %s)", r.Dst, r.Dev), true
		}
	}
	// A guest's address looks directly reachable (its bridge is a
	// connected subnet), but a path through it would steer the prefix's
	// traffic, from the uplink and from the other guests, into a tenant's
	// VM: guests are never peers, so no legitimate path names one.
	for _, p := range pol.Protect {
		if p.Contains(nh) {
			return gw, "", fmt.Sprintf("next hop %s is inside this host's network %s (a guest, not a router): the route would steer traffic into it", nh, p), false
		}
	}
	for _, r := range ix.connected {
		if nh.IsValid() && nh == r.Src {
			return gw, "", fmt.Sprintf("next hop %s is this host's own address (dev %s)", nh, r.Dev), false
		}
	}
	if fam == "IPv6" {
		return importable6(c, pol, ix)
	}
	via := ix.via(nh)
	switch {
	case !nh.IsValid() || !nh.Is4():
		// RFC 8950's IPv6 next hop for IPv4 is not negotiated: only a
		// peer that breaks the session's terms sends one.
		return gw, "", fmt.Sprintf("next hop %v is not an IPv4 address", nh), false
	case slices.Contains(pol.Own, nh):
		return gw, "", fmt.Sprintf("next hop %s is this host's own address", nh), false
	case via == nil:
		return gw, "", fmt.Sprintf("next hop %s is not directly reachable: no connected subnet holds it", nh), false
	case via.Dst.Bits() <= 30 && nh == via.Dst.Addr():
		return gw, "", fmt.Sprintf("next hop %s is the network address of the connected subnet %s, not a router", nh, via.Dst), false
	case via.Dst.Bits() <= 30 && nh == model.Broadcast(via.Dst):
		return gw, "", fmt.Sprintf("next hop %s is the broadcast address of the connected subnet %s, not a router", nh, via.Dst), false
	}
	if r, ok := ix.inWay[dst]; ok {
		return gw, "", fmt.Sprintf("a route guestnet did not make is in the way (ip route replace would take it): %s", plan.RouteString(r)), false
	}
	return nh, via.Dev, "", false
}

// importable6 is the next hop half of importable for an IPv6 path.
func importable6(c candidate, pol Policy, ix routeIndex) (gw netip.Addr, dev, why string, refused bool) {
	nh, ll := c.NextHop.WithZone(""), c.LinkLocal.WithZone("")
	if nh.IsLinkLocalUnicast() && !ll.IsValid() { // a link-local address alone, in the global field
		nh, ll = netip.Addr{}, nh
	}
	global := nh.IsValid() && !nh.IsUnspecified() && !nh.IsLinkLocalUnicast()
	switch {
	case global && model.FamilyOf(nh) != model.IPv6:
		return gw, "", fmt.Sprintf("next hop %s is not an IPv6 address", nh), false
	case global && slices.Contains(pol.Own, nh):
		return gw, "", fmt.Sprintf("next hop %s is this host's own address", nh), false
	case ll.IsValid() && slices.Contains(pol.Own, ll):
		return gw, "", fmt.Sprintf("next hop %s is this host's own address", ll), false
	case ll.IsValid() && !ll.IsLinkLocalUnicast():
		return gw, "", fmt.Sprintf("the second next hop %s is not a link-local address", ll), false
	}
	if global {
		if via := ix.via(nh); via != nil {
			if nh == via.Dst.Addr() && via.Dst.Bits() < 127 {
				return gw, "", fmt.Sprintf("next hop %s is the Subnet-Router anycast address of the connected subnet %s, not a router", nh, via.Dst), false
			}
			gw, dev = nh, via.Dev
		}
	}
	if !gw.IsValid() && ll.IsValid() {
		// The session's own interface: where the peer, which sent the
		// link-local address, is.
		if via := ix.via(c.Peer.WithZone("")); via != nil {
			gw, dev = ll, via.Dev
		} else {
			return gw, "", fmt.Sprintf("next hop %s is link-local, and no connected subnet holds the peer %v to tell its interface", ll, c.Peer), false
		}
	}
	if !gw.IsValid() {
		if !global {
			return gw, "", fmt.Sprintf("next hop %v is no IPv6 address to route through", c.NextHop), false
		}
		return gw, "", fmt.Sprintf("next hop %s is not directly reachable: no connected subnet holds it (and the peer sent no link-local next hop)", nh), false
	}
	if r, ok := ix.inWay[c.Prefix]; ok {
		return netip.Addr{}, "", fmt.Sprintf("a route guestnet did not make is in the way (ip route replace would take it): %s", plan.RouteString(r)), false
	}
	return gw, dev, "", false
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "empty: nothing is installed"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// RouterID is the BGP identifier c asks for: its router_id, else the
// source address of the connected subnet that holds the first IPv4 peer
// (the address this host reaches it from). The identifier is an IPv4
// address whatever the sessions carry.
func RouterID(c model.BGP, routes []model.Route) (netip.Addr, error) {
	if c.RouterID.IsValid() {
		return c.RouterID, nil
	}
	i := slices.IndexFunc(c.Peers, func(p model.BGPPeer) bool { return p.Address.Is4() })
	if i < 0 {
		return netip.Addr{}, fmt.Errorf("bgp: no router_id and no IPv4 peer to derive it from: set bgp.router_id to one of this host's IPv4 addresses")
	}
	first := c.Peers[i].Address
	var best model.Route
	for _, r := range routes {
		if connected(r) && r.Src.Is4() && r.Dst.Contains(first) && (!best.Src.IsValid() || r.Dst.Bits() > best.Dst.Bits()) {
			best = r
		}
	}
	if !best.Src.IsValid() {
		return netip.Addr{}, fmt.Errorf("bgp: no router_id, and no connected subnet holds the first IPv4 peer %s to take this host's address from: set bgp.router_id to one of this host's IPv4 addresses", first)
	}
	return best.Src, nil
}
