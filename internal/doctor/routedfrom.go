package doctor

import (
	"fmt"
	"net/netip"

	"github.com/guestnet/guestnet/internal/match"
	"github.com/guestnet/guestnet/internal/model"
)

// checkRoutedFrom diagnoses the nat networks with routed_from from this
// host's side. What it can know: whether a guest's packet to a
// routed_from host leaves untranslated (guestnet's nat chain accepts it
// before its masquerade, and no other table's masquerade takes it after),
// and which of this host's routes reaches the prefix (none; a guest
// bridge; the default route, so the hosts are beyond a router). What it
// cannot: whether those hosts (or their router) have the return route to
// the guests' subnet via this host; that is an Info finding naming the
// command, as guestnet routes prints it. Forwarding and rp_filter have
// their own checks (ip-forward, rp-filter).
func checkRoutedFrom(in Input) []Finding {
	var out []Finding
	for _, n := range in.Networks {
		if n.Mode != model.NAT || len(n.RoutedFrom) == 0 {
			continue
		}
		for _, p := range n.RoutedFrom {
			f := model.FamilyOf(p.Addr())
			sub := subnet(n, f)
			if !sub.IsValid() {
				continue
			}
			peer := p.Addr()
			if p.Bits() < p.Addr().BitLen() {
				peer = peer.Next() // a host's address, not the prefix's first
			}
			r, routed := route(in.Host, peer)
			if hasRoutes(in.Host, f) {
				switch {
				case !routed:
					out = append(out, Finding{Severity: Error, Network: n.Name,
						What:     fmt.Sprintf("routed_from %s: this host has no route to it, so the guests' replies to those hosts are dropped", p),
						Evidence: []string{fmt.Sprintf("%s route get %s: unreachable", ipCmd(f), peer)},
						Fix:      fmt.Sprintf("add a route to %s on the interface that faces those hosts", p)})
					continue
				case isGuestBridge(in.Networks, r.Dev):
					out = append(out, Finding{Severity: Error, Network: n.Name,
						What:     fmt.Sprintf("routed_from %s is routed into guest bridge %s: those are guests, not the LAN", p, r.Dev),
						Evidence: []string{fmt.Sprintf("route %s dev %s", r.Dst, r.Dev)},
						Fix:      fmt.Sprintf("take %s out of routed_from, or give the network its peers instead", p)})
					continue
				case r.Dst.Bits() == 0:
					out = append(out, Finding{Severity: Warning, Network: n.Name,
						What: fmt.Sprintf("routed_from %s is reached by the default route (dev %s%s): those hosts are beyond a router, and it (or they) need the route to %s via this host",
							p, r.Dev, gwText(r), sub),
						Evidence: []string{fmt.Sprintf("%s route get %s: default dev %s%s", ipCmd(f), peer, r.Dev, gwText(r))},
						Fix:      fmt.Sprintf("on that router: a route to %s via this host's address on %s; or name a prefix this host reaches directly", sub, r.Dev)})
				}
			}
			if masq, where, unknown := in.translated(n, sub, peer, r.Dev); masq {
				out = append(out, Finding{Severity: Error, Network: n.Name,
					What:     fmt.Sprintf("traffic from %s to routed_from %s is still masqueraded: those hosts see this host's address, not the guests'", sub, p),
					Evidence: append([]string{where}, unknown...),
					Fix:      fmt.Sprintf("guestnet apply (its nat chain leaves %s untranslated); a masquerade of another table: exclude %s from it (e.g. iptables -t nat -I POSTROUTING -s %s -d %s -j RETURN)", p, p, sub, p)})
			}
			via, ev := "THIS-HOST", []string{"the routes of other hosts are not visible from this one"}
			if routed {
				ev = append(ev, fmt.Sprintf("this host reaches %s by route %s dev %s%s", p, r.Dst, r.Dev, gwText(r)))
				if a, ok := addrOn(in.Host, r.Dev, f); ok && r.Dst.Bits() > 0 {
					via = a.String()
				}
			}
			out = append(out, Finding{Severity: Info, Network: n.Name,
				What:     fmt.Sprintf("the hosts in routed_from %s reach %s's guests only with a return route via this host, which doctor cannot see from here", p, n.Name),
				Evidence: ev,
				Fix:      fmt.Sprintf("on those hosts: %s route add %s via %s (guestnet routes %s prints it)", ipCmd(f), sub, via, n.Name)})
		}
	}
	return out
}

// translated walks a guest's packet to peer through postrouting: guestnet's
// chain (its first rule that matches decides: accept leaves the source
// alone, masquerade or a floating SNAT translates it), then the
// masquerade rules of other tables, which a guestnet accept does not stop.
func (in Input) translated(n model.Network, sub netip.Prefix, peer netip.Addr, oif string) (masq bool, where string, unknown []string) {
	p := match.Packet{Src: sub.Addr().Next(), Dst: peer, IIF: n.Bridge, OIF: oif, Proto: "tcp", Port: 443}
	steps, err := match.Walk(in.Host.Ruleset, "postrouting", p)
	if err != nil {
		unknown = append(unknown, "table inet guestnet chain postrouting: "+err.Error())
	}
	for _, st := range steps {
		ok, err := match.Rule(st.Rule, p)
		if err != nil {
			unknown = append(unknown, "table inet guestnet chain "+st.Chain+": "+err.Error())
			continue
		}
		if !ok {
			continue
		}
		if st.Rule.Verdict == model.Masquerade || st.Rule.Verdict == model.SNATFloat {
			return true, "table inet guestnet chain " + st.Chain + ": " + ruleText(st.Rule), unknown
		}
		break // accept: guestnet leaves it alone
	}
	for _, fr := range in.Diag.ForeignNAT {
		if !fr.Sees(model.FamilyOf(p.Src)) || fr.Rule.Verdict != model.Masquerade {
			continue
		}
		ok, err := match.Rule(fr.Rule, p)
		if err != nil {
			unknown = append(unknown, fr.Chain+": "+err.Error())
		}
		if ok {
			return true, fr.Chain + ": " + ruleText(fr.Rule), unknown
		}
	}
	return false, "", unknown
}

// addrOn is the first address of family f (not link-local) on link dev.
func addrOn(h model.Host, dev string, f model.Family) (netip.Addr, bool) {
	l, ok := h.Link(dev)
	if !ok {
		return netip.Addr{}, false
	}
	for _, a := range l.Addrs {
		if model.FamilyOf(a.Addr()) == f && !a.Addr().IsLinkLocalUnicast() {
			return a.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// route is the main table's longest match for dst.
func route(h model.Host, dst netip.Addr) (model.Route, bool) {
	var best model.Route
	found := false
	for _, r := range h.Routes {
		if r.Dst.Contains(dst) && (!found || r.Dst.Bits() > best.Dst.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

// hasRoutes reports whether the observed host holds routes of family f:
// without any, a missing route is no evidence.
func hasRoutes(h model.Host, f model.Family) bool {
	for _, r := range h.Routes {
		if model.FamilyOf(r.Dst.Addr()) == f {
			return true
		}
	}
	return false
}

func isGuestBridge(nets []model.Network, dev string) bool {
	for _, n := range nets {
		if n.Bridge == dev {
			return true
		}
	}
	return false
}

func gwText(r model.Route) string {
	if r.Gw.IsValid() {
		return " via " + r.Gw.String()
	}
	return ""
}

func ipCmd(f model.Family) string {
	if f == model.IPv6 {
		return "ip -6"
	}
	return "ip"
}
