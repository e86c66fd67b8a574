package model

import (
	"net/netip"
	"time"
)

// DHCP6 is a network's stateful DHCPv6 service (IA_NA addresses), served by
// `guestnet serve` next to router advertisements; SLAAC stays on.
type DHCP6 struct {
	Ranges []Range       `json:"ranges"`
	Lease  time.Duration `json:"lease"` // valid lifetime; preferred is 5/8 of it
	Hosts  []StaticHost6 `json:"hosts,omitempty"`
	// PerPort caps the dynamic addresses one bridge port may hold at once
	// (leases, offers and its declines; 0: no cap), as DHCP.PerPort.
	PerPort int `json:"per_port,omitempty"`
}

// StaticHost6 is a fixed IPv6 address (and name) for a client, named by its
// DUID or, for clients whose DUID changes with each install, by the MAC of
// the port it asks from (the link-layer address of its DUID-LL/LLT or the
// frame's source). One of DUID and MAC is set.
type StaticHost6 struct {
	DUID string     `json:"duid,omitempty"` // hex bytes, lower case, colon-separated
	MAC  string     `json:"mac,omitempty"`  // canonical lower-case form
	IP   netip.Addr `json:"ip"`
	Name string     `json:"name,omitempty"`
}

// The router advertisement's timers (radvd's defaults): an RA at least
// every RAMaxInterval, a router lifetime of three intervals, and the
// prefix's lifetimes.
const (
	RAMinInterval   = 200 * time.Second
	RAMaxInterval   = 600 * time.Second
	RouterLifetime  = 3 * RAMaxInterval
	PrefixValid     = 24 * time.Hour
	PrefixPreferred = 4 * time.Hour
	DNSLifetime     = 3 * RAMaxInterval // RDNSS and DNSSL lifetimes
)

// RA is what a network's router advertisements say: a pure function of the
// network, so that the daemon's RA service, status and the tests read the
// same thing.
type RA struct {
	// RouterLifetime is zero on isolated networks: guests get addresses,
	// no default route.
	RouterLifetime time.Duration
	Managed        bool         // M: stateful DHCPv6 for addresses
	Other          bool         // O: other configuration by DHCPv6 (DNS)
	Prefix         netip.Prefix // the on-link prefix (Subnet6)
	Autonomous     bool         // A: guests form SLAAC addresses (a /64)
	RDNSS          []netip.Addr // the bridge's IPv6 address when dns: is set
	DNSSL          []string     // dns.domain
	MTU            int          // the network's mtu, 0: not advertised
}

// RA is the router advertisement of a network with ipv6 (ok false without).
func (n Network) RA() (RA, bool) {
	if !n.IPv6.IsValid() || !n.GuestBridge() {
		return RA{}, false
	}
	ra := RA{
		RouterLifetime: RouterLifetime,
		Managed:        n.DHCP6 != nil,
		Other:          n.DHCP6 != nil,
		Prefix:         n.Subnet6(),
		Autonomous:     n.Subnet6().Bits() == 64,
		MTU:            n.MTU,
	}
	if n.Mode == Isolated {
		ra.RouterLifetime = 0
	}
	if n.DNS != nil {
		ra.RDNSS = []netip.Addr{n.IPv6.Addr()}
		ra.DNSSL = []string{n.DNS.Domain}
	}
	return ra, true
}

// LinkLocal is the IPv6 link-local prefix: every port's own link-local
// address is in it, and ND, MLD and RA come from it.
var LinkLocal = netip.MustParsePrefix("fe80::/10")
