package plan

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// OpGuard makes table bridge guestnet (anti-spoofing) exactly Guard: it
// creates or deletes the table, or changes only the declared elements.
const OpGuard Op = "guard"

// WantGuard is the anti-spoofing table the networks need: there is one
// when any network is guarded, holding the declared bindings of its ports.
// A port bound by MAC alone gets the addresses of that MAC's DHCP static
// hosts; with none, it may send only DHCP until guestnet's DHCP server
// leases it an address (the daemon binds that), or, on a network without
// DHCP, any address from that MAC.
func WantGuard(nets []model.Network, st map[string]state.Net) model.Guard {
	var g model.Guard
	var binds []model.Bind
	for _, n := range nets {
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
	return g
}

// Binds are the set elements of one bound port.
func Binds(n model.Network, port string, b model.PortBind) []model.Bind {
	ips := b.IPs
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
	d := h.Guard.Declared() // the learned elements are the daemon's
	old := model.Guard{On: h.Guard.On, Broken: h.Guard.Broken, Ports: d.Ports, Bound: d.Binds, MACs: d.MACs, PortMACs: d.PortMACs}
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
			strings.Join(model.DeclaredSets[:], ","), add.Len(), del.Len())
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
	return m
}
