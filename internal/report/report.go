// Package report turns observed state into what a person or a tool reads:
// the status of guestnet's networks and the return routes other hosts need.
// It is pure.
package report

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// Routes returns the commands a peer host runs so it can reach a routed
// network's guests through this host, one per family (IPv4 first). via is
// the host's address facing the peers; when it is not valid it is the
// address on the interface that holds peer's subnet, or else on the
// interface of the default route, of each family. A nat network's IPv6
// guests leave masqueraded (NAT66): no IPv6 return route is printed for it,
// and one with IPv6 only is refused (nothing to route). --via and --peer
// that name no other host (loopback, link-local --via, this host's own
// address, the network's own prefix) are refused; a link-local --peer
// needs its zone (fe80::2%eth0), which names the interface facing it.
func Routes(n model.Network, h model.Host, via, peer netip.Addr, forOS string) ([]string, error) {
	if forOS != "linux" && forOS != "" && forOS != "windows" {
		return nil, fmt.Errorf("routes: --for %q: want linux or windows", forOS)
	}
	if !n.IPv4.IsValid() && !n.IPv6.IsValid() {
		return nil, fmt.Errorf("routes %s: network has no ipv4 or ipv6 subnet", n.Name)
	}
	if n.Mode == model.NAT && len(n.RoutedFrom) > 0 {
		return routedFromRoutes(n, h, via, peer, forOS)
	}
	if !n.IPv4.IsValid() && n.Mode == model.NAT {
		return nil, fmt.Errorf("routes %s: nothing to route: network %s is nat and has only IPv6, which leaves masqueraded (NAT66): other hosts need no return route", n.Name, n.Name)
	}
	via, peer = via.Unmap(), peer.Unmap()
	if err := checkVia(n, via); err != nil {
		return nil, fmt.Errorf("routes %s: %w", n.Name, err)
	}
	if err := checkPeer(n, h, peer); err != nil {
		return nil, fmt.Errorf("routes %s: %w", n.Name, err)
	}
	var out []string
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		sub := n.Addr(f).Masked()
		if !sub.IsValid() || (f == model.IPv6 && n.Mode == model.NAT) {
			continue
		}
		v := via
		if v.IsValid() && model.FamilyOf(v) != f {
			if n.Addr(model.FamilyOf(v)).IsValid() {
				v = netip.Addr{} // --via names the other family's next hop: pick this one's
			} else {
				return nil, fmt.Errorf("routes %s: --via %s is an %s address, and the network has only %s", n.Name, v, familyName(model.FamilyOf(v)), familyName(f))
			}
		}
		if !v.IsValid() {
			var err error
			if v, err = facing(h, f, peer, n.Bridge); err != nil {
				return nil, fmt.Errorf("routes %s: %w", n.Name, err)
			}
		}
		out = append(out, routeLine(sub, v, forOS))
	}
	return out, nil
}

// notAHost says why addr, given as flag, cannot be another host's address
// (nil when it can).
func notAHost(flag string, a netip.Addr) error {
	switch {
	case a.IsLoopback():
		return fmt.Errorf("%s %s is a loopback address: name an address of the hosts that need the route", flag, a)
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("%s %s is not an address of a host", flag, a)
	}
	return nil
}

// inOwn says when a is inside one of the network's own subnets (nil when
// it is not): those face the guests, not the peers.
func inOwn(flag string, n model.Network, a netip.Addr) error {
	for _, sub := range n.Subnets() {
		if sub.Contains(a) {
			return fmt.Errorf("%s %s is inside network %s's own prefix %s, which faces its guests: name an address of the hosts that need the route", flag, a, n.Name, sub)
		}
	}
	return nil
}

// checkVia refuses a --via a peer host cannot route through: loopback,
// link-local (a route through one needs the peer's interface, which this
// host does not know), or the network's own gateway side.
func checkVia(n model.Network, via netip.Addr) error {
	if !via.IsValid() {
		return nil
	}
	if err := notAHost("--via", via); err != nil {
		return err
	}
	if via.IsLinkLocalUnicast() {
		return fmt.Errorf("--via %s is link-local: a route through it needs the peer's own interface name; give this host's global or unique local address facing the peers", via)
	}
	return inOwn("--via", n, via)
}

// checkPeer refuses a --peer that is no other host: loopback, one of this
// host's own addresses, a link-local address without a zone (it names no
// interface), or an address inside the network itself.
func checkPeer(n model.Network, h model.Host, peer netip.Addr) error {
	if !peer.IsValid() {
		return nil
	}
	if err := notAHost("--peer", peer); err != nil {
		return err
	}
	if peer.IsLinkLocalUnicast() {
		if peer.Zone() == "" {
			return fmt.Errorf("--peer %s is link-local and names no interface: write %s%%IFACE (the interface that faces it)", peer, peer)
		}
		if _, ok := h.Link(peer.Zone()); !ok {
			return fmt.Errorf("--peer %s: no interface %s on this host", peer, peer.Zone())
		}
		return nil
	}
	if err := inOwn("--peer", n, peer); err != nil {
		return err
	}
	for _, l := range h.Links {
		if slices.ContainsFunc(l.Addrs, func(a netip.Prefix) bool { return a.Addr() == peer }) {
			return fmt.Errorf("--peer %s is this host's own address (on %s): name an address of the hosts that need the route", peer, l.Name)
		}
	}
	return nil
}

func familyName(f model.Family) string {
	if f == model.IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// routeLine is the command that routes sub via v, in the peer's syntax.
func routeLine(sub netip.Prefix, v netip.Addr, forOS string) string {
	switch {
	case forOS == "windows" && sub.Addr().Is6():
		return fmt.Sprintf("route -p add %s %s", sub, v)
	case forOS == "windows":
		return fmt.Sprintf("route -p add %s mask %s %s", sub.Addr(), maskString(sub.Bits()), v)
	case sub.Addr().Is6():
		return fmt.Sprintf("ip -6 route add %s via %s", sub, v)
	}
	return fmt.Sprintf("ip route add %s via %s", sub, v)
}

func maskString(bits int) string {
	v := ^uint32(0) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// facing is the host's address of family f on the interface facing the
// peers: the one whose subnet holds peer (of either family: the interface
// that holds it faces the peers, and its address of family f is the next
// hop), or with no peer, the one of the interface of the family's default
// route.
func facing(h model.Host, f model.Family, peer netip.Addr, bridge string) (netip.Addr, error) {
	if peer.IsValid() {
		for _, l := range h.Links {
			// A link-local peer's zone names the interface facing it.
			holds := peer.Zone() == l.Name
			if !peer.IsLinkLocalUnicast() {
				holds = slices.ContainsFunc(l.Addrs, func(a netip.Prefix) bool { return a.Masked().Contains(peer) })
			}
			if l.Name == bridge || !holds {
				continue
			}
			for _, a := range l.Addrs {
				if model.FamilyOf(a.Addr()) == f && !a.Addr().IsLinkLocalUnicast() &&
					(f != model.FamilyOf(peer) || peer.IsLinkLocalUnicast() || a.Masked().Contains(peer)) {
					return a.Addr(), nil
				}
			}
			return netip.Addr{}, fmt.Errorf("%s, which faces %s, has no static %s address: give --via", l.Name, peer, familyName(f))
		}
		return netip.Addr{}, fmt.Errorf("no interface holds a subnet with %s: give --via", peer)
	}
	for _, r := range h.Routes {
		if r.Dst.Bits() != 0 || model.FamilyOf(r.Dst.Addr()) != f {
			continue
		}
		if l, ok := h.Link(r.Dev); ok {
			for _, a := range l.Addrs {
				if model.FamilyOf(a.Addr()) == f {
					return a.Addr(), nil
				}
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("no %s default route on an interface with a static %s address, to tell which address faces the peers: give --via or --peer", familyName(f), familyName(f))
}

// NetworkStatus is one network as status shows it.
type NetworkStatus struct {
	Name    string         `json:"name"`
	Mode    model.Mode     `json:"mode"`
	Bridge  string         `json:"bridge"`
	Present bool           `json:"present"`
	Up      bool           `json:"up"`
	MTU     int            `json:"mtu,omitempty"`
	Addrs   []netip.Prefix `json:"addrs,omitempty"`
	Ports   []string       `json:"ports,omitempty"`
	Uplink  string         `json:"uplink,omitempty"`
	Rules   int            `json:"rules"`
	// Forwards counts the network's declared forwards and the map elements
	// they are in the kernel (one per source, listen address and port).
	Forwards   int `json:"forwards"`
	ForwardsIn int `json:"forward_elements_in_kernel"`
	// Guard says, for each guest port, what it may send from.
	Guard []PortGuard `json:"port_guard,omitempty"`
	// VXLAN is a stretched network's VXLAN device; VXLANDrops the frames
	// kept off it lately (DHCP, ARP for the gateway, the gateway MAC),
	// each way.
	VXLAN      string            `json:"vxlan,omitempty"`
	VXLANDrops []model.VXLANDrop `json:"vxlan_drops,omitempty"`
}

// Status is guestnet's view of one namespace.
type Status struct {
	Networks   []NetworkStatus `json:"networks"`
	IPForward  bool            `json:"ip_forward"`
	IP6Forward bool            `json:"ip6_forward"`
	// RAUplinks are the interfaces that learn routes from router
	// advertisements, with their accept_ra; AcceptRARaised names those
	// guestnet raised to 2 for IPv6 forwarding (destroy puts them back).
	RAUplinks      []model.RAUplink     `json:"ra_uplinks,omitempty"`
	AcceptRARaised []string             `json:"accept_ra_raised,omitempty"`
	BridgeNF       bool                 `json:"bridge_nf_call_iptables"`
	Rules          int                  `json:"rules"`
	DockerUser     int                  `json:"docker_user_rules"`
	Foreign        []model.ForeignChain `json:"foreign_drop_chains,omitempty"`
	// SpoofDropped counts frames the anti-spoofing table dropped: spoofed
	// sources, and frames of bound ports that are neither IPv4 nor ARP.
	SpoofDropped uint64 `json:"spoofed_frames_dropped"`
	// VXLANDropped counts frames kept off the VXLAN ports of stretched
	// networks: each host answers DHCP and for the gateway on its own.
	VXLANDropped uint64 `json:"vxlan_frames_dropped,omitempty"`
}

// MakeStatus combines the state file and the observed host.
func MakeStatus(st state.State, h model.Host) Status {
	s := Status{IPForward: h.IPForward, BridgeNF: h.BridgeNFCallIPTables, Rules: h.Ruleset.RuleCount(),
		DockerUser: len(h.Ruleset.DockerUser) + len(h.Ruleset.DockerUser6), Foreign: h.Foreign.ForwardDrop, SpoofDropped: h.Guard.Dropped, VXLANDropped: h.Guard.VXLANDropped}
	s.IP6Forward, s.RAUplinks = h.IP6Forward, h.RAUplinks
	s.AcceptRARaised = slices.Sorted(maps.Keys(st.AcceptRAWas))
	for _, n := range st.Sorted() {
		ns := NetworkStatus{Name: n.Name, Mode: n.Mode, Bridge: n.Bridge, Uplink: n.Uplink}
		if l, ok := h.Link(n.Bridge); ok {
			ns.Present, ns.Up, ns.MTU, ns.Addrs = true, l.Up, l.MTU, l.Addrs
		}
		for _, l := range h.Links {
			if l.Master == n.Bridge {
				ns.Ports = append(ns.Ports, l.Name)
				if !n.Infra(l.Name) {
					ns.Guard = append(ns.Guard, portGuard(n, l.Name, h.Guard))
				}
			}
		}
		if n.Stretched() {
			ns.VXLAN = model.VXLANName(n.VXLAN.VNI)
			ns.VXLANDrops = h.Guard.VXLANDropsOf(ns.VXLAN)
		}
		// The network's rules are those of its own chains (the base
		// chains only dispatch to them).
		for _, name := range []string{model.ChainTo(n.Name), model.ChainFrom(n.Name), model.ChainInput(n.Name), model.ChainDNS(n.Name), model.ChainNAT(n.Name)} {
			if c, ok := h.Ruleset.Chain(name); ok {
				ns.Rules += len(c.Rules)
			}
		}
		ns.Forwards = len(n.Forwards)
		for _, pf := range n.Forwards {
			for _, e := range pf.Elements() {
				if slices.Contains(h.Ruleset.Forwards, e) {
					ns.ForwardsIn++
				}
			}
		}
		s.Networks = append(s.Networks, ns)
	}
	return s
}

// Text renders the status for a person.
func (s Status) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-12s %-9s %-15s %-5s %-20s %-5s %-8s %s\n", "NETWORK", "MODE", "BRIDGE", "STATE", "ADDRESS", "RULES", "FORWARDS", "PORTS")
	for _, n := range s.Networks {
		st := "down"
		switch {
		case !n.Present:
			st = "MISSING"
		case n.Up:
			st = "up"
		}
		addrs := make([]string, len(n.Addrs))
		for i, a := range n.Addrs {
			addrs[i] = a.String()
		}
		ports := strings.Join(n.Ports, ",")
		if ports == "" {
			ports = "-"
		}
		a := strings.Join(addrs, ",")
		if a == "" {
			a = "-"
		}
		fmt.Fprintf(&b, "%-12s %-9s %-15s %-5s %-20s %-5d %-8d %s\n", n.Name, n.Mode, n.Bridge, st, a, n.Rules, n.Forwards, ports)
	}
	onoff := map[bool]string{true: "on", false: "off"}
	fmt.Fprintf(&b, "\nip_forward: %s   ipv6 forwarding: %s   bridge-nf-call-iptables: %s   rules owned: %d (table inet %s) + %d (DOCKER-USER)\n",
		onoff[s.IPForward], onoff[s.IP6Forward], onoff[s.BridgeNF], s.Rules-s.DockerUser, model.Table, s.DockerUser)
	for _, u := range s.RAUplinks {
		note := ""
		switch {
		case slices.Contains(s.AcceptRARaised, u.Name):
			note = " (raised by guestnet so IPv6 forwarding keeps its RA-learned routes; destroy puts it back)"
		case u.AcceptRA == 1 && s.IP6Forward:
			note = " (IPv6 forwarding is on: the kernel ignores this interface's router advertisements, and its RA-learned routes expire; accept_ra=2 keeps them)"
		}
		fmt.Fprintf(&b, "router advertisements on %s: accept_ra %d%s\n", u.Name, u.AcceptRA, note)
	}
	for _, f := range s.Foreign {
		fmt.Fprintf(&b, "foreign chain that drops by policy: %s\n", f.Name)
	}
	guardText(&b, s)
	return b.String()
}
