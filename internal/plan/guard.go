package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// OpGuard makes table bridge guestnet (anti-spoofing) exactly Guard: it
// creates or deletes the table, or changes only the declared elements.
const OpGuard Op = "guard"

// WantGuard is the anti-spoofing table the networks need: there is one
// when any network is guarded or stretched, holding the declared bindings
// of its ports and the VXLAN ports of the stretched networks, with their
// gateways (model.SetVXLAN).
// A port bound by MAC alone gets the addresses of that MAC's DHCP static
// hosts; with none, it may send only DHCP until guestnet's DHCP server
// leases it an address (the daemon binds that), or, on a network without
// DHCP, any address from that MAC.
func WantGuard(nets []model.Network, st map[string]state.Net) model.Guard {
	var g model.Guard
	var binds []model.Bind
	for _, n := range nets {
		if n.Stretched() {
			g.On = true // its VXLAN port's rules, guarded or not
		}
		if !n.Guarded() {
			continue
		}
		g.On = true
		rec := st[n.Name]
		for _, port := range rec.Ports {
			b, ok := rec.Binds[port]
			if !ok {
				continue
			}
			binds = append(binds, Binds(n, port, b)...)
		}
	}
	g.SetDeclared(binds)
	ports := map[string][]string{}
	for _, n := range nets {
		ports[n.Name] = st[n.Name].Ports
	}
	g.SetFirstCome(nets, ports)
	g.SetVXLAN(nets)
	return g
}

// Binds are the set elements of one bound port.
// Each family is bound by the addresses listed of it: a port bound to
// IPv6 addresses alone is, for IPv4, bound as by --mac alone, and a port
// bound to no IPv6 address claims its IPv6 ones first-come (model.guard6).
func Binds(n model.Network, port string, b model.PortBind) []model.Bind {
	var ips, ips6 []netip.Addr
	for _, a := range b.IPs {
		if model.FamilyOf(a) == model.IPv6 {
			ips6 = append(ips6, a)
		} else {
			ips = append(ips, a)
		}
	}
	var v6 []model.Bind
	for _, a := range ips6 {
		v6 = append(v6, model.Bind{Port: port, MAC: b.MAC, IP: a})
	}
	return append(binds4(n, port, b.MAC, ips), v6...)
}

// binds4 are the IPv4 elements of a bound port.
func binds4(n model.Network, port, mac string, ips []netip.Addr) []model.Bind {
	b := model.PortBind{MAC: mac}
	if len(ips) == 0 && n.DHCP != nil {
		for _, h := range n.DHCP.Hosts {
			if h.MAC == b.MAC {
				ips = append(ips, h.IP)
			}
		}
	}
	if len(ips) == 0 && n.DHCP == nil {
		return []model.Bind{{Port: port, MAC: b.MAC}} // MAC only: any address
	}
	out := []model.Bind{{Port: port, MAC: b.MAC, IP: netip.IPv4Unspecified()}}
	for _, ip := range ips {
		out = append(out, model.Bind{Port: port, MAC: b.MAC, IP: ip})
	}
	return out
}

// guardAction returns the action that turns the observed guard table into
// want, if they differ.
func guardAction(want model.Guard, h model.Host) []Action {
	if want.Equal(h.Guard) {
		return nil
	}
	old := h.Guard.WithDeclared(h.Guard.Declared()) // the learned elements are the daemon's
	return []Action{{Op: OpGuard, Guard: &want, OldGuard: &old}}
}

// GuardFor is the action that brings the guard table in line with a state
// whose bindings changed (attach, detach), or nothing.
func GuardFor(st state.State, h model.Host) []Action {
	return guardAction(WantGuard(st.Sorted(), st.Networks), h)
}

func guardString(a Action) string {
	switch {
	case !a.Guard.On:
		return "nft delete table bridge " + model.Table
	case a.OldGuard.On && !a.OldGuard.Broken:
		add, del := model.DiffElems(a.OldGuard.Declared(), a.Guard.Declared())
		return fmt.Sprintf("nft add/delete element bridge %s %s (%d added, %d deleted)", model.Table,
			strings.Join(slices.Concat(model.DeclaredSets[:], model.DeclaredSets6, model.DeclaredSetsVXLAN), ","), add.Len(), del.Len())
	}
	return fmt.Sprintf("nft -f - (create table bridge %s: anti-spoofing of bound guest ports, %d bindings)", model.Table, len(a.Guard.Bound))
}

func guardLines(g *model.Guard) map[string]bool {
	m := map[string]bool{}
	if g == nil {
		return m
	}
	for _, b := range g.Bound {
		m["set "+model.GuardBound+": "+b.String()] = true
	}
	for _, p := range g.PortMACs {
		m["set "+model.GuardPortMACs+": "+p.String()] = true
	}
	for _, p := range g.Prefixes6 {
		m["set "+model.GuardPrefixes6+": "+p.String()] = true
	}
	return m
}
