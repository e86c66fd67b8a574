package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PortMAC is an element of sets port_macs and learned_port_macs: a MAC
// bound to a port. Set macs (learned_macs) holds the same MACs without
// their ports, so that a frame can be asked both "is its MAC bound at all"
// and "is it bound to the port the frame came from".
type PortMAC struct {
	Port string `json:"port"`
	MAC  string `json:"mac"`
}

func (p PortMAC) String() string { return fmt.Sprintf("%q . %s", p.Port, p.MAC) }

// Elems are the elements of one owner's sets: the declared ones (ports,
// bound, macs, port_macs) or the learned ones (learned_ports, learned,
// learned_macs, learned_port_macs). All four follow from the bindings:
// see ElemsOf.
type Elems struct {
	Ports    []string
	Binds    []Bind // of both families: the IPv6 ones are set bound6's
	MACs     []string
	PortMACs []PortMAC
	// The first-come guest ports and their prefixes: declared from the
	// networks' attached ports, learned (sets guests6_learned,
	// prefixes6_learned) from the bridges' other ports by the daemon.
	// Declared only: the ports and addresses of the IPv6 bindings.
	Guests6   []string
	Prefixes6 []PortPrefix
	Ports6    []string
	Held6     []netip.Addr
	MACPorts  []string // the ports of PortMACs
	// Claims6 are first-come claims (sets claims6 and claimed6) the daemon
	// adds (a DHCPv6 lease, for Left) or removes (a port that left its
	// bridge) through Learn; plan never declares any.
	Claims6 []Claim6
	// Declared only: the stretched networks' VXLAN ports, gateway
	// addresses and MACs (guardvxlan.go).
	VXLANPorts    []string
	VXLANGateways []netip.Addr
	VXLANMACs     []string
}

// ElemsOf are the elements that bindings make: the distinct ports, the
// bindings themselves, and the MACs they name with their ports (a binding
// to any MAC owns none). Everything sorted and without duplicates.
func ElemsOf(bs []Bind) Elems {
	e := Elems{Binds: SortBinds(slices.Clone(bs)), Ports: Ports(bs)}
	for _, b := range e.Binds {
		if b.MAC != "" {
			e.MACs = append(e.MACs, b.MAC)
			e.PortMACs = append(e.PortMACs, PortMAC{b.Port, b.MAC})
		}
	}
	slices.Sort(e.MACs)
	e.MACs = slices.Compact(e.MACs)
	e.PortMACs = SortPortMACs(e.PortMACs)
	for _, b := range e.Binds {
		if FamilyOf(b.IP) == IPv6 {
			e.Ports6 = append(e.Ports6, b.Port)
			e.Held6 = append(e.Held6, b.IP)
		}
	}
	slices.Sort(e.Ports6)
	e.Ports6 = slices.Compact(e.Ports6)
	slices.SortFunc(e.Held6, netip.Addr.Compare)
	e.Held6 = slices.Compact(e.Held6)
	for _, p := range e.PortMACs {
		e.MACPorts = append(e.MACPorts, p.Port)
	}
	e.MACPorts = slices.Compact(e.MACPorts) // sorted with PortMACs
	return e
}

// SortPortMACs sorts and removes duplicates.
func SortPortMACs(ps []PortMAC) []PortMAC {
	slices.SortFunc(ps, func(a, b PortMAC) int {
		return cmp.Or(strings.Compare(a.Port, b.Port), strings.Compare(a.MAC, b.MAC))
	})
	return slices.Compact(ps)
}

// Equal compares element by element (both sorted).
func (e Elems) Equal(o Elems) bool {
	return slices.Equal(e.Ports, o.Ports) && slices.Equal(e.Binds, o.Binds) &&
		slices.Equal(e.MACs, o.MACs) && slices.Equal(e.PortMACs, o.PortMACs) &&
		slices.Equal(e.Guests6, o.Guests6) && slices.Equal(e.Prefixes6, o.Prefixes6) &&
		slices.Equal(e.Ports6, o.Ports6) && slices.Equal(e.Held6, o.Held6) && slices.Equal(e.Claims6, o.Claims6) &&
		slices.Equal(e.MACPorts, o.MACPorts) && slices.Equal(e.VXLANPorts, o.VXLANPorts) &&
		slices.Equal(e.VXLANGateways, o.VXLANGateways) && slices.Equal(e.VXLANMACs, o.VXLANMACs)
}

// Len counts the elements.
func (e Elems) Len() int {
	return len(e.Ports) + len(e.Binds) + len(e.MACs) + len(e.PortMACs) +
		len(e.Guests6) + len(e.Prefixes6) + len(e.Ports6) + len(e.Held6) + len(e.Claims6) + len(e.MACPorts) +
		len(e.VXLANPorts) + len(e.VXLANGateways) + len(e.VXLANMACs)
}

// DiffElems returns the elements of cur that old lacks, and the reverse.
func DiffElems(old, cur Elems) (add, del Elems) {
	add.Ports, del.Ports = Diff(old.Ports, cur.Ports)
	add.Binds, del.Binds = Diff(old.Binds, cur.Binds)
	add.MACs, del.MACs = Diff(old.MACs, cur.MACs)
	add.PortMACs, del.PortMACs = Diff(old.PortMACs, cur.PortMACs)
	add.Guests6, del.Guests6 = Diff(old.Guests6, cur.Guests6)
	add.Prefixes6, del.Prefixes6 = Diff(old.Prefixes6, cur.Prefixes6)
	add.Ports6, del.Ports6 = Diff(old.Ports6, cur.Ports6)
	add.Held6, del.Held6 = Diff(old.Held6, cur.Held6)
	add.MACPorts, del.MACPorts = Diff(old.MACPorts, cur.MACPorts)
	add.VXLANPorts, del.VXLANPorts = Diff(old.VXLANPorts, cur.VXLANPorts)
	add.VXLANGateways, del.VXLANGateways = Diff(old.VXLANGateways, cur.VXLANGateways)
	add.VXLANMACs, del.VXLANMACs = Diff(old.VXLANMACs, cur.VXLANMACs)
	return add, del
}

// Declared are the elements plan owns.
func (g Guard) Declared() Elems {
	return Elems{Ports: g.Ports, Binds: g.Bound, MACs: g.MACs, PortMACs: g.PortMACs, Guests6: g.Guests6, Prefixes6: g.Prefixes6,
		Ports6: g.Ports6, Held6: g.Held6, MACPorts: g.MACPorts, VXLANPorts: g.VXLANPorts, VXLANGateways: g.VXLANGateways, VXLANMACs: g.VXLANMACs}
}

// LearnedElems are the elements the daemon owns, as observed.
func (g Guard) LearnedElems() Elems {
	return Elems{Ports: g.LearnedPorts, Binds: g.Learned, MACs: g.LearnedMACs, PortMACs: g.LearnedPortMACs,
		Guests6: g.LearnedGuests6, Prefixes6: g.LearnedPrefixes6}
}

// SetDeclared makes the declared elements those of the bindings.
func (g *Guard) SetDeclared(bs []Bind) {
	e := ElemsOf(bs)
	g.Ports, g.Bound, g.MACs, g.PortMACs = e.Ports, e.Binds, e.MACs, e.PortMACs
	g.Ports6, g.Held6, g.MACPorts = e.Ports6, e.Held6, e.MACPorts
}

// SetFirstCome makes the first-come ports and their prefixes those of
// the guest ports of the networks (ports: network -> its attached ports).
func (g *Guard) SetFirstCome(nets []Network, ports map[string][]string) {
	g.Guests6, g.Prefixes6 = nil, nil
	for _, n := range nets {
		if !n.FirstCome() {
			continue
		}
		for _, p := range ports[n.Name] {
			g.Guests6 = append(g.Guests6, p)
			g.Prefixes6 = append(g.Prefixes6, n.ClaimPrefixes(p)...)
		}
	}
	slices.Sort(g.Guests6)
	g.Guests6 = slices.Compact(g.Guests6)
	g.Prefixes6 = SortPortPrefixes(g.Prefixes6)
}

// WithDeclared is g's presence and integrity with the declared elements e.
func (g Guard) WithDeclared(e Elems) Guard {
	return Guard{On: g.On, Broken: g.Broken, Ports: e.Ports, Bound: e.Binds, MACs: e.MACs, PortMACs: e.PortMACs,
		Guests6: e.Guests6, Prefixes6: e.Prefixes6, Ports6: e.Ports6, Held6: e.Held6, MACPorts: e.MACPorts,
		VXLANPorts: e.VXLANPorts, VXLANGateways: e.VXLANGateways, VXLANMACs: e.VXLANMACs}
}
