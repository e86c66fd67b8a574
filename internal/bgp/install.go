package bgp

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// candidate is one path a peer announced for a prefix.
type candidate struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// LinkLocal is an IPv6 path's second next hop (RFC 2545), when the
	// peer sent one.
	LinkLocal netip.Addr
	Peer      netip.Addr
	// Stale: kept across the peer's restart (graceful restart).
	Stale bool
}

// decide picks what to install: for each prefix (its paths best first,
// as GoBGP ranks them) the best path, passing over stale paths of peers
// in gone (peers whose session died by silence: their routes would lead
// nowhere, so they are not kept for a restart that is not one), checked
// by Importable. It returns every prefix as Status shows it (Installed
// still false) and the routes to install, by prefix.
func decide(dests [][]candidate, pol Policy, routes []model.Route, gone map[netip.Addr]string) ([]Learned, map[netip.Prefix]model.Route) {
	var learned []Learned
	want := map[netip.Prefix]model.Route{}
	ix := indexRoutes(routes)
	for _, cs := range dests {
		if len(cs) == 0 {
			continue
		}
		pick := -1
		for i, c := range cs {
			if !c.Stale || gone[c.Peer] == "" {
				pick = i
				break
			}
		}
		if pick < 0 {
			c := cs[0]
			learned = append(learned, Learned{Prefix: c.Prefix, NextHop: c.NextHop, Peer: c.Peer, Stale: true, Why: gone[c.Peer]})
			continue
		}
		c := cs[pick]
		l := Learned{Prefix: c.Prefix, NextHop: shownNextHop(c), Peer: c.Peer, Stale: c.Stale}
		gw, dev, why, refused := importable(c, pol, ix)
		if why != "" {
			l.Why, l.Refused = why, refused
		} else {
			want[c.Prefix] = model.Route{Dst: c.Prefix, Gw: gw, Dev: dev, Proto: model.ProtoBGP, Metric: model.BGPMetric}
			if gw.IsLinkLocalUnicast() { // the interface is part of the address
				l.NextHop = gw.WithZone(dev)
			}
		}
		learned = append(learned, l)
	}
	slices.SortFunc(learned, func(a, b Learned) int { return model.ComparePrefix(a.Prefix, b.Prefix) })
	return learned, want
}

// shownNextHop is the next hop Status shows of a path: the global one,
// or the link-local one when the global one is missing.
func shownNextHop(c candidate) netip.Addr {
	if (!c.NextHop.IsValid() || c.NextHop.IsUnspecified()) && c.LinkLocal.IsValid() {
		return c.LinkLocal
	}
	return c.NextHop
}

// ours reports whether r is a route a speaker installed: protocol bgp,
// metric 186, in the main table (what Kernel.Routes lists).
func ours(r model.Route) bool { return r.Proto == model.ProtoBGP && r.Metric == model.BGPMetric }

// same reports whether the kernel's route k is the wanted w.
func same(k, w model.Route) bool {
	return ours(k) && k.Dst == w.Dst && k.Gw == w.Gw && k.Dev == w.Dev
}

// reconcile lists the writes that make the kernel's BGP routes (ours)
// the wanted ones: a replace for each one missing or different, a delete
// for each one not wanted, except those keep holds back (a previous
// speaker's, until the takeover ends).
func reconcile(want map[netip.Prefix]model.Route, routes []model.Route, keep func(model.Route) bool) []plan.Action {
	var acts []plan.Action
	have := map[netip.Prefix][]model.Route{} // ours by destination: one lookup per wanted route
	for _, k := range routes {
		if ours(k) {
			have[k.Dst] = append(have[k.Dst], k)
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(want), model.ComparePrefix) {
		w := want[p]
		if !slices.ContainsFunc(have[p], func(k model.Route) bool { return same(k, w) }) {
			acts = append(acts, plan.Action{Op: plan.OpRouteReplace, Route: w})
		}
	}
	for _, k := range routes {
		if !ours(k) {
			continue
		}
		if _, wanted := want[k.Dst]; wanted || keep(k) {
			continue
		}
		k.Scope, k.Src = 0, netip.Addr{}
		acts = append(acts, plan.Action{Op: plan.OpRouteDel, Route: k})
	}
	return acts
}
