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
