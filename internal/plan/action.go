// Package plan compares the declared networks with the observed host and
// returns the ordered, minimal list of actions that makes them match. It is
// pure data in, data out: apply carries the actions out.
package plan

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// Op is the kind of an action.
type Op string

const (
	OpBridgeAdd Op = "bridge-add"
	OpTapAdd    Op = "tap-add"
	OpLinkDel   Op = "link-del"
	OpLinkUp    Op = "link-up"
	OpLinkDown  Op = "link-down"
	OpMaster    Op = "set-master"
	OpMTU       Op = "set-mtu"
	OpGroup     Op = "set-group"
	OpAddrAdd   Op = "addr-add"
	OpAddrDel   Op = "addr-del"
	OpRouteAdd  Op = "route-add"
	OpRouteDel  Op = "route-del"
	// OpRouteReplace adds a route or replaces the one with the same
	// destination and metric (ip route replace): the BGP speaker's write,
	// which moves a route to a new next hop in one step.
	OpRouteReplace Op = "route-replace"
	OpSysctl       Op = "sysctl"
	OpNft          Op = "nft"
	// OpNftDelta changes guestnet's table by element and chain operations
	// (model.RulesetDelta) in one transaction: the table is kept.
	OpNftDelta Op = "nft-delta"
	// OpVXLANAdd makes a stretched network's VXLAN device (and its
	// owner alias); as the inverse of deleting one, also its master, port
	// flags and up state, so that an undo makes it again as it was.
	OpVXLANAdd Op = "vxlan-add"
	// OpBridgePort sets a bridge port's flags learning and neigh_suppress
	// (of VXLAN.PortLearning, VXLAN.NeighSuppress; OldVXLAN's before).
	OpBridgePort Op = "bridge-port"
)

// Action is one kernel change and everything needed to undo it.
type Action struct {
	Op        Op             `json:"op"`
	Link      string         `json:"link,omitempty"`
	Alias     string         `json:"alias,omitempty"`
	MAC       string         `json:"mac,omitempty"`
	Master    string         `json:"master,omitempty"`
	OldMaster string         `json:"old_master,omitempty"`
	MTU       int            `json:"mtu,omitempty"`
	OldMTU    int            `json:"old_mtu,omitempty"`
	IfGroup   uint32         `json:"ifgroup,omitempty"` // interface group (IFLA_GROUP)
	OldGroup  uint32         `json:"old_ifgroup,omitempty"`
	Owner     int            `json:"owner,omitempty"` // TAP owner uid, -1 for none
	Group     int            `json:"group,omitempty"` // TAP group gid, -1 for none
	Addr      netip.Prefix   `json:"addr,omitzero"`
	Brd       netip.Addr     `json:"brd,omitzero"` // broadcast of Addr; none when zero
	Route     model.Route    `json:"route,omitzero"`
	Key       string         `json:"key,omitempty"`
	Value     string         `json:"value,omitempty"`
	Old       string         `json:"old,omitempty"`
	Rules     *model.Ruleset `json:"rules,omitempty"`
	OldRules  *model.Ruleset `json:"old_rules,omitempty"`
	Guard     *model.Guard   `json:"guard,omitempty"`
	OldGuard  *model.Guard   `json:"old_guard,omitempty"`
	// Delta is an OpNftDelta's change, and Sum and OldSum the digests of
	// the rulesets after and before it: the action holds what changed,
	// never a whole ruleset.
	Delta  *model.RulesetDelta `json:"delta,omitempty"`
	Sum    string              `json:"sum,omitempty"`
	OldSum string              `json:"old_sum,omitempty"`
	// VXLAN is the device an OpVXLANAdd makes or an OpLinkDel deletes (a
	// delete carries it so that its inverse makes the device again), and
	// the port flags an OpBridgePort sets; OldVXLAN holds the flags
	// before an OpBridgePort.
	VXLAN    *model.VXLANLink `json:"vxlan,omitempty"`
	OldVXLAN *model.VXLANLink `json:"old_vxlan,omitempty"`
	// Up is an OpVXLANAdd's device brought up (an undone delete).
	Up bool `json:"up,omitempty"`
}

// Inverse is the action that undoes a.
func (a Action) Inverse() Action {
	b := a
	switch a.Op {
	case OpBridgeAdd, OpTapAdd, OpVXLANAdd:
		b.Op = OpLinkDel
	case OpLinkDel:
		b.Op = OpBridgeAdd
		if a.VXLAN != nil {
			b.Op = OpVXLANAdd
		}
	case OpBridgePort:
		b.VXLAN, b.OldVXLAN = a.OldVXLAN, a.VXLAN
	case OpLinkUp:
		b.Op = OpLinkDown
	case OpLinkDown:
		b.Op = OpLinkUp
	case OpMaster:
		b.Master, b.OldMaster = a.OldMaster, a.Master
	case OpMTU:
		b.MTU, b.OldMTU = a.OldMTU, a.MTU
	case OpGroup:
		b.IfGroup, b.OldGroup = a.OldGroup, a.IfGroup
	case OpAddrAdd:
		b.Op = OpAddrDel
	case OpAddrDel:
		b.Op = OpAddrAdd
	case OpRouteAdd:
		b.Op = OpRouteDel
	case OpRouteDel:
		b.Op = OpRouteAdd
	case OpRouteReplace:
		b.Op = OpRouteDel
	case OpSysctl:
		b.Value, b.Old = a.Old, a.Value
	case OpNft:
		b.Rules, b.OldRules = a.OldRules, a.Rules
	case OpNftDelta:
		inv := a.Delta.Inverse()
		b.Delta, b.Sum, b.OldSum = &inv, a.OldSum, a.Sum
	case OpGuard:
		b.Guard, b.OldGuard = a.OldGuard, a.Guard
	}
	return b
}

// String is the action's command-line equivalent.
func (a Action) String() string {
	switch a.Op {
	case OpBridgeAdd:
		s := "ip link add " + a.Link + " type bridge"
		if a.MTU != 0 {
			s += fmt.Sprintf(" mtu %d", a.MTU)
		}
		if a.MAC != "" {
			s += " address " + a.MAC
		}
		if a.IfGroup != 0 {
			s += fmt.Sprintf(" group %d", a.IfGroup)
		}
		s += fmt.Sprintf(" && ip link set %s alias %s", a.Link, a.Alias)
		if key, ok := GuestBridgeAcceptRA(a); ok {
			s += " && sysctl -w " + key + "=0"
		}
		return s
	case OpTapAdd:
		s := "ip tuntap add dev " + a.Link + " mode tap"
		if a.Owner >= 0 {
			s += fmt.Sprintf(" user %d", a.Owner)
		}
		if a.Group >= 0 {
			s += fmt.Sprintf(" group %d", a.Group)
		}
		return s
	case OpLinkDel:
		return "ip link del " + a.Link
	case OpVXLANAdd:
		return vxlanAddString(a)
	case OpBridgePort:
		return bridgePortString(a.Link, *a.VXLAN)
	case OpLinkUp:
		return "ip link set " + a.Link + " up"
	case OpLinkDown:
		return "ip link set " + a.Link + " down"
	case OpMaster:
		if a.Master == "" {
			return "ip link set " + a.Link + " nomaster"
		}
		return "ip link set " + a.Link + " master " + a.Master
	case OpMTU:
		return fmt.Sprintf("ip link set %s mtu %d", a.Link, a.MTU)
	case OpGroup:
		return fmt.Sprintf("ip link set %s group %d", a.Link, a.IfGroup)
	case OpAddrAdd:
		if a.Brd.IsValid() {
			return fmt.Sprintf("ip addr add %s brd %s dev %s", a.Addr, a.Brd, a.Link)
		}
		if NoDAD(a.Addr) {
			return fmt.Sprintf("ip addr add %s dev %s nodad", a.Addr, a.Link)
		}
		return fmt.Sprintf("ip addr add %s dev %s", a.Addr, a.Link)
	case OpAddrDel:
		return fmt.Sprintf("ip addr del %s dev %s", a.Addr, a.Link)
	case OpRouteAdd:
		return ipRoute(a.Route) + " add " + RouteString(a.Route)
	case OpRouteDel:
		return ipRoute(a.Route) + " del " + RouteString(a.Route)
	case OpRouteReplace:
		return ipRoute(a.Route) + " replace " + RouteString(a.Route)
	case OpSysctl:
		return fmt.Sprintf("sysctl -w %s=%s", a.Key, a.Value)
	case OpNft:
		return nftSummary(a.Rules)
	case OpGuard:
		return guardString(a)
	case OpNftDelta:
		return fmt.Sprintf("nft: %s (table inet %s kept)", a.Delta, model.Table)
	}
	return string(a.Op)
}

// GuestBridgeAcceptRA is the accept_ra sysctl of a guest bridge that a
// bridge-add makes: written 0 with the bridge, so that the host never takes
// a guest's router advertisement for its own (with IPv6 forwarding off, a
// guest's RA would give the host a default route through that guest, and
// a SLAAC address on the bridge). A bridge-mode network's bridge is the
// host's LAN interface and keeps the default.
func GuestBridgeAcceptRA(a Action) (string, bool) {
	if a.Op != OpBridgeAdd || a.IfGroup != model.GuestGroup {
		return "", false
	}
	return "net.ipv6.conf." + strings.ReplaceAll(a.Link, ".", "/") + ".accept_ra", true
}

// Note explains an action whose reason the command does not say: raising
// or putting back an uplink's accept_ra, or a guest bridge's set back to
// 0. "" for the others.
func (a Action) Note() string {
	if a.Op != OpSysctl || !strings.HasSuffix(a.Key, ".accept_ra") {
		return ""
	}
	if a.Value == "2" {
		return a.Link + " learns its default route from router advertisements: with IPv6 forwarding on, accept_ra 1 would make the kernel drop that route and ignore the RAs after"
	}
	if a.Value == "0" {
		return a.Link + " is a guest bridge: the host must not take its guests' router advertisements (a default route through a guest)"
	}
	return "put back: no network needs IPv6 forwarding any more"
}

// NoDAD reports whether an address guestnet adds skips duplicate address
// detection: every IPv6 one. The addresses are guestnet's own (a guest
// prefix's router, or one moved from an uplink that held it already), and
// the services bound to them (RA, DHCPv6, DNS) must bind at once, not
// after the second or two a tentative address waits.
func NoDAD(p netip.Prefix) bool { return p.Addr().Is6() && !p.Addr().Is4In6() }

// ipRoute is the `ip` command of a route's family.
func ipRoute(r model.Route) string {
	if r.Dst.Addr().Is6() {
		return "ip -6 route"
	}
	return "ip route"
}

// RouteString prints a route as `ip route` takes it.
func RouteString(r model.Route) string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Dst.Bits() == 0 {
		b.Reset()
		b.WriteString("default")
	}
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	b.WriteString(" dev " + r.Dev)
	if r.Proto != 0 {
		fmt.Fprintf(&b, " proto %d", r.Proto)
	}
	if r.Scope == 253 {
		b.WriteString(" scope link")
	}
	if r.Src.IsValid() {
		b.WriteString(" src " + r.Src.String())
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	return b.String()
}

func nftSummary(rs *model.Ruleset) string {
	if rs == nil || rs.Empty() {
		return "nft delete table inet " + model.Table + " (and guestnet's DOCKER-USER rules)"
	}
	du := len(rs.DockerUser) + len(rs.DockerUser6)
	return fmt.Sprintf("nft -f - (replace table inet %s: %d rules, %d in DOCKER-USER)", model.Table, rs.RuleCount()-du, du)
}

// RuleDiff lists the rules an nft action adds ("+ ...") and removes ("- ...").
func (a Action) RuleDiff() []string {
	lines := func(rs *model.Ruleset) map[string]bool {
		m := map[string]bool{}
		if rs == nil {
			return m
		}
		for _, c := range rs.Chains {
			for _, r := range c.Rules {
				m[c.Name+": "+r.String()] = true
			}
		}
		for _, r := range rs.DockerUser {
			m["DOCKER-USER: "+r.String()] = true
		}
		for _, r := range rs.DockerUser6 {
			m["ip6 DOCKER-USER: "+r.String()] = true
		}
		for _, f := range rs.Forwards {
			m["map forwards: "+f.String()] = true
		}
		for _, v := range rs.Vmaps {
			for _, e := range v.Elements {
				m[elementLine(v.Name, e)] = true
			}
		}
		for _, f := range rs.Floating {
			m[floatingLine(f)] = true
		}
		return m
	}
	old, cur := lines(a.OldRules), lines(a.Rules)
	if a.Op == OpNftDelta {
		old, cur = deltaLines(a.Delta)
	}
	if a.Op == OpGuard {
		old, cur = guardLines(a.OldGuard), guardLines(a.Guard)
	}
	var out []string
	for _, s := range sortedKeys(cur) {
		if !old[s] {
			out = append(out, "+ "+s)
		}
	}
	for _, s := range sortedKeys(old) {
		if !cur[s] {
			out = append(out, "- "+s)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// NftSum is the digest of the ruleset an nft action leaves, "" when it
// leaves none (the table deleted) or a is no nft action.
func (a Action) NftSum() string {
	switch {
	case a.Op == OpNftDelta:
		return a.Sum
	case a.Op == OpNft && a.Rules != nil && !a.Rules.Empty():
		return a.Rules.Sum()
	}
	return ""
}

// IsNft reports whether a writes guestnet's table (or its DOCKER-USER rules).
func (a Action) IsNft() bool { return a.Op == OpNft || a.Op == OpNftDelta }

func elementLine(vmap string, e model.VmapElement) string {
	return fmt.Sprintf("map %s: %s : jump %s", vmap, e.KeyString(), e.Chain)
}

func floatingLine(f model.Floating) string {
	return fmt.Sprintf("map %s: %s : %s", model.FloatingIn, f.Public, f.Guest)
}

// deltaLines are the rule lines a delta removes and adds: the rules of
// the chains it deletes, adds and refills (only those that differ), and
// the elements it deletes and adds.
func deltaLines(d *model.RulesetDelta) (old, cur map[string]bool) {
	old, cur = map[string]bool{}, map[string]bool{}
	chain := func(m map[string]bool, cs []model.Chain) {
		for _, c := range cs {
			for _, r := range c.Rules {
				m[c.Name+": "+r.String()] = true
			}
		}
	}
	chain(old, d.DelChains)
	chain(old, d.OldSetChains)
	chain(cur, d.AddChains)
	chain(cur, d.SetChains)
	for _, e := range d.DelElements {
		old[elementLine(e.Map, e.Element)] = true
	}
	for _, e := range d.AddElements {
		cur[elementLine(e.Map, e.Element)] = true
	}
	for _, f := range d.DelForwards {
		old["map forwards: "+f.String()] = true
	}
	for _, f := range d.AddForwards {
		cur["map forwards: "+f.String()] = true
	}
	for _, f := range d.DelFloating {
		old[floatingLine(f)] = true
	}
	for _, f := range d.AddFloating {
		cur[floatingLine(f)] = true
	}
	if d.DockerUser != nil {
		for _, r := range *d.OldDockerUser {
			old["DOCKER-USER: "+r.String()] = true
		}
		for _, r := range *d.DockerUser {
			cur["DOCKER-USER: "+r.String()] = true
		}
	}
	if d.DockerUser6 != nil {
		for _, r := range *d.OldDockerUser6 {
			old["ip6 DOCKER-USER: "+r.String()] = true
		}
		for _, r := range *d.DockerUser6 {
			cur["ip6 DOCKER-USER: "+r.String()] = true
		}
	}
	return old, cur
}
