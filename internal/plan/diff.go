package plan

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/state"
)

// SysctlForward is the sysctl that turns IPv4 forwarding on.
const SysctlForward = "net.ipv4.ip_forward"

// Plan is the actions to run and the state to record once they succeed.
type Plan struct {
	Actions []Action
	State   state.State
}

// Diff returns the actions that make host h carry exactly the networks want.
// Networks guestnet owns (in st, or by link alias) that want lacks are
// removed. Order: create and configure, forwarding on, firewall, then
// removals and forwarding off, so a change adds before it deletes.
// want must already have passed spec.CheckHost against h.
func Diff(want []model.Network, st state.State, h model.Host) (Plan, error) {
	p := Plan{State: state.State{Networks: map[string]state.Net{}, ForwardingWas: st.ForwardingWas, Nft: st.Nft}}
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n.Name] = true
		saved := st.Networks[n.Name].Uplink
		acts, up := ensureNetwork(n, h, saved)
		ports, pacts := ensurePorts(n, st.Networks[n.Name].Ports, h)
		floats, facts := ensureFloats(n, st.Networks[n.Name].Floats, h)
		p.Actions = append(p.Actions, acts...)
		p.Actions = append(p.Actions, pacts...)
		p.Actions = append(p.Actions, facts...)
		p.State.Networks[n.Name] = state.Net{Network: n, Uplink: up, Ports: ports, Floats: floats, Binds: keepBinds(st.Networks[n.Name].Binds, ports)}
	}

	needFwd := slices.ContainsFunc(want, model.Network.NeedsForwarding)
	if needFwd && !h.IPForward {
		p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward, Value: "1", Old: "0"})
		p.State.ForwardingWas = "0"
	}

	rules, err := nft.Render(want, h)
	if err != nil {
		return Plan{}, err
	}
	if !rules.Equal(h.Ruleset) {
		old := h.Ruleset
		op := OpNft
		if rules.SameChains(old) {
			op = OpNftElements // only forwards changed: element updates, not a rewrite
		}
		p.Actions = append(p.Actions, Action{Op: op, Rules: &rules, OldRules: &old})
	}
	p.Actions = append(p.Actions, guardAction(WantGuard(want, p.State.Networks), h)...)

	for _, name := range removedNetworks(wanted, st, h) {
		p.Actions = append(p.Actions, removeNetwork(name, st.Networks[name], h)...)
	}

	if !needFwd && st.ForwardingWas == "0" {
		if h.IPForward {
			p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward, Value: "0", Old: "1"})
		}
		p.State.ForwardingWas = ""
	}
	return p, nil
}

// removedNetworks names the networks guestnet owns that are no longer wanted.
func removedNetworks(wanted map[string]bool, st state.State, h model.Host) []string {
	gone := map[string]bool{}
	for name := range st.Networks {
		if !wanted[name] {
			gone[name] = true
		}
	}
	for _, l := range h.Links {
		if o := l.Owner(); o != "" && !wanted[o] {
			gone[o] = true
		}
	}
	return slices.Sorted(maps.Keys(gone))
}

// ensureNetwork returns the actions that create or repair one network's
// bridge, and the uplink record to keep for a bridge-mode network.
func ensureNetwork(n model.Network, h model.Host, saved *state.Uplink) ([]Action, *state.Uplink) {
	var acts []Action
	br, exists := h.Link(n.Bridge)
	var uplink model.Link
	if n.Mode == model.Bridge {
		uplink, _ = h.Link(n.Uplink)
	}
	if !exists {
		a := Action{Op: OpBridgeAdd, Link: n.Bridge, Alias: model.OwnerAlias(n.Name), MTU: n.MTU, MAC: model.BridgeMAC(n.Name)}
		if n.GuestBridge() {
			a.IfGroup = model.GuestGroup
		}
		if n.Mode == model.Bridge {
			// Same MAC and MTU as the NIC: the LAN's ARP caches stay right.
			a.MAC = uplink.MAC
			if a.MTU == 0 {
				a.MTU = uplink.MTU
			}
		}
		acts = append(acts, a)
	} else {
		if n.MTU != 0 && br.MTU != n.MTU {
			acts = append(acts, Action{Op: OpMTU, Link: n.Bridge, MTU: n.MTU, OldMTU: br.MTU})
		}
		if want := map[bool]uint32{true: model.GuestGroup}[n.GuestBridge()]; br.Group != want {
			acts = append(acts, Action{Op: OpGroup, Link: n.Bridge, IfGroup: want, OldGroup: br.Group})
		}
	}
	if !br.Up {
		acts = append(acts, Action{Op: OpLinkUp, Link: n.Bridge})
	}
	if n.Mode == model.Bridge {
		if uplink.Master == n.Bridge {
			return acts, saved
		}
		move, up := moveUplink(n, uplink, h)
		return append(acts, move...), up
	}
	var want []netip.Prefix
	if n.IPv4.IsValid() {
		want = append(want, n.IPv4)
	}
	for _, a := range want {
		if !slices.Contains(br.Addrs, a) {
			acts = append(acts, Action{Op: OpAddrAdd, Link: n.Bridge, Addr: a, Brd: model.Broadcast(a)})
		}
	}
	for _, a := range br.Addrs {
		if !slices.Contains(want, a) {
			acts = append(acts, Action{Op: OpAddrDel, Link: n.Bridge, Addr: a, Brd: br.Brd[a]})
		}
	}
	return acts, nil
}

// moveUplink puts a NIC into the bridge and moves its addresses and routes
// to the bridge. Routes are deleted before the addresses they depend on and
// re-added after, so the undo journal can put every one of them back.
func moveUplink(n model.Network, up model.Link, h model.Host) ([]Action, *state.Uplink) {
	rec := &state.Uplink{Name: up.Name, Addrs: slices.Clone(up.Addrs), Brd: maps.Clone(up.Brd), Routes: h.RoutesVia(up.Name)}
	var acts []Action
	for _, r := range rec.Routes {
		acts = append(acts, Action{Op: OpRouteDel, Route: r})
	}
	for _, a := range rec.Addrs {
		acts = append(acts, Action{Op: OpAddrDel, Link: up.Name, Addr: a, Brd: up.Brd[a]})
	}
	acts = append(acts, Action{Op: OpMaster, Link: up.Name, Master: n.Bridge, OldMaster: up.Master})
	for _, a := range rec.Addrs {
		acts = append(acts, Action{Op: OpAddrAdd, Link: n.Bridge, Addr: a, Brd: up.Brd[a]})
	}
	for _, r := range rec.Routes {
		r.Dev, r.Proto = n.Bridge, model.RouteProto
		acts = append(acts, Action{Op: OpRouteAdd, Route: r})
	}
	return acts, rec
}

// removeNetwork returns the actions that undo a network: ports out, the
// uplink's addresses and routes back, the bridge gone. Each step is one the
// journal can reverse, so a failed destroy leaves the network as it was.
func removeNetwork(name string, rec state.Net, h model.Host) []Action {
	var acts []Action
	for _, br := range h.Links {
		if br.Owner() != name {
			continue
		}
		for _, r := range h.Routes {
			if r.Dev == br.Name && r.Proto == model.RouteProto {
				acts = append(acts, Action{Op: OpRouteDel, Route: r})
			}
		}
		for _, a := range br.Addrs {
			acts = append(acts, Action{Op: OpAddrDel, Link: br.Name, Addr: a, Brd: br.Brd[a]})
		}
		for _, port := range h.Links {
			if port.Master == br.Name {
				acts = append(acts, Action{Op: OpMaster, Link: port.Name, OldMaster: br.Name})
			}
		}
		if br.Up {
			acts = append(acts, Action{Op: OpLinkDown, Link: br.Name})
		}
		acts = append(acts, Action{Op: OpLinkDel, Link: br.Name, Alias: br.Alias, MAC: br.MAC, MTU: br.MTU, IfGroup: br.Group})
	}
	acts = append(acts, dropFloats(rec.Floats, nil, h)...)
	if up := rec.Uplink; up != nil {
		if nic, ok := h.Link(up.Name); ok {
			for _, a := range up.Addrs {
				if !slices.Contains(nic.Addrs, a) {
					acts = append(acts, Action{Op: OpAddrAdd, Link: up.Name, Addr: a, Brd: up.Brd[a]})
				}
			}
			for _, r := range up.Routes {
				if !slices.Contains(h.Routes, r) {
					acts = append(acts, Action{Op: OpRouteAdd, Route: r})
				}
			}
		}
	}
	return acts
}

// ensurePorts puts attached guest interfaces that lost their bridge (it was
// deleted and made again) back into it. Ports that are gone are forgotten;
// a port someone moved to another bridge is left alone.
func ensurePorts(n model.Network, ports []string, h model.Host) ([]string, []Action) {
	var keep []string
	var acts []Action
	for _, name := range ports {
		l, ok := h.Link(name)
		if !ok {
			continue
		}
		keep = append(keep, name)
		if l.Master != "" {
			continue
		}
		acts = append(acts, Action{Op: OpMaster, Link: name, Master: n.Bridge})
		if !l.Up {
			acts = append(acts, Action{Op: OpLinkUp, Link: name})
		}
	}
	return keep, acts
}

// ensureFloats puts each floating address on its uplink as a /32, so the
// host answers ARP for it there, and takes off the ones no longer declared.
func ensureFloats(n model.Network, had []state.Float, h model.Host) ([]state.Float, []Action) {
	var want []state.Float
	var acts []Action
	for _, fl := range n.Floating {
		link, ok := h.FloatingUplink(fl)
		if !ok {
			continue // spec.CheckHost reported it
		}
		f := state.Float{Link: link, Addr: netip.PrefixFrom(fl.Public, 32)}
		want = append(want, f)
		if l, _ := h.Link(link); !slices.Contains(l.Addrs, f.Addr) {
			acts = append(acts, Action{Op: OpAddrAdd, Link: link, Addr: f.Addr})
		}
	}
	return want, append(acts, dropFloats(had, want, h)...)
}

// dropFloats removes recorded floating addresses that are not in keep.
func dropFloats(had, keep []state.Float, h model.Host) []Action {
	var acts []Action
	for _, f := range had {
		if slices.Contains(keep, f) {
			continue
		}
		if l, ok := h.Link(f.Link); ok && slices.Contains(l.Addrs, f.Addr) {
			acts = append(acts, Action{Op: OpAddrDel, Link: f.Link, Addr: f.Addr})
		}
	}
	return acts
}

// keepBinds keeps the bindings of the ports still attached.
func keepBinds(binds map[string]model.PortBind, ports []string) map[string]model.PortBind {
	var out map[string]model.PortBind
	for _, p := range ports {
		if b, ok := binds[p]; ok {
			if out == nil {
				out = map[string]model.PortBind{}
			}
			out[p] = b
		}
	}
	return out
}
