package model

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// The VXLAN part of the guard table (table bridge guestnet): a stretched
// network's gateway is anycast (the same address and MAC on every host's
// bridge), and each host answers for it and for DHCP on its own. So on the
// VXLAN port of a stretched network (model.VXLANName(vni), a port of its
// bridge), in both directions, the table drops
//   - DHCPv4 (UDP to port 67 or 68): a guest's DISCOVER reaches its own
//     host's server only, and no server's OFFER reaches another host;
//   - ARP whose target or sender address is a gateway address: a guest's
//     request for the gateway, the gateway's answer, its gratuitous ARP;
//   - any frame whose source MAC is a gateway MAC (model.BridgeMAC), the
//     bridge's own frames included: another host's bridge must never see
//     the MAC it owns arrive on a port.
//
// Frames coming in are checked at prerouting (iifname), before anything
// else of the table; frames going out at postrouting (oifname), the hook
// every frame leaving a bridge port passes, forwarded or sent by the
// bridge itself (the kernel's bridge output path goes through
// postrouting, so one chain covers both). The kernel guestnet targets has
// no meta ibrname, so a frame's network is told by its port's name: the
// sets are of ports, gateway addresses and gateway MACs; subnets do not
// overlap and gateway MACs are per network, so one network's gateway
// cannot be confused with another's.
//
// The VXLAN port is not a guest port: it carries the frames of the other
// hosts' guests, which their own hosts guard. It is never bound, never a
// first-come port (Network.Infra), and its frames skip chain check; a
// frame whose source MAC is bound to a local port is still dropped as
// spoofed (the MAC is this host's guest's while that port is here).

// The VXLAN sets of the guard table.
const (
	GuardVXLANPorts    = "vxlan_ports"       // VXLAN devices of stretched networks (declared)
	GuardVXLANGateways = "vxlan_gateways"    // their gateway addresses (declared)
	GuardVXLANMACs     = "vxlan_macs"        // their gateway MACs (declared)
	GuardVXLANInDrops  = "vxlan_dropped_in"  // iifname . MAC . ether type of frames dropped coming in
	GuardVXLANOutDrops = "vxlan_dropped_out" // oifname . MAC . ether type of frames dropped going out
)

// DeclaredSetsVXLAN are the VXLAN sets plan owns, next to DeclaredSets.
var DeclaredSetsVXLAN = []string{GuardVXLANPorts, GuardVXLANGateways, GuardVXLANMACs}

// EtherTypeRARP is the ether type of RARP, which QEMU sends after a live
// migration (qemu_announce_self) from the guest's MAC so that switches,
// and bridges, learn where the guest is now.
const EtherTypeRARP = 0x8035

// Infra reports whether port, a port of the network's bridge, carries no
// guest of this host: the uplink of a bridge-mode network, or the VXLAN
// device of a stretched one. Anti-spoofing neither binds nor claims for
// it, and status lists it as no guest port.
func (n Network) Infra(port string) bool {
	return (n.Uplink != "" && port == n.Uplink) || (n.Stretched() && port == VXLANName(n.VXLAN.VNI))
}

// SetVXLAN makes the VXLAN sets those of the stretched networks.
func (g *Guard) SetVXLAN(nets []Network) {
	g.VXLANPorts, g.VXLANGateways, g.VXLANMACs = nil, nil, nil
	for _, n := range nets {
		if !n.Stretched() {
			continue
		}
		g.VXLANPorts = append(g.VXLANPorts, VXLANName(n.VXLAN.VNI))
		g.VXLANMACs = append(g.VXLANMACs, BridgeMAC(n.Name))
		if n.IPv4.IsValid() {
			g.VXLANGateways = append(g.VXLANGateways, n.IPv4.Addr())
		}
	}
	slices.Sort(g.VXLANPorts)
	g.VXLANPorts = slices.Compact(g.VXLANPorts)
	slices.Sort(g.VXLANMACs)
	g.VXLANMACs = slices.Compact(g.VXLANMACs)
	slices.SortFunc(g.VXLANGateways, netip.Addr.Compare)
	g.VXLANGateways = slices.Compact(g.VXLANGateways)
}

// VXLANDrop is what sets vxlan_dropped_in and vxlan_dropped_out remember
// of frames the VXLAN rules dropped: port, direction, source MAC and
// ether type. An entry lives DropMemory after the last drop.
type VXLANDrop struct {
	Port string `json:"port"`
	// Out is true for frames that were to leave through the port (to the
	// other hosts), false for frames that came in from it.
	Out       bool          `json:"out,omitempty"`
	MAC       string        `json:"mac"`
	EtherType string        `json:"ether_type"` // as nft names it: "ip", "arp", ...
	Packets   uint64        `json:"packets"`
	Ago       time.Duration `json:"ago_ns"`
	// What is filled in by VXLANDropsOf: "DHCP", "ARP for the gateway",
	// "from the gateway MAC".
	What string `json:"what,omitempty"`
}

// Summary says what was dropped: "3 frames in from MAC m (DHCP, last 2s
// ago): DHCP, the gateway and its MAC stay on each host".
func (x VXLANDrop) Summary() string {
	dir := "in"
	if x.Out {
		dir = "out"
	}
	return fmt.Sprintf("%s %s from MAC %s (%s, last %s ago): DHCP, ARP for the gateway and the gateway MAC stay on each host",
		Frames(x.Packets), dir, x.MAC, x.What, x.Ago.Round(time.Second))
}

// VXLANDropsOf are the recorded drops on one VXLAN port, latest first,
// each with what it was.
func (g Guard) VXLANDropsOf(port string) []VXLANDrop {
	var out []VXLANDrop
	for _, x := range g.VXLANDrops {
		if x.Port != port {
			continue
		}
		switch {
		case slices.Contains(g.VXLANMACs, x.MAC):
			x.What = "from the gateway MAC"
		case x.EtherType == "arp":
			x.What = "ARP for or from the gateway"
		case x.EtherType == "ip":
			x.What = "DHCP"
		default:
			x.What = "DHCP in ether type " + x.EtherType
		}
		out = append(out, x)
	}
	return out
}

// guardVXLAN is the VXLAN part of the guard table's description (see the
// top of this file): its sets, its chains, the prerouting rule that sends
// a VXLAN port's frames to chain vxlan_in (first of all), and the base
// chain postrouting that sends the frames leaving one to vxlan_out.
func guardVXLAN() (sets []GuardSet, chains []GuardChain, dispatch GuardRule, post GuardChain) {
	lookup := func(set string, key ...Field) Term { return Term{Op: OpLookup, Set: set, Key: key} }
	drops := []string{"ifname", "ether_addr", "ether_type"}
	sets = []GuardSet{
		{Name: GuardVXLANPorts, Key: []string{"ifname"}},
		{Name: GuardVXLANGateways, Key: []string{IPv4.AddrType()}},
		{Name: GuardVXLANMACs, Key: []string{"ether_addr"}},
		{Name: GuardVXLANInDrops, Key: drops, Size: DropEntries, Timeout: DropMemory},
		{Name: GuardVXLANOutDrops, Key: drops, Size: DropEntries, Timeout: DropMemory},
	}
	// check holds the drops of one direction; port is the field of the
	// VXLAN port (iifname or oifname), record the set of its drops.
	check := func(name, drop string, dev Field, record string) []GuardChain {
		to := GuardVerdict{"goto", drop}
		dhcp := func(p uint16) []Term {
			return []Term{{Op: OpProtocol, Proto: string(IPv4)}, {Op: OpL4, Proto: "udp"}, {Op: OpEq, Field: FieldUDPDport, Value: port(p)}}
		}
		arp := func(f Field) []Term {
			return []Term{{Op: OpEtherType, Proto: "arp"}, {Op: OpARPHeader}, lookup(GuardVXLANGateways, f)}
		}
		return []GuardChain{
			{Name: drop, Rules: []GuardRule{
				{Terms: []Term{{Op: OpUpdate, Set: record, Key: []Field{dev, FieldEtherSrc, FieldEtherType}}}},
				{[]Term{{Op: OpCounter}}, GuardVerdict{Kind: "drop"}},
			}},
			{Name: name, Rules: []GuardRule{
				{[]Term{lookup(GuardVXLANMACs, FieldEtherSrc)}, to},
				{dhcp(67), to},
				{dhcp(68), to},
				{arp(FieldARPDstIP), to},
				{arp(FieldARPSrcIP), to},
			}},
		}
	}
	chains = append(check("vxlan_in", "vxlan_drop_in", FieldIIF, GuardVXLANInDrops),
		check("vxlan_out", "vxlan_drop_out", FieldOIF, GuardVXLANOutDrops)...)
	dispatch = GuardRule{[]Term{lookup(GuardVXLANPorts, FieldIIF)}, GuardVerdict{"jump", "vxlan_in"}}
	post = GuardChain{Name: "postrouting", Hook: "postrouting", Rules: []GuardRule{
		{[]Term{lookup(GuardVXLANPorts, FieldOIF)}, GuardVerdict{"goto", "vxlan_out"}},
	}}
	return sets, chains, dispatch, post
}
