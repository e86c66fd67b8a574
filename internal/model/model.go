// Package model holds the host-state types shared by spec, observe, plan and
// apply: what a network is, and what a host looks like to guestnet. The types
// are plain comparable data in net/netip terms; no kernel library types here.
package model

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Mode is how a network reaches (or does not reach) the outside.
type Mode string

const (
	Isolated Mode = "isolated" // bridge only, no forwarding
	Routed   Mode = "routed"   // host is the gateway, forwarding on, no NAT
	NAT      Mode = "nat"      // forwarding plus masquerade, like libvirt's virbr0
	Bridge   Mode = "bridge"   // an existing NIC becomes a port of the bridge
	Open     Mode = "open"     // like routed, but no firewall rules at all
)

// Modes lists every mode, in the order the docs present them.
var Modes = []Mode{Isolated, Routed, NAT, Bridge, Open}

// Network is one declared network.
type Network struct {
	Name   string       `json:"name"`
	Mode   Mode         `json:"mode"`
	Bridge string       `json:"bridge"`
	IPv4   netip.Prefix `json:"ipv4,omitzero"` // host address with prefix length
	// IPv6 is the host's IPv6 address on the bridge with the guests'
	// prefix length: the guests' router (RA, DHCPv6, DNS, NAT66).
	IPv6   netip.Prefix `json:"ipv6,omitzero"`
	Uplink string       `json:"uplink,omitempty"`
	MTU    int          `json:"mtu,omitempty"`
	DHCP   *DHCP        `json:"dhcp,omitempty"`
	DHCP6  *DHCP6       `json:"dhcp6,omitempty"` // stateful DHCPv6 (RA then sets M)
	DNS    *DNS         `json:"dns,omitempty"`
	// Forwards open ports of the host to guests (nat and routed networks).
	Forwards []PortForward `json:"forwards,omitempty"`
	// Peers are other networks whose guests may reach this one's.
	Peers []string `json:"peers,omitempty"`
	// GuestToHost is what guests may reach on the host itself: "" or
	// "services" (DHCP, DNS and ICMP only), or "all".
	GuestToHost string `json:"guest_to_host,omitempty"`
	// Floating are 1:1 public addresses of guests (nat networks).
	Floating []Floating `json:"floating,omitempty"`
	// RoutedFrom are the prefixes (hosts of the LAN) whose traffic with a
	// nat network's guests is routed, not masqueraded, both ways: they
	// reach the guests by the guests' own addresses (spec: routed_from).
	RoutedFrom []netip.Prefix `json:"routed_from,omitempty"`
	// AllowSpoofing turns anti-spoofing of bound guest ports off.
	AllowSpoofing bool `json:"allow_spoofing,omitempty"`
	// NoAnnounce keeps the network out of what BGP announces
	// (spec: announce: false).
	NoAnnounce bool `json:"no_announce,omitempty"`
	// VXLAN stretches the network across hosts (spec: vxlan: {vni: N}).
	VXLAN *VXLAN `json:"vxlan,omitempty"`
}

// Subnet is the guests' subnet (IPv4 with the host bits cleared).
func (n Network) Subnet() netip.Prefix {
	if !n.IPv4.IsValid() {
		return netip.Prefix{}
	}
	return n.IPv4.Masked()
}

// Subnet6 is the guests' IPv6 prefix (host bits cleared), or the zero
// prefix when the network has no ipv6.
func (n Network) Subnet6() netip.Prefix {
	if !n.IPv6.IsValid() {
		return netip.Prefix{}
	}
	return n.IPv6.Masked()
}

// Subnets are the guests' subnets, IPv4 first; none when the host has no
// address on the network.
func (n Network) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{n.Subnet(), n.Subnet6()} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// Addrs are the host's addresses on the bridge (with prefix length), IPv4
// first: the guests' gateways.
func (n Network) Addrs() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{n.IPv4, n.IPv6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// Addr is the network's address of family f (IPv4 or IPv6), or the zero
// prefix.
func (n Network) Addr(f Family) netip.Prefix {
	if f == IPv6 {
		return n.IPv6
	}
	return n.IPv4
}

// NeedsForwarding reports whether the network needs IP forwarding on the host.
func (n Network) NeedsForwarding() bool {
	return n.Mode == Routed || n.Mode == NAT || n.Mode == Open
}

// OwnerAlias is the link alias guestnet sets on the bridges it creates; it is
// how a later run (or another tool) knows who owns the link.
func OwnerAlias(network string) string { return AliasPrefix + network }

// AliasPrefix starts the alias of every link guestnet owns.
const AliasPrefix = "guestnet:"

// GuestGroup is the interface group of guestnet's guest bridges (not those
// of bridge-mode networks, which are the LAN): one firewall rule per network
// keeps other guest networks out, whatever their number.
const GuestGroup = 0x6775

// GuestBridge reports whether a network's bridge carries GuestGroup.
func (n Network) GuestBridge() bool { return n.Mode != Bridge }

// RouteProto is the rtnetlink protocol number on routes guestnet adds, so
// they are never confused with a person's (see /etc/iproute2/rt_protos).
const RouteProto = 157

// Link is one network interface as observed.
type Link struct {
	Name   string `json:"name"`
	Index  int    `json:"index"`
	Kind   string `json:"kind"` // "bridge", "tuntap", "veth", "device", ...
	Alias  string `json:"alias,omitempty"`
	Master string `json:"master,omitempty"`
	Up     bool   `json:"up"`
	// Group is the interface group (IFLA_GROUP); guest bridges carry GuestGroup.
	Group uint32 `json:"group,omitempty"`
	// Carrier is the operational state (IFLA_OPERSTATE up or unknown).
	Carrier bool           `json:"carrier,omitempty"`
	MTU     int            `json:"mtu"`
	MAC     string         `json:"mac,omitempty"`
	Addrs   []netip.Prefix `json:"addrs,omitempty"`
	// Brd holds the broadcast address of each address that has one.
	Brd map[netip.Prefix]netip.Addr `json:"brd,omitempty"`
	// VXLAN is what plans compare of a VXLAN device (Kind "vxlan"); nil
	// for other links.
	VXLAN *VXLANLink `json:"vxlan,omitempty"`
}

// Owner is the network that owns the link, or "".
func (l Link) Owner() string {
	if s, ok := strings.CutPrefix(l.Alias, AliasPrefix); ok {
		return s
	}
	return ""
}

// Route is one route in the main table (observe reads IPv4 ones today;
// Dst and Gw carry their family).
type Route struct {
	Dst    netip.Prefix `json:"dst"`
	Gw     netip.Addr   `json:"gw,omitzero"`
	Dev    string       `json:"dev"`
	Src    netip.Addr   `json:"src,omitzero"`
	Proto  int          `json:"proto"`
	Scope  int          `json:"scope"`
	Metric int          `json:"metric,omitempty"`
}

// Host is everything guestnet reads from one network namespace.
type Host struct {
	Links []Link `json:"links"` // sorted by name

	Routes    []Route `json:"routes"`
	IPForward bool    `json:"ip_forward"`
	// IP6Forward is net.ipv6.conf.all.forwarding.
	IP6Forward bool `json:"ip6_forward"`
	// RAUplinks are the interfaces (not guestnet's) that take their
	// default route from router advertisements (a route of protocol ra)
	// with accept_ra 1: turning IPv6 forwarding on makes the kernel ignore
	// their RAs, and the default route expires. Plan raises them to 2.
	RAUplinks []RAUplink `json:"ra_uplinks,omitempty"`
	// GuestAcceptRA is net.ipv6.conf.BR.accept_ra of each guest bridge
	// (GuestGroup) that has one: guestnet makes them 0, and plan puts back
	// a 0 that someone (or a guestnet from before that) left otherwise.
	GuestAcceptRA map[string]int `json:"guest_accept_ra,omitempty"`
	// BridgeNFCallIPTables is true when br_netfilter sends bridged frames
	// through the IP hooks (bridge-nf-call-iptables=1) in this namespace.
	BridgeNFCallIPTables bool `json:"bridge_nf_call_iptables"`
	// BridgeNFCallIP6Tables is the same for IPv6 (bridge-nf-call-ip6tables=1):
	// bridged IPv6 frames cross table ip6 filter's FORWARD.
	BridgeNFCallIP6Tables bool    `json:"bridge_nf_call_ip6tables,omitempty"`
	Ruleset               Ruleset `json:"ruleset"`
	Guard                 Guard   `json:"guard,omitzero"`
	Foreign               Foreign `json:"foreign"`
}

// RAUplink is an interface that learns its default route from router
// advertisements, and its net.ipv6.conf.IF.accept_ra.
type RAUplink struct {
	Name     string `json:"name"`
	AcceptRA int    `json:"accept_ra"`
}

// ProtoRA marks routes the kernel learned from router advertisements.
const ProtoRA = 9

// Foreign is what guestnet knows of firewalls it does not own.
type Foreign struct {
	// ForwardDrop lists foreign base chains on the forward hook whose
	// policy is drop, e.g. iptables-nft's "table ip filter chain FORWARD".
	ForwardDrop []ForeignChain `json:"forward_drop,omitempty"`
	// DockerUser is true when table ip filter has a DOCKER-USER chain,
	// the place Docker documents for rules of other tools.
	DockerUser bool `json:"docker_user,omitempty"`
	// DockerUser6 is the same for table ip6 filter (Docker's ip6tables).
	DockerUser6 bool `json:"docker_user6,omitempty"`
}

// Link returns the link with that name (Links must be sorted by name).
func (h Host) Link(name string) (Link, bool) {
	i, ok := slices.BinarySearchFunc(h.Links, name, func(l Link, n string) int { return strings.Compare(l.Name, n) })
	if !ok {
		return Link{}, false
	}
	return h.Links[i], true
}

// RoutesVia returns the routes whose device is dev, kernel-made ones and
// the BGP speaker's excluded (the speaker moves its own to the bridge when
// their next hop's subnet moves there).
func (h Host) RoutesVia(dev string) []Route {
	var out []Route
	for _, r := range h.Routes {
		if r.Dev == dev && r.Proto != ProtoKernel && r.Proto != ProtoBGP {
			out = append(out, r)
		}
	}
	return out
}

// ProtoKernel marks routes the kernel made itself (connected subnets).
const ProtoKernel = 2

// ForeignChain is a base chain guestnet does not own that drops by policy,
// with the interfaces its rules already let through unconditionally.
type ForeignChain struct {
	Name          string   `json:"name"`
	AcceptIIF     []string `json:"accept_iif,omitempty"`     // "iifname X accept"
	AcceptOIF     []string `json:"accept_oif,omitempty"`     // "oifname X accept"
	AcceptBridged []string `json:"accept_bridged,omitempty"` // "iifname X oifname X accept"
}

// Family is the address family whose packets cross the chain: IPv6 for a
// chain of table ip6 (ip6tables), IPv4 for table ip, "" for both (inet).
func (c ForeignChain) Family() Family {
	switch {
	case strings.HasPrefix(c.Name, "table ip6 "):
		return IPv6
	case strings.HasPrefix(c.Name, "table ip "):
		return IPv4
	}
	return ""
}

// Lets reports whether the chain already accepts a bridge's traffic: both
// directions, or for bridged-only traffic, frames within the bridge.
func (c ForeignChain) Lets(bridge string, bridgedOnly bool) bool {
	if bridgedOnly && slices.Contains(c.AcceptBridged, bridge) {
		return true
	}
	return slices.Contains(c.AcceptIIF, bridge) && slices.Contains(c.AcceptOIF, bridge)
}

// Broadcast is the all-ones host address of p's subnet (for an IPv6
// prefix, its last address), in p's family.
func Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// BridgeMAC is the fixed MAC guestnet gives a network's bridge: locally
// administered, derived from the name. A bridge made again after drift
// keeps it, so guests' ARP caches for their gateway stay right.
func BridgeMAC(network string) string {
	h := sha256.Sum256([]byte(network))
	return fmt.Sprintf("02:67:6e:%02x:%02x:%02x", h[0], h[1], h[2])
}

// Diag is what only doctor needs, read on demand (see observe.Diagnose):
// too slow to read on every apply of a large host.
type Diag struct {
	RPFilter  map[string]int `json:"rp_filter,omitempty"` // "all" and each bridge and uplink
	Conntrack int            `json:"conntrack_count"`
	CtMax     int            `json:"conntrack_max"`
	// ForeignNAT holds masquerade rules of other tables, as read back.
	ForeignNAT []ForeignRule `json:"foreign_nat,omitempty"`
	// DHCPSockets is how many UDP sockets listen on port 67.
	DHCPSockets int `json:"dhcp_sockets"`
	// Daemon is true when guestnet serve answers for this namespace.
	Daemon bool `json:"daemon"`
	// InputDrop lists foreign input-hook chains whose policy is drop
	// (what they already accept unconditionally, as for ForwardDrop).
	InputDrop []ForeignChain `json:"input_drop,omitempty"`
	// ForeignDNAT names the chains of other tables that hold DNAT (or
	// redirect) rules: trace does not simulate them and says so.
	ForeignDNAT []string `json:"foreign_dnat,omitempty"`
	// PolicyRules are the IPv4 policy routing rules beyond the standard
	// local, main and default lookups (as ip rule prints them): trace reads
	// the main table only and says so.
	PolicyRules []string `json:"policy_rules,omitempty"`
	// PolicyRules6 are the same for IPv6 (ip -6 rule), beyond local at 0
	// and main at 32766.
	PolicyRules6 []string `json:"policy_rules6,omitempty"`
	// Overlay holds the forwarding entries of the VXLAN devices and the
	// neighbours of their bridges: trace tells a remote guest's VTEP.
	Overlay Overlay `json:"overlay,omitzero"`
}

// ForeignRule is a rule of a table guestnet does not own.
type ForeignRule struct {
	Chain string `json:"chain"` // "table ip nat chain POSTROUTING"
	Rule  Rule   `json:"rule"`
}
