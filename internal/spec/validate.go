package spec

import (
	"cmp"
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$`)

// ifnameOK is the kernel's rule for interface names (dev_valid_name).
func ifnameOK(s string) (string, bool) {
	switch {
	case s == "":
		return "is empty", false
	case len(s) > 15:
		return "is longer than 15 bytes (the kernel's limit for interface names)", false
	case s == "." || s == "..":
		return "is not a valid interface name", false
	case strings.ContainsAny(s, "/: \t\n"):
		return "contains '/', ':' or whitespace, which interface names cannot", false
	}
	return "", true
}

// check validates one network on its own and fills defaults.
func (n *Network) check() error {
	var errs []error
	if !nameRE.MatchString(n.Name) {
		errs = append(errs, n.errorf("", "network names are 1-32 letters, digits, '.', '_' or '-'"))
	}
	if _, ok := n.Lines["mode"]; !ok {
		errs = append(errs, n.errorf("mode", "missing (want isolated, routed, nat, bridge or open)"))
	}
	if n.Bridge == "" {
		n.Bridge = "gn-" + n.Name
		if len(n.Bridge) > 15 {
			errs = append(errs, n.errorf("bridge", "missing, and the default %q is longer than 15 bytes: name the bridge", n.Bridge))
		}
	} else if why, ok := ifnameOK(n.Bridge); !ok {
		errs = append(errs, n.errorf("bridge", "%q %s", n.Bridge, why))
	}
	if _, set := n.Lines["anti_spoofing"]; set && n.Mode == model.Open && !n.AllowSpoofing {
		errs = append(errs, n.errorf("anti_spoofing", "mode open has no firewall at all: anti-spoofing needs mode isolated, routed, nat or bridge"))
	}
	switch n.Mode {
	case model.Routed, model.NAT, model.Open:
		if !n.IPv4.IsValid() && !n.IPv6.IsValid() {
			errs = append(errs, n.errorf("ipv4", "missing: mode %s needs the host's address on the bridge (the guests' gateway): ipv4, ipv6 or both", n.Mode))
		}
	case model.Bridge:
		if n.IPv4.IsValid() {
			errs = append(errs, n.errorf("ipv4", "not allowed in mode bridge: the bridge takes the uplink's addresses"))
		}
		if n.IPv6.IsValid() {
			errs = append(errs, n.errorf("ipv6", "not allowed in mode bridge: the bridge takes the uplink's addresses, and the LAN's router advertises"))
		}
		if n.Uplink == "" {
			errs = append(errs, n.errorf("uplink", "missing: mode bridge needs the NIC to put in the bridge"))
		}
	}
	if n.Uplink != "" {
		if n.Mode != model.Bridge {
			errs = append(errs, n.errorf("uplink", "only mode bridge takes an uplink (mode %s follows the routing table)", n.Mode))
		} else if why, ok := ifnameOK(n.Uplink); !ok {
			errs = append(errs, n.errorf("uplink", "%q %s", n.Uplink, why))
		} else if n.Uplink == n.Bridge {
			errs = append(errs, n.errorf("uplink", "%q is the bridge itself", n.Uplink))
		}
	}
	if p := n.IPv4; p.IsValid() {
		sub := p.Masked()
		last := model.Broadcast(sub)
		switch {
		case p.Bits() > 30:
			errs = append(errs, n.errorf("ipv4", "/%d leaves no room for guests (want /30 or shorter)", p.Bits()))
		case p.Bits() < 8:
			errs = append(errs, n.errorf("ipv4", "/%d is wider than any guest network should be", p.Bits()))
		case p.Addr() == sub.Addr():
			errs = append(errs, n.errorf("ipv4", "gateway %s is the subnet's network address, not a host in %s", p.Addr(), sub))
		case p.Addr() == last:
			errs = append(errs, n.errorf("ipv4", "gateway %s is the broadcast address of %s", p.Addr(), sub))
		case p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsUnspecified():
			errs = append(errs, n.errorf("ipv4", "%s cannot be a gateway", p.Addr()))
		}
	}
	if err := n.checkIPv6(); err != nil {
		errs = append(errs, err)
	}
	if err := n.checkVXLAN(); err != nil {
		errs = append(errs, err)
	}
	if n.DNS != nil && !n.IPv4.IsValid() && !n.IPv6.IsValid() {
		errs = append(errs, n.errorf("dns", "needs the network's ipv4 or ipv6 (the address it answers on)"))
	}
	if len(errs) == 0 {
		errs = append(errs, n.checkDHCP(), n.checkDHCP6(), n.checkForwards(), n.checkFloating(), n.checkRoutedFrom())
	}
	return errors.Join(errs...)
}

// Validate checks the networks against each other.
//
// Each network is checked against the earlier ones that share a name, a
// bridge, an uplink or an overlapping subnet with it, found by maps and one
// sorted sweep instead of by comparing every pair (a million pairs at
// 1,000 networks); each such pair reports what conflict checks it first.
func (s *Spec) Validate() error {
	var errs []error
	clash := clashes(s.Networks)
	for i := range s.Networks {
		a := &s.Networks[i]
		for _, j := range clash[i] {
			if err := pairError(a, &s.Networks[j]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names := make(map[string]bool, len(s.Networks))
	for _, n := range s.Networks {
		names[n.Name] = true
	}
	for i := range s.Networks {
		n := &s.Networks[i]
		for j, p := range n.Peers {
			if !names[p] || p == n.Name {
				errs = append(errs, n.errorf("peers["+itoa(j)+"]", "no other network %q in the spec", p))
			}
		}
	}
	errs = append(errs, s.validateStretch()...)
	errs = append(errs, s.validateRoutedFrom()...)
	if s.BGP != nil {
		// Guests are never peers: a peer address in a network is one a
		// guest can take, and the speaker would accept its session.
		for i, p := range s.BGP.Peers {
			for _, n := range s.Networks {
				for _, sub := range n.Subnets() {
					if sub.Contains(p.Address) {
						errs = append(errs, s.BGP.errorf("peers["+itoa(i)+"].address", "%s is inside network %s (%s): a guest's address; guests are never BGP peers", p.Address, n.Name, sub))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// pairError is the conflict between network a and the earlier network b,
// or nil.
func pairError(a, b *Network) error {
	switch {
	case a.Name == b.Name:
		return a.errorf("", "declared twice (also at %s:%d)", b.File, b.Line)
	case a.Bridge == b.Bridge:
		return a.errorf("bridge", "%q is also the bridge of network %s (%s:%d)", a.Bridge, b.Name, b.File, b.Line)
	case a.Uplink != "" && a.Uplink == b.Uplink:
		return a.errorf("uplink", "%q is also the uplink of network %s (%s:%d)", a.Uplink, b.Name, b.File, b.Line)
	case a.Uplink != "" && a.Uplink == b.Bridge:
		return a.errorf("uplink", "%q is the bridge of network %s (%s:%d)", a.Uplink, b.Name, b.File, b.Line)
	case b.Uplink != "" && b.Uplink == a.Bridge:
		return a.errorf("bridge", "%q is the uplink of network %s (%s:%d)", a.Bridge, b.Name, b.File, b.Line)
	case subnetsClash(a, b):
		return a.errorf("ipv4", "subnet %s overlaps %s of network %s (%s:%d)", a.Subnet(), b.Subnet(), b.Name, b.File, b.Line)
	case a.IPv6.IsValid() && b.IPv6.IsValid() && a.Subnet6().Overlaps(b.Subnet6()):
		return a.errorf("ipv6", "prefix %s overlaps %s of network %s (%s:%d)", a.Subnet6(), b.Subnet6(), b.Name, b.File, b.Line)
	}
	return nil
}

// subnetsClash reports whether two networks' subnets overlap where that is
// an error: bridge-mode networks take their uplink's addresses, which may.
func subnetsClash(a, b *Network) bool {
	return a.IPv4.IsValid() && b.IPv4.IsValid() && a.Mode != model.Bridge && b.Mode != model.Bridge &&
		a.Subnet().Overlaps(b.Subnet())
}

// clashes returns, for each network i, the earlier networks j < i (in
// ascending order) that pairError may find in conflict with it: those
// sharing a name, a bridge or an uplink name with it (either way round),
// and those whose subnet overlaps its own. Every pair pairError reports is
// among them.
func clashes(nets []Network) [][]int {
	byName := map[string][]int{}
	for i := range nets {
		n := &nets[i]
		keys := []string{"n" + n.Name, "i" + n.Bridge}
		if n.Uplink != "" {
			keys = append(keys, "i"+n.Uplink) // interface names: bridges and uplinks
		}
		for _, k := range keys {
			if !slices.Contains(byName[k], i) {
				byName[k] = append(byName[k], i)
			}
		}
	}
	out := make([][]int, len(nets))
	add := func(i, j int) {
		if j < i {
			out[i] = append(out[i], j)
		} else if i < j {
			out[j] = append(out[j], i)
		}
	}
	for _, idx := range byName {
		for x, i := range idx {
			for _, j := range idx[:x] {
				add(i, j)
			}
		}
	}
	overlaps(nets, func(n *Network) netip.Prefix {
		if n.Mode == model.Bridge {
			return netip.Prefix{}
		}
		return n.Subnet()
	}, add)
	overlaps(nets, func(n *Network) netip.Prefix { return n.Subnet6() }, add)
	for i := range out {
		slices.Sort(out[i])
		out[i] = slices.Compact(out[i])
	}
	return out
}

// overlaps calls pair for every two networks whose subnets (of one family,
// as subnet returns them; invalid: none) overlap (one holds the other), in
// one sweep over the subnets sorted by first address, widest first: the
// stack holds the subnets that hold the current one.
func overlaps(nets []Network, subnet func(*Network) netip.Prefix, pair func(i, j int)) {
	var idx []int
	for i := range nets {
		if subnet(&nets[i]).IsValid() {
			idx = append(idx, i)
		}
	}
	sub := func(i int) netip.Prefix { return subnet(&nets[i]) }
	slices.SortFunc(idx, func(a, b int) int {
		pa, pb := sub(a), sub(b)
		return cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits()))
	})
	var stack []int
	for _, i := range idx {
		p := sub(i)
		for len(stack) > 0 && !sub(stack[len(stack)-1]).Contains(p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		for _, j := range stack {
			pair(i, j)
		}
		stack = append(stack, i)
	}
}

// addrIn finds an address of another interface inside sub: one with no
// prefix route (noprefixroute, or a /128 in the local table only) escapes
// the route check, and the host would then hold the guests' router address,
// or one of their addresses, twice. guestnet's own bridges (checked against
// each other, or being changed) and the network's own uplink (bridge mode
// moves its addresses to the bridge) do not count.
func addrIn(links []model.Link, sub netip.Prefix, n *Network) (string, netip.Addr, bool) {
	for _, l := range links {
		if l.Name == n.Bridge || l.Name == n.Uplink || l.Owner() != "" {
			continue
		}
		for _, p := range l.Addrs {
			if sub.Contains(p.Addr()) {
				return l.Name, p.Addr(), true
			}
		}
	}
	return "", netip.Addr{}, false
}

// CheckHost checks the spec against the observed host before any change:
// uplinks exist and are free, bridge names are not taken by links guestnet
// does not own, and guest subnets do not overlap the host's own routes.
func (s *Spec) CheckHost(h model.Host) error {
	var errs []error
	links := make(map[string]model.Link, len(h.Links))
	for _, l := range h.Links {
		links[l.Name] = l
	}
	// Routes a guest subnet must not overlap: all but default routes and
	// those of guestnet's own bridges (checked against each other above, or
	// being removed).
	var routes []model.Route
	for _, r := range h.Routes {
		if r.Dst.Bits() > 0 && links[r.Dev].Owner() == "" {
			routes = append(routes, r)
		}
	}
	for i := range s.Networks {
		n := &s.Networks[i]
		if l, ok := links[n.Bridge]; ok {
			switch {
			case l.Owner() != n.Name && l.Owner() != "":
				errs = append(errs, n.errorf("bridge", "%q belongs to guestnet network %s: destroy that network first", n.Bridge, l.Owner()))
			case l.Owner() == "":
				errs = append(errs, n.errorf("bridge", "%q already exists and guestnet did not create it (pick another name, or delete the link)", n.Bridge))
			case l.Kind != "bridge":
				errs = append(errs, n.errorf("bridge", "%q exists but is a %s, not a bridge", n.Bridge, l.Kind))
			}
		}
		errs = append(errs, checkVXLANHost(n, links)...)
		if n.Uplink != "" {
			l, ok := links[n.Uplink]
			switch {
			case !ok:
				errs = append(errs, n.errorf("uplink", "no interface %q on this host", n.Uplink))
			case l.Master != "" && l.Master != n.Bridge:
				errs = append(errs, n.errorf("uplink", "%q is already a port of bridge %s", n.Uplink, l.Master))
			case l.Kind == "bridge":
				errs = append(errs, n.errorf("uplink", "%q is a bridge itself; name the NIC instead", n.Uplink))
			}
		}
		for i, fw := range n.Forwards {
			for _, a := range fw.Listen {
				if !slices.ContainsFunc(h.Links, func(l model.Link) bool {
					return slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == a })
				}) {
					errs = append(errs, n.errorf("forwards["+itoa(i)+"].listen", "%s is not an address of this host", a))
				}
			}
		}
		for i, fl := range n.Floating {
			if _, ok := h.FloatingUplink(fl); !ok {
				errs = append(errs, n.errorf("floating["+itoa(i)+"]", "no interface of this host holds %s's subnet (name one with uplink:)", fl.Public))
			}
		}
		for _, sub := range n.Subnets() {
			field := "ipv4"
			if sub.Addr().Is6() {
				field = "ipv6"
			}
			for _, r := range routes {
				if r.Dev == n.Bridge || !r.Dst.Overlaps(sub) {
					continue
				}
				errs = append(errs, n.errorf(field, "subnet %s overlaps the host's route %s dev %s", sub, r.Dst, r.Dev))
			}
			if l, a, ok := addrIn(h.Links, sub, n); ok {
				errs = append(errs, n.errorf(field, "subnet %s holds %s, an address of %s already (pick another subnet, or remove the address from %s)", sub, a, l, l))
			}
		}
	}
	return errors.Join(errs...)
}
