package plan

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/state"
)

// SysctlForward is the sysctl that turns IPv4 forwarding on.
const SysctlForward = "net.ipv4.ip_forward"

// SysctlForward6 is the sysctl that turns IPv6 forwarding on.
const SysctlForward6 = observe.SysctlForward6

// Plan is the actions to run and the state to record once they succeed.
type Plan struct {
	Actions []Action
	State   state.State
	// ObservedGen is the nftables generation read just before the host
	// was observed for this plan (set by the engine; nil if unread).
	ObservedGen *uint32 `json:"-"`
}

// Diff returns the actions that make host h carry exactly the networks want.
// Networks guestnet owns (in st, or by link alias) that want lacks are
// removed. Order: create and configure, accept_ra raised, forwarding on,
// firewall, then removals, forwarding off and accept_ra put back, so a
// change adds before it deletes.
// want must already have passed spec.CheckHost against h.
func Diff(want []model.Network, st state.State, h model.Host) (Plan, error) {
	p := Plan{State: state.State{Networks: map[string]state.Net{}, ForwardingWas: st.ForwardingWas,
		Forwarding6Was: st.Forwarding6Was, AcceptRAWas: maps.Clone(st.AcceptRAWas), Nft: st.Nft}}
	h, p.Actions = HalfMade(st, h)
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n.Name] = true
		saved := st.Networks[n.Name].Uplink
		acts, up := ensureNetwork(n, h, saved)
		ports, pacts := ensurePorts(n, st.Networks[n.Name].Ports, h)
		floats, facts := ensureFloats(n, st.Networks[n.Name].Floats, h)
		p.Actions = append(p.Actions, acts...)
		p.Actions = append(p.Actions, ensureVXLAN(n, h)...)
		p.Actions = append(p.Actions, pacts...)
		p.Actions = append(p.Actions, facts...)
		p.State.Networks[n.Name] = state.Net{Network: n, Uplink: up, Ports: ports, Floats: floats, Binds: keepBinds(st.Networks[n.Name].Binds, ports)}
	}

	needFwd := slices.ContainsFunc(want, needsForwarding4)
	if needFwd && !h.IPForward {
		p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward, Value: "1", Old: "0"})
		p.State.ForwardingWas = "0"
	}
	needFwd6 := slices.ContainsFunc(want, needsForwarding6)
	maps.DeleteFunc(p.State.AcceptRAWas, func(name, _ string) bool {
		_, ok := h.Link(name)
		return !ok // gone: nothing to put back
	})
	if needFwd6 {
		p.Actions = append(p.Actions, raiseAcceptRA(h, &p.State)...)
		if !h.IP6Forward {
			p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward6, Value: "1", Old: "0"})
			p.State.Forwarding6Was = "0"
		}
	}

	rules, err := nft.Render(want, h)
	if err != nil {
		return Plan{}, err
	}
	// Rules stay in Render's order: a full replace makes the chains in
	// that order, and nft lists them so, as Ruleset.String prints them.
	if a, ok := firewall(rules, st, h); ok {
		p.Actions = append(p.Actions, a)
	}
	p.Actions = append(p.Actions, guardAction(WantGuard(want, p.State.Networks), h)...)

	p.Actions = append(p.Actions, staleVXLANs(want, h)...)
	for _, name := range removedNetworks(wanted, st, h) {
		p.Actions = append(p.Actions, removeNetwork(name, st.Networks[name], h)...)
	}

	if !needFwd && st.ForwardingWas == "0" {
		if h.IPForward {
			p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward, Value: "0", Old: "1"})
		}
		p.State.ForwardingWas = ""
	}
	if !needFwd6 {
		if st.Forwarding6Was == "0" {
			if h.IP6Forward {
				p.Actions = append(p.Actions, Action{Op: OpSysctl, Key: SysctlForward6, Value: "0", Old: "1"})
			}
			p.State.Forwarding6Was = ""
		}
		p.Actions = append(p.Actions, restoreAcceptRA(st.AcceptRAWas, h)...)
		p.State.AcceptRAWas = nil
	}
	return p, nil
}

// needsForwarding4 reports whether a network routes IPv4 through the host
// (an IPv6-only network does not need ip_forward).
func needsForwarding4(n model.Network) bool { return n.IPv4.IsValid() && n.NeedsForwarding() }

// needsForwarding6 reports whether a network routes IPv6 through the host.
func needsForwarding6(n model.Network) bool { return n.IPv6.IsValid() && n.NeedsForwarding() }

// raiseAcceptRA returns the actions that set accept_ra to 2 on every
// uplink that learns routes from router advertisements with accept_ra 1:
// with forwarding on, the kernel ignores RAs on an interface with 1, and
// the default route it learned expires (libvirt refuses to start there
// instead). Each is recorded in st with the value to put back.
func raiseAcceptRA(h model.Host, st *state.State) []Action {
	var acts []Action
	for _, u := range h.RAUplinks {
		if u.AcceptRA != 1 {
			continue
		}
		acts = append(acts, Action{Op: OpSysctl, Key: observe.AcceptRAKey(u.Name), Link: u.Name, Value: "2", Old: "1"})
		if _, ok := st.AcceptRAWas[u.Name]; !ok {
			if st.AcceptRAWas == nil {
				st.AcceptRAWas = map[string]string{}
			}
			st.AcceptRAWas[u.Name] = "1"
		}
	}
	return acts
}

// restoreAcceptRA puts back accept_ra on the uplinks guestnet raised, once
// no network needs IPv6 forwarding. An interface that is gone has nothing
// to put back; one still raised is written (whether or not it holds an RA
// route now: the recorded value is what its owner set).
func restoreAcceptRA(was map[string]string, h model.Host) []Action {
	var acts []Action
	for _, name := range slices.Sorted(maps.Keys(was)) {
		if _, ok := h.Link(name); !ok {
			continue
		}
		cur := "2"
		if i := slices.IndexFunc(h.RAUplinks, func(u model.RAUplink) bool { return u.Name == name }); i >= 0 {
			cur = strconv.Itoa(h.RAUplinks[i].AcceptRA)
		}
		if cur == was[name] {
			continue
		}
		acts = append(acts, Action{Op: OpSysctl, Key: observe.AcceptRAKey(name), Link: name, Value: was[name], Old: cur})
	}
	return acts
}

// firewall returns the action that makes guestnet's table rules, when it
// is not that already: a delta when one can (the base chains are the
// same), else a full replace. When observe vouched for the table by its
// digest alone, the rules' digest decides a no-op without rendering the
// old rules again; only a change renders them (previous).
func firewall(rules model.Ruleset, st state.State, h model.Host) (Action, bool) {
	sum := rules.Sum()
	if h.Ruleset.Digest != "" && sum == h.Ruleset.Digest {
		return Action{}, false
	}
	old := previous(st, h)
	if d, ok := model.Delta(old, rules); ok {
		if d.Empty() {
			return Action{}, false
		}
		oldSum := h.Ruleset.Digest // previous rendered the rules of this digest
		if oldSum == "" {
			oldSum = old.Sum()
		}
		return Action{Op: OpNftDelta, Delta: &d, Sum: sum, OldSum: oldSum}, true
	}
	if old.Digest == "" && rules.Equal(old) {
		return Action{}, false
	}
	return Action{Op: OpNft, Rules: &rules, OldRules: &old}, true
}

// previous is the ruleset observed on h, or, when observe only vouched for
// it by its digest (the nftables generation has not moved since guestnet
// wrote it), the ruleset rendered again from the networks the state says
// were applied, if its digest is that one. The digest covers the whole
// ruleset, DOCKER-USER rules included, so a host fact Render reads that
// changed since (Docker's chain, a foreign dropping chain, br_netfilter)
// makes the digests differ, and the plan falls back to a full replace.
func previous(st state.State, h model.Host) model.Ruleset {
	if h.Ruleset.Digest == "" || len(st.Networks) == 0 {
		return h.Ruleset
	}
	rs, err := nft.Render(st.Sorted(), h)
	if err != nil {
		return h.Ruleset
	}
	if rs.Sum() != h.Ruleset.Digest {
		return h.Ruleset
	}
	return rs
}

// HalfMade returns the actions that delete the bridges a kill -9 left half
// made, and the host as it is after them. Making a bridge is two kernel
// writes (the kernel ignores the alias when it creates a link), so a
// bridge of a recorded network may exist without guestnet's owner alias:
// neither spec.CheckHost nor destroy would take it for guestnet's. The
// state recorded the network before the bridge was made (write-ahead), so
// a bare bridge of that name is the half-made one; it has nothing on it
// yet, and Diff makes it again whole. A stretched network's VXLAN device
// is made the same way (link, then alias) and is treated alike. The engine
// checks the spec against the returned host.
func HalfMade(st state.State, h model.Host) (model.Host, []Action) {
	var acts []Action
	for _, name := range slices.Sorted(maps.Keys(st.Networks)) {
		if n := st.Networks[name].Network; n.Stretched() {
			if l, ok := h.Link(model.VXLANName(n.VXLAN.VNI)); ok && l.Kind == "vxlan" && l.Alias == "" {
				acts = append(acts, deleteVXLAN(l))
				h = withoutLink(h, l.Name)
			}
		}
		br, ok := h.Link(st.Networks[name].Network.Bridge)
		if !ok || br.Kind != "bridge" || br.Alias != "" {
			continue
		}
		if br.Up {
			acts = append(acts, Action{Op: OpLinkDown, Link: br.Name})
		}
		acts = append(acts, Action{Op: OpLinkDel, Link: br.Name, MAC: br.MAC, MTU: br.MTU, IfGroup: br.Group})
		h = withoutLink(h, br.Name)
	}
	return h, acts
}

// withoutLink is h after the link is deleted: its ports lose their
// master, its routes go.
func withoutLink(h model.Host, name string) model.Host {
	h.Links = slices.DeleteFunc(slices.Clone(h.Links), func(l model.Link) bool { return l.Name == name })
	for i := range h.Links {
		if h.Links[i].Master == name {
			h.Links[i].Master = ""
		}
	}
	h.Routes = slices.DeleteFunc(slices.Clone(h.Routes), func(r model.Route) bool { return r.Dev == name })
	return h
}

// broadcast is the broadcast address an IPv4 address gets (none for IPv6).
func broadcast(a netip.Prefix) netip.Addr {
	if !a.Addr().Is4() {
		return netip.Addr{}
	}
	return model.Broadcast(a)
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
		// A guest bridge takes no router advertisement (GuestBridgeAcceptRA):
		// one made by an older guestnet, or set back by someone, is put
		// back to 0.
		if v, ok := h.GuestAcceptRA[n.Bridge]; ok && v != 0 && n.GuestBridge() {
			acts = append(acts, Action{Op: OpSysctl, Key: observe.AcceptRAKey(n.Bridge), Link: n.Bridge, Value: "0", Old: strconv.Itoa(v)})
		}
	}
	if !br.Up {
		acts = append(acts, Action{Op: OpLinkUp, Link: n.Bridge})
	}
	if n.Mode == model.Bridge {
		move, up := ensureUplink(n, br, uplink, saved, h)
		return append(acts, move...), up
	}
	// Observe leaves the bridge's IPv6 link-local address out of Addrs,
	// so it is neither compared nor deleted: it is the source of the
	// network's router advertisements and the guests' default router.
	want := n.Addrs()
	for _, a := range want {
		if !slices.Contains(br.Addrs, a) {
			acts = append(acts, Action{Op: OpAddrAdd, Link: n.Bridge, Addr: a, Brd: broadcast(a)})
		}
	}
	for _, a := range br.Addrs {
		if !slices.Contains(want, a) {
			acts = append(acts, Action{Op: OpAddrDel, Link: n.Bridge, Addr: a, Brd: br.Brd[a]})
		}
	}
	return acts, nil
}

// ensureUplink puts a bridge-mode network's NIC into its bridge and moves
// its addresses and routes to the bridge; it returns the record destroy
// puts them back from. Routes are deleted before the addresses they depend
// on and re-added after, so the undo journal can put every one of them
// back. It also finishes a move that stopped half way (a kill -9, or
// someone took the NIC out of the bridge): what saved remembers is moved
// even when the NIC no longer holds it, so the record never loses an
// address the NIC had.
func ensureUplink(n model.Network, br, up model.Link, saved *state.Uplink, h model.Host) ([]Action, *state.Uplink) {
	rec := &state.Uplink{Name: up.Name}
	if saved != nil && saved.Name == up.Name {
		rec = &state.Uplink{Name: up.Name, Addrs: slices.Clone(saved.Addrs), Brd: maps.Clone(saved.Brd), Routes: slices.Clone(saved.Routes)}
	}
	var acts []Action
	if up.Master != n.Bridge {
		for _, r := range h.RoutesVia(up.Name) {
			if r.Proto == model.ProtoRA {
				continue // the kernel's, from router advertisements: it learns them again on the bridge
			}
			acts = append(acts, Action{Op: OpRouteDel, Route: r})
			if !slices.Contains(rec.Routes, r) {
				rec.Routes = append(rec.Routes, r)
			}
		}
		for _, a := range up.Addrs {
			acts = append(acts, Action{Op: OpAddrDel, Link: up.Name, Addr: a, Brd: up.Brd[a]})
			if !slices.Contains(rec.Addrs, a) {
				rec.Addrs = append(rec.Addrs, a)
			}
			if b, ok := up.Brd[a]; ok {
				if rec.Brd == nil {
					rec.Brd = map[netip.Prefix]netip.Addr{}
				}
				rec.Brd[a] = b
			}
		}
		acts = append(acts, Action{Op: OpMaster, Link: up.Name, Master: n.Bridge, OldMaster: up.Master})
	}
	for _, a := range rec.Addrs {
		if !slices.Contains(br.Addrs, a) {
			acts = append(acts, Action{Op: OpAddrAdd, Link: n.Bridge, Addr: a, Brd: rec.Brd[a]})
		}
	}
	for _, r := range rec.Routes {
		r.Dev, r.Proto = n.Bridge, model.RouteProto
		if !slices.ContainsFunc(h.Routes, func(x model.Route) bool {
			return x.Dst == r.Dst && x.Dev == r.Dev && x.Gw == r.Gw && x.Metric == r.Metric
		}) {
			acts = append(acts, Action{Op: OpRouteAdd, Route: r})
		}
	}
	return acts, rec
}

// removeNetwork returns the actions that undo a network: ports out, the
// uplink's addresses and routes back, the bridge gone. Each step is one the
// journal can reverse, so a failed destroy leaves the network as it was.
func removeNetwork(name string, rec state.Net, h model.Host) []Action {
	var acts []Action
	// Its VXLAN device first, in one write: the kernel takes it out of
	// the bridge, and the bridge's ports below are the guests'.
	for _, l := range h.Links {
		if l.Owner() == name && l.Kind == "vxlan" {
			acts = append(acts, deleteVXLAN(l))
			h = withoutLink(h, l.Name)
		}
	}
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
		f := state.Float{Link: link, Addr: model.HostPrefix(fl.Public)}
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
