package evpn

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

func TestHostRoutes(t *testing.T) {
	vtep := netip.MustParseAddr("10.10.0.1")
	routed := Network{Name: "lab", VNI: 6000, Bridge: "grt0", VXLAN: "gvx6000", VTEP: vtep,
		Gateway: netip.MustParseAddr("10.60.0.1"), GatewayMAC: "02:00:00:00:00:01",
		Subnet: netip.MustParsePrefix("10.60.0.0/24"), HostRoutes: true}
	isolated := Network{Name: "iso", VNI: 6001, Bridge: "giso0", VXLAN: "gvx6001", VTEP: vtep,
		Gateway: netip.MustParseAddr("10.61.0.1"), Subnet: netip.MustParsePrefix("10.61.0.0/24")}
	nets := []Network{routed, isolated}
	local := []Guest{
		{VNI: 6000, MAC: "52:54:00:00:00:01", IPs: []netip.Addr{netip.MustParseAddr("10.60.0.101")}},
		// Two addresses, one outside the subnet (a neighbour entry of a
		// guest that spoke from an address it does not own), one IPv6.
		{VNI: 6000, MAC: "52:54:00:00:00:02", IPs: []netip.Addr{netip.MustParseAddr("10.60.0.102"), netip.MustParseAddr("10.99.0.7"), netip.MustParseAddr("fd00::2")}},
		{VNI: 6000, MAC: "52:54:00:00:00:03"}, // no address known yet
		{VNI: 6001, MAC: "52:54:00:00:00:04", IPs: []netip.Addr{netip.MustParseAddr("10.61.0.104")}},
	}
	// Host 2 announces 52:54:00:00:00:05 too: it moved there (Seq 1 over
	// this host's 0), so its address is host 2's to announce.
	moved := netip.MustParseAddr("10.60.0.105")
	local = append(local, Guest{VNI: 6000, MAC: "52:54:00:00:00:05", IPs: []netip.Addr{moved}})
	remote := model.EVPN{MACs: []model.EVPNMAC{
		{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.2"), MAC: "52:54:00:00:00:05", Seq: 1},
		{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.2"), MAC: "52:54:00:00:00:05", IP: moved, Seq: 1},
		// A remote guest: never a host route of this host.
		{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.2"), MAC: "52:54:00:00:00:06", IP: netip.MustParseAddr("10.60.0.106")},
	}}
	announced := model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtep, MAC: "52:54:00:00:00:05", Seq: 0}}}
	dec := Decide(Input{Networks: nets, Local: local, Remote: remote, Announced: announced})

	got := fmt.Sprint(HostRoutes(nets, dec.Announce))
	if want := "[10.60.0.101/32 10.60.0.102/32]"; got != want {
		t.Fatalf("host routes %s, want %s (the routed network's local guests with an address in its subnet; not the isolated network's, not the moved or remote ones)\nannounced: %+v", got, want, dec.Announce.MACs)
	}

	// The guest that moved away comes back (host 2 withdrew): its /32
	// is this host's again.
	dec = Decide(Input{Networks: nets, Local: local, Announced: dec.Announce})
	if got, want := fmt.Sprint(HostRoutes(nets, dec.Announce)), "[10.60.0.101/32 10.60.0.102/32 10.60.0.105/32]"; got != want {
		t.Fatalf("after host 2 withdrew the moved guest: host routes %s, want %s", got, want)
	}

	// The gateway's own address is never a guest's; no VTEP, nothing
	// announced, no host route.
	gw := model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtep, MAC: "52:54:00:00:00:07", IP: routed.Gateway}}}
	if got := HostRoutes(nets, gw); len(got) != 0 {
		t.Errorf("the gateway's address became a host route: %v", got)
	}
	noVTEP := []Network{routed}
	noVTEP[0].VTEP = netip.Addr{}
	if got := HostRoutes(noVTEP, Decide(Input{Networks: noVTEP, Local: local}).Announce); len(got) != 0 {
		t.Errorf("host routes without a VTEP (nothing is announced): %v", got)
	}
}

// A guest with a static address moves here: its gratuitous ARP left no
// entry in the neighbour table, so it carries the address the old host's
// MAC+IP route named, then the one this host announced once the old host
// withdrew; an address learned here replaces the carried one.
func TestCarryIPs(t *testing.T) {
	old, here := netip.MustParseAddr("10.10.0.1"), netip.MustParseAddr("10.10.0.2")
	ip := netip.MustParseAddr("10.60.0.103")
	mac := "52:54:00:00:00:03"
	remote := model.EVPN{MACs: []model.EVPNMAC{
		{VNI: 6000, VTEP: old, MAC: mac},
		{VNI: 6000, VTEP: old, MAC: mac, IP: ip},
		{VNI: 6000, VTEP: old, MAC: "52:54:00:00:00:09", IP: netip.MustParseAddr("10.60.0.109")},
		{VNI: 6001, VTEP: old, MAC: mac, IP: netip.MustParseAddr("10.61.0.3")}, // another network's
	}}
	local := []Guest{{VNI: 6000, MAC: mac}, {VNI: 6000, MAC: "52:54:00:00:00:04"}}
	got := CarryIPs(local, remote, model.EVPN{})
	if fmt.Sprint(got[0].IPs) != "[10.60.0.103]" || len(got[1].IPs) != 0 || len(local[0].IPs) != 0 {
		t.Fatalf("carried %+v (local now %+v), want 10.60.0.103 for %s alone, local untouched", got, local, mac)
	}
	n := Network{Name: "lab", VNI: 6000, Bridge: "grt0", VXLAN: "gvx6000", VTEP: here,
		Gateway: netip.MustParseAddr("10.60.0.1"), Subnet: netip.MustParsePrefix("10.60.0.0/24"), HostRoutes: true}
	dec := Decide(Input{Networks: []Network{n}, Local: got, Remote: remote})
	if hr := fmt.Sprint(HostRoutes([]Network{n}, dec.Announce)); hr != "[10.60.0.103/32]" {
		t.Fatalf("host routes of the moved guest: %s, want [10.60.0.103/32]", hr)
	}
	// The old host withdrew: this host's own announcement carries it.
	got = CarryIPs(local, model.EVPN{}, dec.Announce)
	if fmt.Sprint(got[0].IPs) != "[10.60.0.103]" {
		t.Fatalf("after the old host withdrew: %+v", got)
	}
	// Learned here: the carried address goes.
	local[0].IPs = []netip.Addr{netip.MustParseAddr("10.60.0.113")}
	if got = CarryIPs(local, remote, dec.Announce); fmt.Sprint(got[0].IPs) != "[10.60.0.113]" {
		t.Fatalf("with an address of its own: %+v", got)
	}
}
