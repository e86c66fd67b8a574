package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// stretchHost is one host of a stretched nat network (gst0, VNI 6000) with
// br_netfilter on: a local guest on vA, the VXLAN device gvx6000, and an
// uplink.
func stretchHost(t *testing.T) model.Host {
	nets := []model.Network{{Name: "stretch", Mode: model.NAT, Bridge: "gst0", IPv4: netip.MustParsePrefix("10.60.0.1/24"),
		VXLAN: &model.VXLAN{VNI: 6000, Port: model.VXLANPort}}}
	h := model.Host{
		Links: []model.Link{
			{Name: "gst0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{netip.MustParsePrefix("10.60.0.1/24")}},
			{Name: "gvx6000", Kind: "vxlan", Up: true, Master: "gst0"},
			{Name: "lan0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.10.0.1/24")}},
			{Name: "vA", Kind: "veth", Up: true, Master: "gst0"},
		},
		Routes: []model.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("10.10.0.254"), Dev: "lan0"},
			{Dst: netip.MustParsePrefix("10.10.0.0/24"), Dev: "lan0", Proto: 2},
			{Dst: netip.MustParsePrefix("10.60.0.0/24"), Dev: "gst0", Proto: 2},
		},
		IPForward: true, BridgeNFCallIPTables: true,
	}
	rs, err := nft.Render(nets, h)
	if err != nil {
		t.Fatal(err)
	}
	h.Ruleset = rs
	return h
}

// TestWalkStretched: a guest of a stretched network to a guest of another
// host is bridged (accepted by to-stretch, never masqueraded) over the
// VXLAN device to the VTEP its forwarding entry names; to a local guest it
// says so; a MAC or neighbour not known is flooded to the flood list's
// VTEPs; to the internet it is masqueraded as before, with no overlay hop.
func TestWalkStretched(t *testing.T) {
	h := stretchHost(t)
	remote, local := "52:54:00:60:00:20", "52:54:00:60:00:30"
	d := model.Diag{Overlay: model.Overlay{
		FDB: []model.FDBEntry{
			{Dev: "gvx6000", MAC: model.FloodMAC, Dst: a("10.10.0.2")}, {Dev: "gvx6000", MAC: model.FloodMAC, Dst: a("10.10.0.3")},
			{Dev: "gvx6000", MAC: remote, Dst: a("10.10.0.2")}, {Dev: "gvx6000", MAC: remote, Master: true},
			{Dev: "vA", MAC: local, Master: true},
		},
		Neighs: []model.Neigh{{Dev: "gst0", IP: a("10.60.0.20"), MAC: remote}, {Dev: "gst0", IP: a("10.60.0.30"), MAC: local}, {Dev: "gst0", IP: a("10.60.0.40"), MAC: "52:54:00:60:00:40"}},
	}}
	for _, c := range []struct {
		dst, want string
	}{
		{"10.60.0.20", "bridged over gvx6000 to VTEP 10.10.0.2: 10.60.0.20 is MAC 52:54:00:60:00:20, a guest of another host (bridge fdb: 52:54:00:60:00:20 dev gvx6000 dst 10.10.0.2)"},
		{"10.60.0.30", "10.60.0.30 is MAC 52:54:00:60:00:30 on port vA: a guest of this host"},
		{"10.60.0.40", "10.60.0.40 is MAC 52:54:00:60:00:40, which gst0 has not learned on any port: flooded to this host's ports and over gvx6000 to VTEPs 10.10.0.2, 10.10.0.3"},
		{"10.60.0.50", "gst0 is stretched over gvx6000: the MAC of 10.60.0.50 is unknown here (no neighbour entry on gst0), so its ARP request floods to this host's ports and over gvx6000 to VTEPs 10.10.0.2, 10.10.0.3"},
	} {
		r := Walk(h, d, Packet{Src: a("10.60.0.10"), Dst: a(c.dst), Proto: "icmp"})
		var text []string
		found := false
		for _, hop := range r.Hops {
			text = append(text, hop.Stage+" "+hop.Verdict+": "+hop.Detail)
			found = found || hop.Detail == c.want
			if hop.Verdict == "snat" {
				t.Errorf("to %s: masqueraded: %s", c.dst, hop.Detail)
			}
		}
		if !r.Delivered || !found {
			t.Errorf("to %s: delivered %v, hops:\n%s\nwant a hop %q", c.dst, r.Delivered, strings.Join(text, "\n"), c.want)
		}
	}
	r := Walk(h, d, Packet{Src: a("10.60.0.10"), Dst: a("203.0.113.10"), Proto: "tcp", Port: 443})
	masq := false
	for _, hop := range r.Hops {
		masq = masq || (hop.Verdict == "snat" && strings.Contains(hop.Detail, "becomes 10.10.0.1"))
		if hop.Stage == "bridge" {
			t.Errorf("to the internet: an overlay hop %q", hop.Detail)
		}
	}
	if !r.Delivered || !masq {
		t.Errorf("to the internet: delivered %v, masqueraded as 10.10.0.1 %v: %+v", r.Delivered, masq, r.Hops)
	}
}
