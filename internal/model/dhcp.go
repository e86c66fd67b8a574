package model

import (
	"net/netip"
	"time"
)

// DHCP is a network's DHCPv4 service, served by `guestnet serve`.
type DHCP struct {
	Ranges []Range       `json:"ranges"`
	Lease  time.Duration `json:"lease"`
	Hosts  []StaticHost  `json:"hosts,omitempty"`
	DNS    []netip.Addr  `json:"dns,omitempty"`
	Domain string        `json:"domain,omitempty"`
	MTU    int           `json:"mtu,omitempty"`
	Routes []StaticRoute `json:"routes,omitempty"` // option 121
	// PerPort caps the dynamic addresses one bridge port may hold at once,
	// live leases plus outstanding offers (0: no cap); clients whose port
	// is not known share one such share. Static hosts are not capped.
	PerPort int `json:"per_port,omitempty"`
}

// Range is an inclusive span of addresses to lease.
type Range struct {
	From netip.Addr `json:"from"`
	To   netip.Addr `json:"to"`
}

// Contains reports whether a is in the range.
func (r Range) Contains(a netip.Addr) bool {
	return r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// StaticHost is a fixed address (and name) for a MAC.
type StaticHost struct {
	MAC  string     `json:"mac"` // canonical lower-case form
	IP   netip.Addr `json:"ip"`
	Name string     `json:"name,omitempty"`
}

// StaticRoute is a classless static route handed to guests.
type StaticRoute struct {
	To  netip.Prefix `json:"to"`
	Via netip.Addr   `json:"via"`
}

// DNS is a network's name service, answered by `guestnet serve` on the
// bridge address: guests' names under Domain, the rest forwarded.
type DNS struct {
	Domain   string       `json:"domain"`
	Upstream []netip.Addr `json:"upstream,omitempty"`
}
