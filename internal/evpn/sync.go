package evpn

import (
	"fmt"
	"net/netip"
)

// Observed is what the kernel holds for the stretched networks: the
// guests the bridges learned locally and the entries guestnet installed
// (told from the others by their marks, see Linux.Read).
type Observed struct {
	// Local are the MACs learned on bridge ports other than the VXLAN
	// device, with the addresses the bridge's neighbour table gives them.
	Local []Guest
	// Flood are the VXLAN devices' all-zero entries (every one is
	// guestnet's: the device is).
	Flood []Flood
	// MACs are the VXLAN devices' own extern_learn entries of a MAC, with
	// their VTEP; Bridge is empty.
	MACs []RemoteMAC
	// Masters are the bridges' extern_learn entries on a VXLAN port (VTEP
	// invalid).
	Masters []RemoteMAC
	// Neighs are the bridges' extern_learn neighbour entries.
	Neighs []Neigh
	// Links are the indexes of the bridges and VXLAN devices read: their
	// notifications are the ones that may change the decision.
	Links []int
}

// OpKind is what an Op does.
type OpKind int

const (
	FloodAdd OpKind = iota
	MACSet          // the VXLAN device's entry (dst VTEP) and the bridge's (on the VXLAN port)
	NeighSet
	FloodDel
	MACDel
	NeighDel
)

// Op is one change of the kernel's entries.
type Op struct {
	Kind  OpKind
	Flood Flood
	MAC   RemoteMAC
	Neigh Neigh
}

// String is the command-line equivalent.
func (o Op) String() string {
	switch o.Kind {
	case FloodAdd:
		return fmt.Sprintf("bridge fdb append 00:00:00:00:00:00 dev %s dst %s self permanent", o.Flood.Device, o.Flood.VTEP)
	case FloodDel:
		return fmt.Sprintf("bridge fdb del 00:00:00:00:00:00 dev %s dst %s self", o.Flood.Device, o.Flood.VTEP)
	case MACSet:
		return fmt.Sprintf("bridge fdb replace %s dev %s dst %s self static extern_learn && bridge fdb replace %s dev %s master extern_learn",
			o.MAC.MAC, o.MAC.Device, o.MAC.VTEP, o.MAC.MAC, o.MAC.Device)
	case MACDel:
		self := fmt.Sprintf("bridge fdb del %s dev %s dst %s self; ", o.MAC.MAC, o.MAC.Device, o.MAC.VTEP)
		if !o.MAC.VTEP.IsValid() {
			self = ""
		}
		return fmt.Sprintf("%sbridge fdb del %s dev %s master", self, o.MAC.MAC, o.MAC.Device)
	case NeighSet:
		return fmt.Sprintf("ip neigh replace %s lladdr %s dev %s nud noarp extern_learn", o.Neigh.IP, o.Neigh.MAC, o.Neigh.Bridge)
	case NeighDel:
		return fmt.Sprintf("ip neigh del %s dev %s", o.Neigh.IP, o.Neigh.Bridge)
	}
	return fmt.Sprintf("op %d", o.Kind)
}

// Plan is what brings the kernel from have to want: what is missing or
// changed first, then the deletion of what guestnet installed and want
// no longer has. It never names an entry guestnet did not install.
func Plan(want Install, have Observed) []Op {
	want.Sort()
	var adds, dels []Op
	floods := map[Flood]bool{}
	for _, f := range have.Flood {
		floods[f] = true
	}
	for _, f := range want.Flood {
		if !floods[f] {
			adds = append(adds, Op{Kind: FloodAdd, Flood: f})
		}
		delete(floods, f)
	}
	for _, f := range have.Flood {
		if floods[f] {
			dels = append(dels, Op{Kind: FloodDel, Flood: f})
			delete(floods, f) // a duplicate in the dump
		}
	}

	type devMAC struct{ dev, mac string }
	self := map[devMAC]netip.Addr{}
	for _, m := range have.MACs {
		self[devMAC{m.Device, m.MAC}] = m.VTEP
	}
	master := map[devMAC]bool{}
	for _, m := range have.Masters {
		master[devMAC{m.Device, m.MAC}] = true
	}
	wanted := map[devMAC]bool{}
	for _, m := range want.MACs {
		k := devMAC{m.Device, m.MAC}
		wanted[k] = true
		if self[k] != m.VTEP || !master[k] {
			adds = append(adds, Op{Kind: MACSet, MAC: m})
		}
	}
	for _, m := range have.MACs {
		if k := (devMAC{m.Device, m.MAC}); !wanted[k] {
			dels = append(dels, Op{Kind: MACDel, MAC: RemoteMAC{Device: m.Device, MAC: m.MAC, VTEP: m.VTEP}})
			wanted[k] = true // its master entry goes with it
		}
	}
	for _, m := range have.Masters {
		if k := (devMAC{m.Device, m.MAC}); !wanted[k] {
			dels = append(dels, Op{Kind: MACDel, MAC: RemoteMAC{Device: m.Device, MAC: m.MAC}})
			wanted[k] = true
		}
	}

	type brIP struct {
		br string
		ip netip.Addr
	}
	neighs := map[brIP]string{}
	for _, n := range have.Neighs {
		neighs[brIP{n.Bridge, n.IP}] = n.MAC
	}
	keep := map[brIP]bool{}
	for _, n := range want.Neighs {
		k := brIP{n.Bridge, n.IP}
		keep[k] = true
		if neighs[k] != n.MAC {
			adds = append(adds, Op{Kind: NeighSet, Neigh: n})
		}
	}
	for _, n := range have.Neighs {
		if k := (brIP{n.Bridge, n.IP}); !keep[k] {
			dels = append(dels, Op{Kind: NeighDel, Neigh: n})
			keep[k] = true
		}
	}
	return append(adds, dels...)
}
