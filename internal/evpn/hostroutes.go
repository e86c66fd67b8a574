package evpn

import (
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// HostRoutes are the /32 host routes this host announces in IPv4 unicast
// BGP for its own guests of stretched networks with HostRoutes set: the
// address of every MAC+IP route of announce (the local guests that won,
// Decision.Announce) inside the network's Subnet, but the gateway.
//
// Every host announces a stretched routed network's subnet, and each one
// routes for its own guests only (the anycast gateway's frames never
// cross the VXLAN port), so a packet from the LAN for a guest of host B
// that reaches host A is dropped at A. The /32 from the guest's own host
// is the longer match: the LAN sends it there (what EVPN fabrics call
// advertising host routes). A guest that moves away leaves announce (the
// other host won the MAC), so its /32 is withdrawn here and announced
// there. Sorted, without duplicates.
func HostRoutes(nets []Network, announce model.EVPN) []netip.Prefix {
	byVNI := map[uint32]Network{}
	for _, n := range nets {
		if n.HostRoutes && n.Subnet.IsValid() && n.Subnet.Addr().Is4() {
			byVNI[n.VNI] = n
		}
	}
	var out []netip.Prefix
	for _, r := range announce.MACs {
		n, ok := byVNI[r.VNI]
		ip := r.IP.Unmap()
		if !ok || !ip.Is4() || !n.Subnet.Contains(ip) || ip == n.Gateway.Unmap() {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, 32))
	}
	slices.SortFunc(out, model.ComparePrefix)
	return slices.Compact(out)
}

// CarryIPs gives each local guest that this host knows no address of the
// addresses the EVPN routes name for its MAC: the other hosts' MAC+IP
// routes (a guest that just moved here, announced there with its
// address) and this host's own last announcement (once the old host
// withdrew). A guest with static addresses that moves sends a gratuitous
// ARP, which the bridge's neighbour table does not take (arp_accept is
// off), so without this the new host would announce its MAC alone: no
// host route, no ARP suppression entry on the others, and the LAN's
// packets for it would still go to its old host until it spoke to this
// host's gateway. Addresses the host learns itself (its lease, the
// neighbour table) replace the carried ones. local is not modified.
func CarryIPs(local []Guest, remote, announced model.EVPN) []Guest {
	named := map[key][]netip.Addr{}
	for _, r := range slices.Concat(remote.MACs, announced.MACs) {
		if r.IP.IsValid() {
			named[key{r.VNI, r.MAC}] = append(named[key{r.VNI, r.MAC}], r.IP)
		}
	}
	out := slices.Clone(local)
	for i, g := range out {
		if len(g.IPs) > 0 {
			continue
		}
		ips := slices.Clone(named[key{g.VNI, g.MAC}])
		slices.SortFunc(ips, netip.Addr.Compare)
		out[i].IPs = slices.Compact(ips)
	}
	return out
}
