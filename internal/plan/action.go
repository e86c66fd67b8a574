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
	OpSysctl    Op = "sysctl"
	OpNft       Op = "nft"
	// OpNftElements changes only elements of the forwards map.
	OpNftElements Op = "nft-elements"
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
}

// Inverse is the action that undoes a.
func (a Action) Inverse() Action {
	b := a
	switch a.Op {
	case OpBridgeAdd, OpTapAdd:
		b.Op = OpLinkDel
	case OpLinkDel:
		b.Op = OpBridgeAdd
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
	case OpSysctl:
		b.Value, b.Old = a.Old, a.Value
	case OpNft, OpNftElements:
		b.Rules, b.OldRules = a.OldRules, a.Rules
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
		return s + fmt.Sprintf(" && ip link set %s alias %s", a.Link, a.Alias)
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
		return fmt.Sprintf("ip addr add %s dev %s", a.Addr, a.Link)
	case OpAddrDel:
		return fmt.Sprintf("ip addr del %s dev %s", a.Addr, a.Link)
	case OpRouteAdd:
		return "ip route add " + RouteString(a.Route)
	case OpRouteDel:
		return "ip route del " + RouteString(a.Route)
	case OpSysctl:
		return fmt.Sprintf("sysctl -w %s=%s", a.Key, a.Value)
	case OpNft:
		return nftSummary(a.Rules)
	case OpGuard:
		return guardString(a)
	case OpNftElements:
		return fmt.Sprintf("nft add/delete element inet %s %s (%d elements now)", model.Table, model.ForwardsMap, len(a.Rules.Forwards))
	}
	return string(a.Op)
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
	return fmt.Sprintf("nft -f - (replace table inet %s: %d rules, %d in DOCKER-USER)", model.Table, rs.RuleCount()-len(rs.DockerUser), len(rs.DockerUser))
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
		for _, f := range rs.Forwards {
			m["map forwards: "+f.String()] = true
		}
		return m
	}
	old, cur := lines(a.OldRules), lines(a.Rules)
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
