package report

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// routedFromRoutes are the return routes of a nat network with
// routed_from: only the hosts in those prefixes reach the guests by their
// own addresses (the firewall refuses anyone else, and masquerades the
// rest of the guests' traffic), so the routes are for them alone. For
// each routed_from prefix of a family the network has, a comment line
// naming the hosts that run it, then the route through this host's
// address on the interface whose subnet holds the prefix (or, when none
// does, the interface of the family's default route; --via overrides).
// A --peer must lie in routed_from: any other host's return route would
// lead to a refusal.
func routedFromRoutes(n model.Network, h model.Host, via, peer netip.Addr, forOS string) ([]string, error) {
	via, peer = via.Unmap(), peer.Unmap()
	if err := checkVia(n, via); err != nil {
		return nil, fmt.Errorf("routes %s: %w", n.Name, err)
	}
	if err := checkPeer(n, h, peer); err != nil {
		return nil, fmt.Errorf("routes %s: %w", n.Name, err)
	}
	prefixes := n.RoutedFrom
	if peer.IsValid() {
		i := slices.IndexFunc(n.RoutedFrom, func(p netip.Prefix) bool { return p.Contains(peer.WithZone("")) })
		if i < 0 {
			return nil, fmt.Errorf("routes %s: --peer %s is in none of routed_from %v: network %s is nat, and its firewall refuses that host whatever its routes; add its prefix to routed_from", n.Name, peer, n.RoutedFrom, n.Name)
		}
		prefixes = n.RoutedFrom[i : i+1]
	}
	comment := "#"
	if forOS == "windows" {
		comment = "REM"
	}
	var out []string
	for _, p := range prefixes {
		f := model.FamilyOf(p.Addr())
		sub := n.Addr(f).Masked()
		if !sub.IsValid() {
			continue // the spec refuses it; a model may not
		}
		v := via
		if v.IsValid() && model.FamilyOf(v) != f {
			v = netip.Addr{}
		}
		if !v.IsValid() {
			toward := p.Addr()
			if peer.IsValid() {
				toward = peer
			}
			var err error
			if v, err = facing(h, f, toward, n.Bridge); err != nil {
				if v, err = facing(h, f, netip.Addr{}, n.Bridge); err != nil {
					return nil, fmt.Errorf("routes %s: the hosts in %s: %w", n.Name, p, err)
				}
			}
		}
		out = append(out, fmt.Sprintf("%s on the hosts in %s (routed_from):", comment, p), routeLine(sub, v, forOS))
	}
	return out, nil
}
