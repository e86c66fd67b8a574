package model

import (
	"fmt"
	"net/netip"
)

// guestnet's table dispatches instead of listing: each base chain holds a
// constant handful of rules whose verdict is a lookup in a verdict map
// (nftables `vmap`), keyed on the interface or the address, that jumps to
// the chain of the one network the packet belongs to. A packet of network
// #4,000 walks what a packet of network #1 walks, and a change to one
// network touches its own chains and map elements, nothing else.
//
//	table inet guestnet {
//		map forward_to   { type ifname : verdict; elements = { "gnat0" : jump to-default } }
//		map forward_from { type ifname : verdict; ... }
//		map input_from   { type ifname : verdict; ... }
//		map dns_to       { type ipv4_addr : verdict; ... }
//		map nat_from     { type ipv4_addr : verdict; flags interval; ... }
//		map dns_to6      { type ipv6_addr : verdict; ... }
//		map nat_from6    { type ipv6_addr : verdict; flags interval; ... }
//		chain forward { type filter hook forward priority filter; policy accept;
//			oifname vmap @forward_to
//			iifname vmap @forward_from }
//		chain to-default { iifname "gnat0" accept ... }   # regular chain: Hook ""
//		...
//	}
//
// A jump returns to the rule after the dispatch when the network's chain
// reaches no verdict, so the order "traffic into a network, then traffic out
// of the other" of the flat list is kept: forward_to is looked up before
// forward_from.

// The dispatch verdicts: a rule whose verdict is one of these looks the
// packet's key up in the named map and jumps to the chain it names; a key
// not in the map goes on to the next rule.
const (
	DispatchForwardTo   Verdict = "oifname vmap @" + VmapForwardTo
	DispatchForwardFrom Verdict = "iifname vmap @" + VmapForwardFrom
	DispatchInputFrom   Verdict = "iifname vmap @" + VmapInputFrom
	DispatchDNSTo       Verdict = "ip daddr vmap @" + VmapDNSTo
	DispatchNATFrom     Verdict = "ip saddr vmap @" + VmapNATFrom
	DispatchDNSTo6      Verdict = "ip6 daddr vmap @" + VmapDNSTo6
	DispatchNATFrom6    Verdict = "ip6 saddr vmap @" + VmapNATFrom6
)

// The verdict maps of guestnet's table.
const (
	VmapForwardTo   = "forward_to"   // oifname -> to-NET: traffic into a network (and within its bridge)
	VmapForwardFrom = "forward_from" // iifname -> from-NET: traffic out of a network
	VmapInputFrom   = "input_from"   // iifname -> input-NET: a network's guests to the host
	VmapDNSTo       = "dns_to"       // gateway address -> dns-NET: its DNS server only from its bridge
	VmapNATFrom     = "nat_from"     // guest subnet (interval) -> nat-NET: source translation
	VmapDNSTo6      = "dns_to6"      // the bridge's IPv6 address -> dns-NET (the same chain as dns_to's)
	VmapNATFrom6    = "nat_from6"    // guest IPv6 prefix (interval) -> nat-NET (NAT66; the same chain)
)

// Vmap is one verdict map and its elements. Key says what is looked up:
// MatchIIF or MatchOIF (interface names), MatchSAddr or MatchDAddr
// (prefixes of the map's family, VmapFamily; a /32 or /128 is an address).
type Vmap struct {
	Name     string        `json:"name"`
	Key      MatchKind     `json:"key"`
	Elements []VmapElement `json:"elements,omitempty"` // sorted by key
}

// VmapElement sends one key to one chain (jump).
type VmapElement struct {
	Name   string       `json:"name,omitempty"`  // interface name, for MatchIIF and MatchOIF keys
	Prefix netip.Prefix `json:"prefix,omitzero"` // for MatchSAddr and MatchDAddr keys
	Chain  string       `json:"chain"`
}

// KeyString is the element's key as nft prints it.
func (e VmapElement) KeyString() string {
	if e.Name != "" {
		return fmt.Sprintf("%q", e.Name)
	}
	if e.Prefix.IsSingleIP() {
		return e.Prefix.Addr().String()
	}
	return e.Prefix.String()
}

// Vmaps is every verdict map of guestnet's table, in the order they are
// printed, with the key of each, the address family of an address key
// (nft types a set by one family: IPv6 has its own maps, whose elements
// jump to the same per-network chains as the IPv4 ones), and the dispatch
// verdict that uses it.
var Vmaps = []struct {
	Name     string
	Key      MatchKind
	Family   Family // of an address key; "" for interface names
	Dispatch Verdict
}{
	{VmapForwardTo, MatchOIF, "", DispatchForwardTo},
	{VmapForwardFrom, MatchIIF, "", DispatchForwardFrom},
	{VmapInputFrom, MatchIIF, "", DispatchInputFrom},
	{VmapDNSTo, MatchDAddr, IPv4, DispatchDNSTo},
	{VmapNATFrom, MatchSAddr, IPv4, DispatchNATFrom},
	{VmapDNSTo6, MatchDAddr, IPv6, DispatchDNSTo6},
	{VmapNATFrom6, MatchSAddr, IPv6, DispatchNATFrom6},
}

// VmapFamily is the address family of a verdict map's key (IPv4 for an
// unknown name, "" for an interface-keyed map).
func VmapFamily(name string) Family {
	for _, v := range Vmaps {
		if v.Name == name {
			return v.Family
		}
	}
	return IPv4
}

// The per-network chains, one of each at most per network, named for it.
// Network names are at most 32 characters of [a-zA-Z0-9_.-]; the prefix
// makes them nft identifiers.
func ChainTo(net string) string    { return "to-" + net }
func ChainFrom(net string) string  { return "from-" + net }
func ChainInput(net string) string { return "input-" + net }
func ChainDNS(net string) string   { return "dns-" + net }
func ChainNAT(net string) string   { return "nat-" + net }

// RulesetDelta is a change of guestnet's table made of element and chain
// operations only: what apply sends when the base chains stay as they are.
// Its size is proportional to what changed, not to the number of networks.
// Order of application (one transaction): delete map elements, flush and
// delete removed chains, add new chains with their rules, flush and refill
// changed chains, add map elements; DockerUser, when set, replaces
// guestnet's rules in DOCKER-USER.
type RulesetDelta struct {
	DelElements   []VmapChange `json:"del_elements,omitempty"`
	DelChains     []Chain      `json:"del_chains,omitempty"` // with their rules (so the inverse can re-add them)
	AddChains     []Chain      `json:"add_chains,omitempty"`
	SetChains     []Chain      `json:"set_chains,omitempty"` // flushed then filled with these rules
	OldSetChains  []Chain      `json:"old_set_chains,omitempty"`
	AddElements   []VmapChange `json:"add_elements,omitempty"`
	AddForwards   []Forward    `json:"add_forwards,omitempty"`
	DelForwards   []Forward    `json:"del_forwards,omitempty"`
	AddFloating   []Floating   `json:"add_floating,omitempty"`
	DelFloating   []Floating   `json:"del_floating,omitempty"`
	DockerUser    *[]Rule      `json:"docker_user,omitempty"` // nil: unchanged
	OldDockerUser *[]Rule      `json:"old_docker_user,omitempty"`
	// DockerUser6, when set, replaces guestnet's rules in table ip6
	// filter's DOCKER-USER.
	DockerUser6    *[]Rule `json:"docker_user6,omitempty"`
	OldDockerUser6 *[]Rule `json:"old_docker_user6,omitempty"`
}

// VmapChange is one element added to or deleted from one verdict map.
type VmapChange struct {
	Map     string      `json:"map"`
	Element VmapElement `json:"element"`
}
