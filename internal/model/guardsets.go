package model

import (
	"cmp"
	"fmt"
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
	Binds    []Bind
	MACs     []string
	PortMACs []PortMAC
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
		slices.Equal(e.MACs, o.MACs) && slices.Equal(e.PortMACs, o.PortMACs)
}

// Len counts the elements.
func (e Elems) Len() int { return len(e.Ports) + len(e.Binds) + len(e.MACs) + len(e.PortMACs) }

// DiffElems returns the elements of cur that old lacks, and the reverse.
func DiffElems(old, cur Elems) (add, del Elems) {
	add.Ports, del.Ports = Diff(old.Ports, cur.Ports)
	add.Binds, del.Binds = Diff(old.Binds, cur.Binds)
	add.MACs, del.MACs = Diff(old.MACs, cur.MACs)
	add.PortMACs, del.PortMACs = Diff(old.PortMACs, cur.PortMACs)
	return add, del
}

// Declared are the elements plan owns.
func (g Guard) Declared() Elems { return Elems{g.Ports, g.Bound, g.MACs, g.PortMACs} }

// LearnedElems are the elements the daemon owns, as observed.
func (g Guard) LearnedElems() Elems {
	return Elems{g.LearnedPorts, g.Learned, g.LearnedMACs, g.LearnedPortMACs}
}

// SetDeclared makes the declared elements those of the bindings.
func (g *Guard) SetDeclared(bs []Bind) {
	e := ElemsOf(bs)
	g.Ports, g.Bound, g.MACs, g.PortMACs = e.Ports, e.Binds, e.MACs, e.PortMACs
}
