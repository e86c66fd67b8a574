// Package evpn decides what one host of stretched networks announces over
// BGP EVPN and what it installs in its kernel from what the others
// announce, and syncs the kernel's VXLAN forwarding database and the
// bridges' neighbour tables to that decision (linux.go).
//
// The decision (Decide) is pure: it takes the complete current state
// (the stretched networks, the guests this host's bridges learned, every
// EVPN route received, what it announced last time) and returns the
// complete set to announce and to install. It never works from single
// events: a late withdraw from a guest's old host changes the received
// set, and the set recomputed from it still points at the new host
// (FRR had that bug: frr#21472).
package evpn

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// Network is one stretched network as this host carries it.
type Network struct {
	Name   string `json:"name"`
	VNI    uint32 `json:"vni"`
	Bridge string `json:"bridge"`
	// VXLAN is the network's VXLAN device (model.VXLANName(VNI)), a port
	// of Bridge.
	VXLAN string `json:"vxlan"`
	// VTEP is this host's tunnel address; invalid means it is not known
	// yet: nothing of the network is announced, remote routes are still
	// installed.
	VTEP netip.Addr `json:"vtep"`
	// Gateway is the bridge's (anycast) address and GatewayMAC its MAC:
	// every host has them, so they are neither a local guest nor a remote
	// one.
	Gateway    netip.Addr `json:"gateway,omitzero"`
	GatewayMAC string     `json:"gateway_mac,omitempty"`
	// Subnet is the network's IPv4 subnet and HostRoutes says whether its
	// local guests' addresses in it are announced as host routes in IPv4
	// unicast BGP (HostRoutes): a routed network, or a nat network with
	// routed_from, announced (the LAN routes to the guests).
	Subnet     netip.Prefix `json:"subnet,omitzero"`
	HostRoutes bool         `json:"host_routes,omitempty"`
}

// Guest is a MAC one of this host's stretched bridges learned on a port
// other than the VXLAN device, with the addresses this host knows it by
// (its DHCP lease, the bridge's neighbour table).
type Guest struct {
	VNI uint32 `json:"vni"`
	MAC string `json:"mac"`
	// Port is the ifindex of the bridge port the MAC was learned on (0:
	// not known): at most model.EVPNMaxMACsPerPort of one port are
	// announced.
	Port int          `json:"port,omitempty"`
	IPs  []netip.Addr `json:"ips,omitempty"`
}

// Input is everything Decide reads.
type Input struct {
	Networks []Network
	Local    []Guest
	// Remote is every EVPN route received (model.EVPN from the speaker),
	// not only the best per MAC; duplicates are harmless.
	Remote model.EVPN
	// Announced is what the last Decision announced (zero at the start):
	// it carries each MAC's mobility sequence number from one decision to
	// the next.
	Announced model.EVPN
}

// Decision is what this host announces and installs.
type Decision struct {
	Announce model.EVPN `json:"announce"`
	Install  Install    `json:"install"`
	// Unannounced are the local MACs left out because their port has
	// model.EVPNMaxMACsPerPort announced already (a guest sending from
	// random source MACs).
	Unannounced []Guest `json:"unannounced,omitempty"`
}

// Install is the kernel entries the remote routes ask for.
type Install struct {
	// Flood are the VTEPs each VXLAN device replicates broadcast and
	// unknown traffic to (type-3 routes).
	Flood []Flood `json:"flood,omitempty"`
	// MACs are the remote guests (type-2 routes, the best per MAC).
	MACs []RemoteMAC `json:"macs,omitempty"`
	// Neighs are the remote guests' addresses, for the bridge's ARP
	// suppression.
	Neighs []Neigh `json:"neighs,omitempty"`
}

// Flood is an all-zero FDB entry of a VXLAN device: broadcast and unknown
// frames go to VTEP too.
type Flood struct {
	Device string     `json:"device"`
	VTEP   netip.Addr `json:"vtep"`
}

// RemoteMAC is a remote guest: frames to MAC leave Bridge through the
// VXLAN device Device, to VTEP.
type RemoteMAC struct {
	Device string     `json:"device"`
	Bridge string     `json:"bridge"`
	MAC    string     `json:"mac"`
	VTEP   netip.Addr `json:"vtep"`
}

// Neigh is a remote guest's address in Bridge's neighbour table.
type Neigh struct {
	Bridge string     `json:"bridge"`
	IP     netip.Addr `json:"ip"`
	MAC    string     `json:"mac"`
}

// Sort puts i in a canonical order so that equal sets compare equal.
func (i *Install) Sort() {
	slices.SortFunc(i.Flood, func(a, b Flood) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), a.VTEP.Compare(b.VTEP))
	})
	slices.SortFunc(i.MACs, func(a, b RemoteMAC) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.MAC, b.MAC))
	})
	slices.SortFunc(i.Neighs, func(a, b Neigh) int {
		return cmp.Or(cmp.Compare(a.Bridge, b.Bridge), a.IP.Compare(b.IP))
	})
}

func (f Flood) String() string {
	return fmt.Sprintf("bridge fdb append 00:00:00:00:00:00 dev %s dst %s self", f.Device, f.VTEP)
}

func (m RemoteMAC) String() string {
	return fmt.Sprintf("bridge fdb replace %s dev %s dst %s self extern_learn; bridge fdb replace %s dev %s master extern_learn",
		m.MAC, m.Device, m.VTEP, m.MAC, m.Device)
}

func (n Neigh) String() string {
	return fmt.Sprintf("ip neigh replace %s lladdr %s dev %s nud noarp extern_learn", n.IP, n.MAC, n.Bridge)
}
