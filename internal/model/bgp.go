package model

import (
	"net/netip"
	"slices"
	"time"
)

// BGP is the spec's bgp section: this host's speaker, its peers and what
// it may install of what they announce.
type BGP struct {
	ASN uint32 `json:"asn"`
	// RouterID is the BGP identifier; invalid means "the IPv4 address of
	// the interface that reaches the first peer", decided at start.
	RouterID netip.Addr `json:"router_id,omitzero"`
	// Listen are the addresses the speaker accepts sessions on (port
	// Port); none means every address of the host.
	Listen []netip.Addr `json:"listen,omitempty"`
	// Port is the TCP port of this speaker and of its peers: 179 unless a
	// test says otherwise.
	Port  int       `json:"port,omitempty"`
	Peers []BGPPeer `json:"peers"`
	// Import are the prefixes a learned route must lie inside (longer
	// prefixes included) to be installed; the spec fills the default,
	// DefaultImport, when the list is not written.
	Import []netip.Prefix `json:"import"`
	// EVPN negotiates the L2VPN EVPN family with every peer: set when a
	// network is stretched (has vxlan).
	EVPN bool `json:"evpn,omitempty"`
}

// BGPPeer is one neighbour.
type BGPPeer struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// Hold is the hold time offered (keepalive is a third of it).
	Hold time.Duration `json:"hold"`
	// MaxPrefixes bounds what the peer may announce: one more and the
	// session is shut down (RFC 4486 cease), as routers do, until the
	// config changes the limit or serve restarts.
	MaxPrefixes int `json:"max_prefixes"`
}

// Defaults of the bgp section.
const (
	BGPPort    = 179
	BGPHold    = 9 * time.Second
	BGPMinHold = 3 * time.Second // RFC 4271 §4.2: 0 or at least 3 s (0, no keepalives, is refused: a dead peer would never be noticed)
	BGPMaxHold = 65535 * time.Second
	// BGPMaxPrefixes is a peer's default max_prefixes: a LAN's routes
	// with room to spare, far below what would hurt (a flood of 100,000
	// prefixes held 443 MB in serve and took 86 s to install).
	BGPMaxPrefixes    = 10000
	BGPMaxMaxPrefixes = 10000000
	ProtoBGP          = 186 // rtnetlink protocol "bgp" (/etc/iproute2/rt_protos): routes the speaker installed
	// BGPMetric is the priority of installed routes. With ProtoBGP it
	// marks them as the speaker's: FRR's zebra installs protocol bgp too,
	// with metric 20 (eBGP) or 200 (iBGP), and a host may run both. A typed
	// static route (metric 0) for the same prefix wins over it.
	BGPMetric   = 186
	BGPProtoTag = "bgp"
)

// DefaultImport are the private ranges, the RFC 1918 ones and IPv6's
// unique local addresses (fc00::/7, RFC 4193): what a speaker installs
// when the spec lists no import.
var DefaultImport = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
}

// Announced is what this host announces for its networks: the subnets of
// routed and open networks, IPv4 and IPv6; for nat networks the floating
// addresses and the listen addresses of forwards (/32 or /128 each), not
// the subnets, which are masqueraded, except those of a nat network with
// routed_from: its subnets go to the peers inside those prefixes alone
// (see Scoped). A network with NoAnnounce
// announces nothing. Sorted, without duplicates. A pure function of the
// spec (the daemon announces it after each apply).
func Announced(nets []Network) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nets {
		if n.NoAnnounce {
			continue
		}
		switch n.Mode {
		case Routed, Open:
			out = append(out, n.Subnets()...)
		case NAT:
			if len(n.RoutedFrom) > 0 {
				out = append(out, n.Subnets()...)
			}
			for _, f := range n.Floating {
				out = append(out, HostPrefix(f.Public))
			}
			for _, f := range n.Forwards {
				for _, a := range f.Listen {
					out = append(out, HostPrefix(a))
				}
			}
		}
	}
	slices.SortFunc(out, ComparePrefix)
	return slices.Compact(out)
}

// ScopedPrefix is an announced prefix that only some peers may receive:
// those whose address lies in one of To.
type ScopedPrefix struct {
	Prefix netip.Prefix   `json:"prefix"`
	To     []netip.Prefix `json:"to"`
}

// Scoped are the announced prefixes with a limited audience: the subnets
// of each nat network with routed_from, to the peers inside its
// routed_from prefixes (the LAN's hosts that route to the guests; anyone
// else reaching the subnet would be refused by the firewall). Sorted by
// prefix; a network with NoAnnounce has none.
func Scoped(nets []Network) []ScopedPrefix {
	var out []ScopedPrefix
	for _, n := range nets {
		if n.NoAnnounce || n.Mode != NAT || len(n.RoutedFrom) == 0 {
			continue
		}
		for _, p := range n.Subnets() {
			out = append(out, ScopedPrefix{Prefix: p, To: slices.Clone(n.RoutedFrom)})
		}
	}
	slices.SortFunc(out, func(a, b ScopedPrefix) int { return ComparePrefix(a.Prefix, b.Prefix) })
	return out
}

// ComparePrefix orders prefixes by address, then length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
