package doctor

import (
	"fmt"

	"github.com/guestnet/guestnet/internal/model"
)

// checkVXLANDevice compares each stretched network's VXLAN device
// (model.VXLANName of its VNI) with what guestnet makes: a VXLAN device of
// the network's VNI and port, up, a port of the network's bridge, learning
// off (the device's and the bridge port's: remote MACs come from EVPN
// routes, never from the packets received) and neigh_suppress on (the
// bridge answers ARP for remote guests from its neighbour table instead of
// flooding every host). A missing bridge is the bridge check's finding.
func checkVXLANDevice(in Input) []Finding {
	var out []Finding
	for _, n := range in.stretched() {
		if _, ok := in.Host.Link(n.Bridge); !ok {
			continue
		}
		name := model.VXLANName(n.VXLAN.VNI)
		l, ok := in.Host.Link(name)
		apply := "guestnet apply (or a running guestnet serve) makes it again"
		if !ok {
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What:     fmt.Sprintf("the VXLAN device %s of %s (VNI %d) does not exist: its guests reach no guest on another host, and no broadcast crosses", name, n.Name, n.VXLAN.VNI),
				Evidence: []string{"no link " + name},
				Fix:      "guestnet apply (a running guestnet serve repairs it by itself)"})
			continue
		}
		if l.Kind != "vxlan" {
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What:     fmt.Sprintf("%s, the name of the VXLAN device of %s, is a %s, not a VXLAN device", name, n.Name, l.Kind),
				Evidence: []string{fmt.Sprintf("%s: %s", name, l.Kind)},
				Fix:      fmt.Sprintf("remove or rename that link (ip link del %s), then guestnet apply", name)})
			continue
		}
		bad := func(sev Severity, what, ev, fix string) {
			out = append(out, Finding{Severity: sev, Network: n.Name, What: what, Evidence: []string{ev}, Fix: fix})
		}
		if l.Master != n.Bridge {
			ev := name + ": no master"
			if l.Master != "" {
				ev = name + ": master " + l.Master
			}
			bad(Error, fmt.Sprintf("the VXLAN device %s is not a port of %s: the guests of %s reach no guest on another host", name, n.Bridge, n.Name),
				ev, fmt.Sprintf("ip link set %s master %s, or %s", name, n.Bridge, apply))
		}
		if !l.Up {
			bad(Error, fmt.Sprintf("the VXLAN device %s is down: the guests of %s reach no guest on another host", name, n.Name),
				name+": admin down", fmt.Sprintf("ip link set %s up, or %s", name, apply))
		}
		x := l.VXLAN
		if x == nil {
			continue // not read (an older observe): the flags are unknown
		}
		if x.VNI != n.VXLAN.VNI {
			bad(Error, fmt.Sprintf("the VXLAN device %s carries VNI %d, not %s's %d: its frames reach other hosts in another network, or nowhere", name, x.VNI, n.Name, n.VXLAN.VNI),
				fmt.Sprintf("%s: id %d", name, x.VNI), fmt.Sprintf("ip link del %s, then %s", name, apply))
		}
		if port := n.VXLAN.Port; port != 0 && x.Port != port {
			bad(Error, fmt.Sprintf("the VXLAN device %s sends to UDP port %d, not %d as the spec says: the other hosts do not receive it", name, x.Port, port),
				fmt.Sprintf("%s: dstport %d", name, x.Port), fmt.Sprintf("ip link del %s, then %s", name, apply))
		}
		if local := n.VXLAN.Local; local.IsValid() && x.Local != local {
			bad(Warning, fmt.Sprintf("the VXLAN device %s sends from %v, not from this host's VTEP %s: the other hosts know this host by %s", name, x.Local, local, local),
				fmt.Sprintf("%s: local %v", name, x.Local), fmt.Sprintf("ip link del %s, then %s", name, apply))
		}
		if x.Learning {
			bad(Warning, fmt.Sprintf("the VXLAN device %s learns remote VTEPs from the packets it receives: a stale or spoofed packet redirects a guest's MAC, against the EVPN routes", name),
				name+": learning", fmt.Sprintf("ip link del %s, then %s (nolearning)", name, apply))
		}
		if x.PortLearning {
			bad(Warning, fmt.Sprintf("the bridge %s learns MACs on its VXLAN port %s: remote guests are placed by the frames that arrive, not by their EVPN routes", n.Bridge, name),
				name+": bridge port learning on", fmt.Sprintf("bridge link set dev %s learning off, or %s", name, apply))
		}
		if !x.NeighSuppress && l.Master == n.Bridge {
			bad(Warning, fmt.Sprintf("ARP suppression is off on %s: ARP requests for remote guests are flooded to every host instead of answered from the bridge's neighbour table", name),
				name+": bridge port neigh_suppress off", fmt.Sprintf("bridge link set dev %s neigh_suppress on, or %s", name, apply))
		}
	}
	return out
}
