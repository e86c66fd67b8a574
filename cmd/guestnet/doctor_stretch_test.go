package main

import (
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/doctor"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
)

// askStretch asks the kernel (here the fake's routes) for the route to
// every peer of the spec and of the daemon, leaving this host's own
// addresses out, and says why it could not ask about etcd with no daemon;
// with no stretched network it asks nothing.
func TestAskStretch(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	k := &fake.Kernel{Host: model.Host{
		Links:  []model.Link{{Name: "lan0", Kind: "veth", Up: true, MTU: 1400, Addrs: []netip.Prefix{p("10.10.0.1/24")}}},
		Routes: []model.Route{{Dst: p("10.10.0.0/24"), Dev: "lan0", Src: a("10.10.0.1")}},
	}}
	e := engine.New(k, "")
	g := &globals{stateDir: t.TempDir(), out: nil}
	stretch := model.Network{Name: "stretch", Bridge: "gst0", VXLAN: &model.VXLAN{VNI: 6000, Port: 4789}, DHCP: &model.DHCP{}}
	declared := &model.BGP{ASN: 65000, Peers: []model.BGPPeer{{Address: a("10.10.0.1")}, {Address: a("10.10.0.2")}, {Address: a("10.20.0.9")}}}

	in := doctor.Input{Host: k.Host, Networks: []model.Network{stretch}, Declared: true,
		BGP: &bgp.Status{RouterID: a("10.10.0.1"), Peers: []bgp.PeerStatus{{Address: a("10.10.0.3"), State: bgp.StateEstablished}},
			EVPN: &bgp.EVPNStatus{Remote: model.EVPN{Flood: []model.EVPNFlood{{VNI: 6000, VTEP: a("10.30.0.3")}, {VNI: 7000, VTEP: a("10.30.0.4")}}}}}}
	askStretch(g, e, &in, declared)
	want := []doctor.Underlay{
		{Addr: a("10.10.0.2"), From: doctor.FromPeer, Dev: "lan0"},
		{Addr: a("10.10.0.3"), From: doctor.FromPeer, Dev: "lan0"},
		{Addr: a("10.20.0.9"), From: doctor.FromPeer, Err: "route to 10.20.0.9: network is unreachable"},
		{Addr: a("10.30.0.3"), VNI: 6000, From: doctor.FromFlood, Err: "route to 10.30.0.3: network is unreachable"},
	}
	if len(in.Underlay) != len(want) {
		t.Fatalf("Underlay = %+v, want %+v", in.Underlay, want)
	}
	for i := range want {
		if in.Underlay[i] != want[i] {
			t.Errorf("Underlay[%d] = %+v, want %+v", i, in.Underlay[i], want[i])
		}
	}
	if in.Cluster != nil || in.ClusterErr == "" {
		t.Errorf("no daemon: Cluster %+v, ClusterErr %q; want nil and why", in.Cluster, in.ClusterErr)
	}
	findings := doctor.Run(in)
	got := map[string]int{}
	for _, f := range findings {
		got[f.Check]++
	}
	if got["vxlan-mtu"] != 1 || got["vtep-unreachable"] != 2 || got["etcd-quorum"] != 1 {
		t.Errorf("findings %v: want vxlan-mtu (lan0 1400), vtep-unreachable for 10.20.0.9 and the flood VTEP 10.30.0.3, etcd-quorum (no daemon)", got)
	}

	plain := doctor.Input{Host: k.Host, Networks: []model.Network{{Name: "local", Bridge: "gnat0", DHCP: &model.DHCP{}}}}
	askStretch(g, e, &plain, declared)
	if plain.Underlay != nil || plain.ClusterErr != "" {
		t.Errorf("no stretched network: asked anyway: %+v %q", plain.Underlay, plain.ClusterErr)
	}
}
