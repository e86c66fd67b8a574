package daemon

import (
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// IPv6 anti-spoofing of ports guestnet did not attach: plan puts in set
// guests6 only the ports `guestnet attach` put in a first-come bridge, and
// the kernel here has no meta ibrname to tell the rules a port's bridge.
// A port another tool adds (libvirt's vnetN, `ip link set tapX master
// gnat0`) would get no IPv6 check: its guest could send router
// advertisements to its neighbours. The daemon, which follows the links
// (a link event makes a repair, then this sync), puts every other port of
// a first-come bridge in its own sets guests6_learned and
// prefixes6_learned, and takes it out when it leaves the bridge.

// learnedGuests6 are the elements of guests6_learned and prefixes6_learned:
// the ports of the first-come networks' bridges (masters: port -> its
// bridge) that are not declared first-come ports already, nor its uplink
// or VXLAN device (model.Network.Infra: they carry no guest of this host,
// and status lists neither as a guest port), with each network's claim
// prefixes.
func learnedGuests6(nets []model.Network, masters map[string]portLink, declared []string) model.Elems {
	firstCome := map[string]model.Network{} // by bridge
	for _, n := range nets {
		if n.FirstCome() {
			firstCome[n.Bridge] = n
		}
	}
	var e model.Elems
	for port, m := range masters {
		n, ok := firstCome[m.bridge]
		if !ok || n.Infra(port) || slices.Contains(declared, port) {
			continue
		}
		e.Guests6 = append(e.Guests6, port)
		e.Prefixes6 = append(e.Prefixes6, n.ClaimPrefixes(port)...)
	}
	slices.Sort(e.Guests6)
	e.Prefixes6 = model.SortPortPrefixes(e.Prefixes6)
	return e
}

// learnedElems are all the elements of the daemon's sets: those of the
// leases' bindings, and the first-come ports guestnet did not attach
// (declared: set guests6 as observed). Both are synced in one
// transaction: a sync of either alone would delete the other's.
func learnedElems(binds []model.Bind, nets []model.Network, masters map[string]portLink, declared []string) model.Elems {
	e := model.ElemsOf(binds)
	g6 := learnedGuests6(nets, masters, declared)
	e.Guests6, e.Prefixes6 = g6.Guests6, g6.Prefixes6
	e.MACPorts = nil // declared only: no learned set holds them (and a diff would find them missing at every sync)
	return e
}
