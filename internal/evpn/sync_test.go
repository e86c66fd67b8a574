package evpn

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	want := Install{
		Flood: []Flood{{Device: "gvx6000", VTEP: vtepB}, {Device: "gvx6000", VTEP: vtepC}},
		MACs: []RemoteMAC{
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(1), VTEP: vtepB}, // unchanged
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(2), VTEP: vtepC}, // moved from B to C
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(3), VTEP: vtepB}, // its bridge entry was taken over
		},
		Neighs: []Neigh{{Bridge: "gst0", IP: ip(1), MAC: mac(1)}, {Bridge: "gst0", IP: ip(2), MAC: mac(2)}},
	}
	have := Observed{
		Flood: []Flood{{Device: "gvx6000", VTEP: vtepB}, {Device: "gvx6000", VTEP: netip.MustParseAddr("10.10.0.9")}},
		MACs: []RemoteMAC{
			{Device: "gvx6000", MAC: mac(1), VTEP: vtepB},
			{Device: "gvx6000", MAC: mac(2), VTEP: vtepB},
			{Device: "gvx6000", MAC: mac(3), VTEP: vtepB},
			{Device: "gvx6000", MAC: mac(4), VTEP: vtepC},
		},
		Masters: []RemoteMAC{
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(1)},
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(2)},
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(4)},
			{Device: "gvx6000", Bridge: "gst0", MAC: mac(5)},
		},
		Neighs: []Neigh{{Bridge: "gst0", IP: ip(1), MAC: mac(1)}, {Bridge: "gst0", IP: ip(2), MAC: mac(9)}, {Bridge: "gst0", IP: ip(4), MAC: mac(4)}},
	}
	var got []string
	for _, op := range Plan(want, have) {
		got = append(got, op.String())
	}
	wantText := `bridge fdb append 00:00:00:00:00:00 dev gvx6000 dst 10.10.0.3 self permanent
bridge fdb replace 52:54:00:00:00:02 dev gvx6000 dst 10.10.0.3 self static extern_learn && bridge fdb replace 52:54:00:00:00:02 dev gvx6000 master extern_learn
bridge fdb replace 52:54:00:00:00:03 dev gvx6000 dst 10.10.0.2 self static extern_learn && bridge fdb replace 52:54:00:00:00:03 dev gvx6000 master extern_learn
ip neigh replace 10.60.0.102 lladdr 52:54:00:00:00:02 dev gst0 nud noarp extern_learn
bridge fdb del 00:00:00:00:00:00 dev gvx6000 dst 10.10.0.9 self
bridge fdb del 52:54:00:00:00:04 dev gvx6000 dst 10.10.0.3 self; bridge fdb del 52:54:00:00:00:04 dev gvx6000 master
bridge fdb del 52:54:00:00:00:05 dev gvx6000 master
ip neigh del 10.60.0.104 dev gst0`
	if g := strings.Join(got, "\n"); g != wantText {
		t.Fatalf("plan:\n%s\nwant:\n%s", g, wantText)
	}
	if ops := Plan(want, Observed{Flood: want.Flood, MACs: want.MACs, Masters: want.MACs, Neighs: want.Neighs}); len(ops) != 0 {
		t.Fatalf("the wanted state plans %v", ops)
	}
}
