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
	// addresses, router ID): never a next hop.
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
}

// connected reports whether r is a connected subnet: the kernel's route
// for an address's subnet (protocol kernel, scope link, no gateway).
func connected(r model.Route) bool {
	return r.Proto == model.ProtoKernel && r.Scope == 253 && !r.Gw.IsValid() && r.Dst.Addr().Is4()
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
// unreachable or this host, someone else's route in the way). The rules: dst lies inside
// one of pol.Import (a default route only when 0.0.0.0/0 is listed) and
// in none of the special-purpose ranges (neverRouted); it
// is neither equal to nor inside this host's networks (pol.Protect) or
// connected subnets; nh is directly reachable (inside a connected subnet),
// neither this host's own address nor a guest's (inside pol.Protect) nor
// the network or broadcast address of its subnet; and no route of someone else (not
// protocol bgp) has the same destination and metric, since installing
// would replace it.
func Importable(dst netip.Prefix, nh netip.Addr, pol Policy, routes []model.Route) (dev, why string, refused bool) {
	return importable(dst, nh, pol, indexRoutes(routes))
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

func importable(dst netip.Prefix, nh netip.Addr, pol Policy, ix routeIndex) (dev, why string, refused bool) {
	routes := ix.connected
	switch {
	case !dst.Addr().Is4():
		return "", "not an IPv4 prefix: only IPv4 routes are installed", true
	case dst.Bits() == 0 && !slices.Contains(pol.Import, dst):
		return "", "a default route: installed only when import lists 0.0.0.0/0", true
	case !slices.ContainsFunc(pol.Import, func(i netip.Prefix) bool { return within(dst, i) }):
		return "", fmt.Sprintf("outside import (%s)", prefixList(pol.Import)), true
	}
	for _, m := range neverRouted {
		if within(dst, m.p) {
			return "", fmt.Sprintf("inside %s (%s): never routed to a peer, whatever import says", m.p, m.what), true
		}
	}
	for _, p := range pol.Protect {
		if within(dst, p) {
			return "", fmt.Sprintf("inside this host's network %s", p), true
		}
	}
	for _, r := range routes {
		if connected(r) && within(dst, r.Dst) {
			return "", fmt.Sprintf("inside this host's connected subnet %s (dev %s)", r.Dst, r.Dev), true
		}
	}
	// A guest's address looks directly reachable (its bridge is a
	// connected subnet), but a path through it would steer the prefix's
	// traffic, from the uplink and from the other guests, into a tenant's
	// VM: guests are never peers, so no legitimate path names one.
	for _, p := range pol.Protect {
		if p.Contains(nh) {
			return "", fmt.Sprintf("next hop %s is inside this host's network %s (a guest, not a router): the route would steer traffic into it", nh, p), false
		}
	}
	var via *model.Route // the longest connected subnet holding nh
	for i, r := range routes {
		if !connected(r) {
			continue
		}
		if nh.IsValid() && nh == r.Src {
			return "", fmt.Sprintf("next hop %s is this host's own address (dev %s)", nh, r.Dev), false
		}
		if r.Dst.Contains(nh) && (via == nil || r.Dst.Bits() > via.Dst.Bits()) {
			via = &routes[i]
		}
	}
	switch {
	case !nh.IsValid() || !nh.Is4():
		return "", fmt.Sprintf("next hop %v is not an IPv4 address", nh), false
	case slices.Contains(pol.Own, nh):
		return "", fmt.Sprintf("next hop %s is this host's own address", nh), false
	case via == nil:
		return "", fmt.Sprintf("next hop %s is not directly reachable: no connected subnet holds it", nh), false
	case via.Dst.Bits() <= 30 && nh == via.Dst.Addr():
		return "", fmt.Sprintf("next hop %s is the network address of the connected subnet %s, not a router", nh, via.Dst), false
	case via.Dst.Bits() <= 30 && nh == model.Broadcast(via.Dst):
		return "", fmt.Sprintf("next hop %s is the broadcast address of the connected subnet %s, not a router", nh, via.Dst), false
	}
	if r, ok := ix.inWay[dst]; ok {
		return "", fmt.Sprintf("a route guestnet did not make is in the way (ip route replace would take it): %s", plan.RouteString(r)), false
	}
	return via.Dev, "", false
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
// source address of the connected subnet that holds the first peer (the
// address this host reaches it from).
func RouterID(c model.BGP, routes []model.Route) (netip.Addr, error) {
	if c.RouterID.IsValid() {
		return c.RouterID, nil
	}
	if len(c.Peers) == 0 {
		return netip.Addr{}, fmt.Errorf("bgp: no router_id and no peer to derive it from: set bgp.router_id to one of this host's IPv4 addresses")
	}
	first := c.Peers[0].Address
	var best model.Route
	for _, r := range routes {
		if connected(r) && r.Src.Is4() && r.Dst.Contains(first) && (!best.Src.IsValid() || r.Dst.Bits() > best.Dst.Bits()) {
			best = r
		}
	}
	if !best.Src.IsValid() {
		return netip.Addr{}, fmt.Errorf("bgp: no router_id, and no connected subnet holds the first peer %s to take this host's address from: set bgp.router_id to one of this host's IPv4 addresses", first)
	}
	return best.Src, nil
}
