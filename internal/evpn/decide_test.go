package evpn

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

var (
	vtepA = netip.MustParseAddr("10.10.0.1")
	vtepB = netip.MustParseAddr("10.10.0.2")
	vtepC = netip.MustParseAddr("10.10.0.3")
	gw    = netip.MustParseAddr("10.60.0.1")
)

func testNet(vtep netip.Addr) Network {
	return Network{Name: "stretch", VNI: 6000, Bridge: "gst0", VXLAN: "gvx6000", VTEP: vtep, Gateway: gw, GatewayMAC: model.BridgeMAC("stretch")}
}

func mac(i int) string { return fmt.Sprintf("52:54:00:00:00:%02x", i) }
func ip(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 60, 0, byte(100 + i)})
}

func TestDecideMoveHere(t *testing.T) {
	n := testNet(vtepA)
	in := Input{
		Networks: []Network{n},
		Local:    []Guest{{VNI: 6000, MAC: mac(1), IPs: []netip.Addr{ip(1)}}},
		Remote: model.EVPN{
			Flood: []model.EVPNFlood{{VNI: 6000, VTEP: vtepB}, {VNI: 6000, VTEP: vtepA}, {VNI: 7000, VTEP: vtepC}},
			MACs: []model.EVPNMAC{
				{VNI: 6000, VTEP: vtepB, MAC: mac(1), Seq: 3},
				{VNI: 6000, VTEP: vtepB, MAC: mac(1), IP: ip(1), Seq: 3},
				{VNI: 6000, VTEP: vtepC, MAC: mac(2), IP: ip(2)},
				{VNI: 6000, VTEP: vtepC, MAC: mac(2), IP: ip(2)}, // a duplicate (two paths)
				{VNI: 6000, VTEP: vtepC, MAC: n.GatewayMAC, IP: gw},
			},
		},
	}
	d := Decide(in)
	want := model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 6000, VTEP: vtepA}},
		MACs: []model.EVPNMAC{
			{VNI: 6000, VTEP: vtepA, MAC: mac(1), Seq: 4},
			{VNI: 6000, VTEP: vtepA, MAC: mac(1), IP: ip(1), Seq: 4},
		},
	}
	if !equalEVPN(d.Announce, want) {
		t.Fatalf("announce\n got %+v\nwant %+v", d.Announce, want)
	}
	wantIn := Install{
		Flood:  []Flood{{Device: "gvx6000", VTEP: vtepB}},
		MACs:   []RemoteMAC{{Device: "gvx6000", Bridge: "gst0", MAC: mac(2), VTEP: vtepC}},
		Neighs: []Neigh{{Bridge: "gst0", IP: ip(2), MAC: mac(2)}},
	}
	if !equalInstall(d.Install, wantIn) {
		t.Fatalf("install\n got %+v\nwant %+v", d.Install, wantIn)
	}
	// Announced again with the same routes: the Seq stays (no bump at
	// every pass), and the late route of the old host changes nothing.
	in.Announced = d.Announce
	if d2 := Decide(in); !equalEVPN(d2.Announce, want) || !equalInstall(d2.Install, wantIn) {
		t.Fatalf("second pass changed the decision: %+v", d2)
	}
	// The old host withdraws late: still the same.
	in.Remote.MACs = in.Remote.MACs[2:]
	if d3 := Decide(in); !equalEVPN(d3.Announce, want) || !equalInstall(d3.Install, wantIn) {
		t.Fatalf("the late withdraw changed the decision: %+v", d3)
	}
}

func TestDecideMoveAway(t *testing.T) {
	in := Input{
		Networks:  []Network{testNet(vtepB)},
		Local:     []Guest{{VNI: 6000, MAC: mac(1)}},
		Announced: model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtepB, MAC: mac(1), Seq: 2}}},
		Remote:    model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtepC, MAC: mac(1), IP: ip(1), Seq: 3}}},
	}
	d := Decide(in)
	if len(d.Announce.MACs) != 0 {
		t.Fatalf("a MAC that moved away is still announced: %+v", d.Announce.MACs)
	}
	want := []RemoteMAC{{Device: "gvx6000", Bridge: "gst0", MAC: mac(1), VTEP: vtepC}}
	if !slices.Equal(d.Install.MACs, want) || len(d.Install.Neighs) != 1 {
		t.Fatalf("install %+v, want %+v and one neighbour", d.Install, want)
	}
	// A tie goes to the lower VTEP: B keeps a Seq-2 route against C's.
	in.Remote.MACs[0].Seq = 2
	if d := Decide(in); len(d.Announce.MACs) != 1 || len(d.Install.MACs) != 0 {
		t.Fatalf("B lost a tie to C: %+v", d)
	}
}

func TestDecideNoVTEP(t *testing.T) {
	d := Decide(Input{
		Networks: []Network{testNet(netip.Addr{})},
		Local:    []Guest{{VNI: 6000, MAC: mac(1)}},
		Remote:   model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtepC, MAC: mac(2)}}},
	})
	if len(d.Announce.MACs)+len(d.Announce.Flood) != 0 || len(d.Install.MACs) != 1 {
		t.Fatalf("no VTEP: want nothing announced and the remote MAC installed, got %+v", d)
	}
}

func equalEVPN(a, b model.EVPN) bool {
	a.Sort()
	b.Sort()
	return slices.Equal(a.Flood, b.Flood) && slices.Equal(a.MACs, b.MACs)
}

func equalInstall(a, b Install) bool {
	a.Sort()
	b.Sort()
	return slices.Equal(a.Flood, b.Flood) && slices.Equal(a.MACs, b.MACs) && slices.Equal(a.Neighs, b.Neighs)
}
