package spec

import (
	"errors"
	"net/netip"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

// parseRoutedFrom reads routed_from: [PREFIX...], the hosts of the LAN
// that reach a nat network's guests by their own addresses.
func (n *Network) parseRoutedFrom(v *yaml.Node) error {
	return n.eachScalar("routed_from", v, func(field, s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil && a.Zone() == "" {
				p, err = netip.PrefixFrom(a, a.BitLen()), nil
			}
		}
		if err != nil || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return n.errorf(field, "want an IPv4 or IPv6 prefix like 10.94.0.0/24 or fd94::/64 (or one address), not %q", s)
		}
		if p != p.Masked() {
			return n.errorf(field, "%s has host bits set: the prefix is %s", p, p.Masked())
		}
		if p.Bits() == 0 {
			return n.errorf(field, "%s is every address: nothing would stay NATed; use mode routed", p)
		}
		n.RoutedFrom = append(n.RoutedFrom, p)
		return nil
	})
}

// checkRoutedFrom validates routed_from against the network itself.
func (n *Network) checkRoutedFrom() error {
	if _, set := n.Lines["routed_from"]; !set {
		return nil
	}
	switch n.Mode {
	case model.NAT:
	case model.Routed, model.Open:
		return n.errorf("routed_from", "only nat networks take routed_from: mode %s already routes every peer to the guests by their own addresses", n.Mode)
	case model.Isolated:
		return n.errorf("routed_from", "only nat networks take routed_from: mode isolated forwards nothing to or from its guests")
	default:
		return n.errorf("routed_from", "only nat networks take routed_from: mode %s puts the guests on the LAN itself", n.Mode)
	}
	var errs []error
	for i, p := range n.RoutedFrom {
		f := "routed_from[" + itoa(i) + "]"
		if _, ok := n.Lines[f]; !ok {
			f = "routed_from" // a single value, not a list
		}
		own, fam, key := n.Subnet(), "IPv4", "ipv4"
		if p.Addr().Is6() {
			own, fam, key = n.Subnet6(), "IPv6", "ipv6"
		}
		switch {
		case !own.IsValid():
			errs = append(errs, n.errorf(f, "%s is %s, and the network has no %s: its guests have no address of that family to be reached at", p, fam, key))
		case own.Overlaps(p):
			errs = append(errs, n.errorf(f, "%s overlaps the network's own subnet %s: routed_from names hosts outside it", p, own))
		}
		for j, q := range n.RoutedFrom[:i] {
			if q.Overlaps(p) {
				errs = append(errs, n.errorf(f, "%s overlaps routed_from[%d] %s", p, j, q))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// validateRoutedFrom refuses a routed_from prefix that overlaps another
// guest network's subnet: those guests are this host's own, reached by
// peers and the firewall's network rules, never "the LAN".
func (s *Spec) validateRoutedFrom() []error {
	var errs []error
	for i := range s.Networks {
		n := &s.Networks[i]
		for k, p := range n.RoutedFrom {
			f := "routed_from[" + itoa(k) + "]"
			if _, ok := n.Lines[f]; !ok {
				f = "routed_from"
			}
			for _, o := range s.Networks {
				if o.Name == n.Name || o.Mode == model.Bridge {
					continue
				}
				for _, sub := range o.Subnets() {
					if sub.Overlaps(p) {
						errs = append(errs, n.errorf(f, "%s overlaps %s of network %s (%s:%d): guest networks of this host reach each other through peers, not routed_from", p, sub, o.Name, o.File, o.Line))
					}
				}
			}
		}
	}
	return errs
}
