package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
)

// withStretch is healthy() plus an isolated stretched network, stretch
// (VNI 6000, MTU 1450, DHCP), as guestnet makes it on host 10.10.0.1: its
// bridge gst0, the VXLAN device gvx6000 in it (learning off,
// neigh_suppress on), a LAN lan0 of MTU 1500 toward the BGP peer 10.10.0.2
// and the VTEP 10.10.0.3 of the flood list, a running daemon, and etcd
// with quorum, all three members answering.
func withStretch() Input {
	in := healthy()
	a := netip.MustParseAddr
	in.Host.Links = append(in.Host.Links,
		model.Link{Name: "lan0", Kind: "veth", Up: true, Carrier: true, MTU: 1500, Addrs: []netip.Prefix{pfx("10.10.0.1/24")}},
		model.Link{Name: "gst0", Kind: "bridge", Up: true, Carrier: true, MTU: 1450, Alias: "guestnet:stretch", Group: model.GuestGroup,
			Addrs: []netip.Prefix{pfx("10.60.0.1/24")}},
		model.Link{Name: "gvx6000", Kind: "vxlan", Up: true, Carrier: true, MTU: 1450, Alias: "guestnet:stretch", Master: "gst0",
			VXLAN: &model.VXLANLink{VNI: 6000, Port: 4789, Local: a("10.10.0.1"), NeighSuppress: true}},
	)
	slices.SortFunc(in.Host.Links, func(a, b model.Link) int { return strings.Compare(a.Name, b.Name) }) // Host.Link searches by name
	in.Host.Routes = append(in.Host.Routes, model.Route{Dst: pfx("10.10.0.0/24"), Dev: "lan0", Src: a("10.10.0.1"), Scope: 253})
	in.Networks = append(in.Networks, model.Network{Name: "stretch", Mode: model.Isolated, Bridge: "gst0", IPv4: pfx("10.60.0.1/24"), MTU: 1450,
		VXLAN: &model.VXLAN{VNI: 6000, Port: 4789, Local: a("10.10.0.1")},
		DHCP:  &model.DHCP{Ranges: []model.Range{{From: a("10.60.0.100"), To: a("10.60.0.250")}}}})
	in.Diag.Daemon = true
	in.Underlay = []Underlay{
		{Addr: a("10.10.0.2"), From: FromPeer, Dev: "lan0"},
		{Addr: a("10.10.0.3"), VNI: 6000, From: FromFlood, Dev: "lan0"},
	}
	eps := []string{"http://10.10.0.201:2379", "http://10.10.0.202:2379", "http://10.10.0.203:2379"}
	in.Cluster = &model.ClusterLeases{Host: "10.10.0.1", Etcd: model.EtcdHealth{Endpoints: eps, Reachable: eps, Quorum: true}}
	return in
}

func (in *Input) link(name string) *model.Link {
	for i := range in.Host.Links {
		if in.Host.Links[i].Name == name {
			return &in.Host.Links[i]
		}
	}
	panic("no link " + name)
}

// Each fault of a stretched network gives its check's finding with the
// severity that says whether it is a problem, and the same host without
// the fault (the first case, and the cases that set things right again)
// gives none.
func TestStretchChecks(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		name    string
		breakIt func(in *Input)
		want    string // check:severity, in order
	}{
		{"healthy", func(in *Input) {}, ""},
		{"underlay MTU 1400 under a network of 1450", func(in *Input) { in.link("lan0").MTU = 1400 }, "vxlan-mtu:error"},
		{"network MTU 1500 on a 1500 underlay", func(in *Input) {
			in.Networks[1].MTU = 1500
			in.link("gst0").MTU, in.link("gvx6000").MTU = 1500, 1500
		}, "vxlan-mtu:error"},
		{"network MTU lowered to fit a 1400 underlay", func(in *Input) {
			in.link("lan0").MTU = 1400
			in.Networks[1].MTU = 1350
			in.link("gst0").MTU, in.link("gvx6000").MTU = 1350, 1350
		}, ""},
		{"underlay raised to 1550 for a network of 1500", func(in *Input) {
			in.link("lan0").MTU = 1550
			in.Networks[1].MTU = 1500
			in.link("gst0").MTU, in.link("gvx6000").MTU = 1500, 1500
		}, ""},
		{"the VXLAN device's MTU raised above the network's", func(in *Input) {
			in.link("gvx6000").MTU = 1480
		}, "bridge:warning,vxlan-mtu:error"},
		{"no VTEP or peer known: the default route's interface is too small", func(in *Input) {
			in.Underlay = nil
			in.link("eth0").MTU = 1400
		}, "vxlan-mtu:error"},
		{"only a VTEP of another VNI goes through the small interface", func(in *Input) {
			in.Underlay = append(in.Underlay, Underlay{Addr: a("10.20.0.9"), VNI: 7000, From: FromFlood, Dev: "eth0"})
			in.link("eth0").MTU = 1400
		}, ""},
		{"no route to a peer", func(in *Input) {
			in.Underlay[0].Dev, in.Underlay[0].Err = "", "network is unreachable"
		}, "vtep-unreachable:error"},
		{"the flood VTEP routed into the guest bridge", func(in *Input) { in.Underlay[1].Dev = "gst0" }, "vtep-unreachable:error"},
		{"a VTEP routed into the VXLAN device", func(in *Input) { in.Underlay[1].Dev = "gvx6000" }, "vtep-unreachable:error"},
		{"a VTEP routed over a guest port", func(in *Input) { in.Underlay[1].Dev = "tap0" }, "vtep-unreachable:error"},
		{"this host's own address (lo) is no finding", func(in *Input) {
			in.Underlay = append(in.Underlay, Underlay{Addr: a("10.10.0.1"), From: FromPeer, Dev: "lo"})
		}, ""},
		{"a BGP session down with EVPN on", func(in *Input) {
			in.BGP = &bgp.Status{ASN: 65000, RouterID: a("10.10.0.1"), Port: 179, Peers: []bgp.PeerStatus{
				{Address: a("10.10.0.2"), ASN: 65000, State: bgp.StateEstablished},
				{Address: a("10.10.0.3"), ASN: 65000, State: bgp.StateActive}}}
		}, "bgp-session:warning,vtep-unreachable:warning"},
		{"every BGP session up", func(in *Input) {
			in.BGP = &bgp.Status{ASN: 65000, RouterID: a("10.10.0.1"), Port: 179, Peers: []bgp.PeerStatus{
				{Address: a("10.10.0.2"), ASN: 65000, State: bgp.StateEstablished}}}
		}, ""},
		{"etcd without quorum", func(in *Input) {
			in.Cluster.Etcd.Reachable, in.Cluster.Etcd.Quorum = in.Cluster.Etcd.Reachable[:1], false
			in.Cluster.Etcd.Error = "context deadline exceeded"
		}, "etcd-quorum:error"},
		{"one etcd member down, quorum holds", func(in *Input) {
			in.Cluster.Etcd.Reachable = in.Cluster.Etcd.Reachable[1:]
		}, "etcd-quorum:warning"},
		{"the daemon could not say", func(in *Input) {
			in.Cluster, in.ClusterErr = nil, "daemon: 500 Internal Server Error"
		}, "etcd-quorum:warning"},
		{"no daemon", func(in *Input) {
			in.Cluster, in.ClusterErr, in.Diag.Daemon = nil, "no daemon", false
		}, "dhcp:error,etcd-quorum:info"},
		{"no DHCP on the stretched network: etcd is not its business", func(in *Input) {
			in.Networks[1].DHCP = nil
			in.Cluster, in.ClusterErr = nil, "no daemon"
		}, ""},
		{"the VXLAN device missing", func(in *Input) {
			in.Host.Links = slices.DeleteFunc(in.Host.Links, func(l model.Link) bool { return l.Name == "gvx6000" })
		}, "vxlan-device:error"},
		{"the VXLAN device out of the bridge", func(in *Input) { in.link("gvx6000").Master = "" }, "vxlan-device:error"},
		{"the VXLAN device down", func(in *Input) { in.link("gvx6000").Up = false }, "vxlan-device:error"},
		{"the VXLAN device learning", func(in *Input) { in.link("gvx6000").VXLAN.Learning = true }, "vxlan-device:warning"},
		{"the bridge learning on the VXLAN port", func(in *Input) { in.link("gvx6000").VXLAN.PortLearning = true }, "vxlan-device:warning"},
		{"neigh_suppress off", func(in *Input) { in.link("gvx6000").VXLAN.NeighSuppress = false }, "vxlan-device:warning"},
		{"the wrong VNI", func(in *Input) { in.link("gvx6000").VXLAN.VNI = 6001 }, "vxlan-device:error"},
		{"the wrong port", func(in *Input) { in.link("gvx6000").VXLAN.Port = 8472 }, "vxlan-device:error"},
		{"the wrong local address", func(in *Input) { in.link("gvx6000").VXLAN.Local = a("10.10.0.9") }, "vxlan-device:warning"},
		{"a link of the VXLAN device's name that is no VXLAN", func(in *Input) { in.link("gvx6000").Kind, in.link("gvx6000").VXLAN = "dummy", nil },
			"vxlan-device:error"},
		{"no stretched network: none of it is looked at", func(in *Input) {
			in.Networks[1].VXLAN = nil
			in.Underlay = nil
			in.Host.Links = slices.DeleteFunc(in.Host.Links, func(l model.Link) bool { return l.Name == "gvx6000" })
			in.Cluster = nil
		}, ""},
	}
	for _, c := range cases {
		in := withStretch()
		c.breakIt(&in)
		var got []string
		for _, f := range Run(in) {
			got = append(got, f.Check+":"+string(f.Severity))
			if f.What == "" || len(f.Evidence) == 0 || f.Fix == "" {
				t.Errorf("%s: incomplete finding %+v", c.name, f)
			}
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: findings %v, want %q", c.name, got, c.want)
		}
	}
}

// The findings name what the user needs: both MTUs and both ways out, the
// VTEP and where doctor learned of it, the endpoints that answered and
// what a lost quorum means for leases.
func TestStretchFindingText(t *testing.T) {
	in := withStretch()
	in.link("lan0").MTU = 1400
	in.Underlay[1].Dev, in.Underlay[1].Err = "", "network is unreachable"
	in.Cluster.Etcd.Reachable, in.Cluster.Etcd.Quorum = in.Cluster.Etcd.Reachable[:1], false
	in.Cluster.Etcd.Checked = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	in.Cluster.Etcd.Error = "context deadline exceeded"
	var all []string
	for _, f := range Run(in) {
		all = append(all, f.Check+" ["+f.Network+"]: "+f.What+" | "+strings.Join(f.Evidence, " | ")+" | "+f.Fix)
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		"vxlan-mtu [stretch]: the MTU of stretch (1450) plus the 50 bytes VXLAN adds is 1500, more than the MTU of lan0 (1400)",
		"network stretch mtu 1450 | lan0 mtu 1400 (route to 10.10.0.2)",
		"lower the network's MTU to 1350 or less",
		"raise the underlay's MTU to 1500 or more (ip link set lan0 mtu 1500",
		"vtep-unreachable [stretch]: no route to the VTEP 10.10.0.3 (EVPN flood list of VNI 6000)",
		"ip route get 10.10.0.3: network is unreachable",
		"etcd-quorum [stretch]: the lease cluster (etcd) has no quorum (answered: http://10.10.0.201:2379 (1 of 3))",
		"no new leases on stretch",
		"acknowledged with their remaining time, not extended",
		"error: context deadline exceeded | checked 2026-11-30T12:00:00Z",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("findings lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "10.10.0.3 (EVPN flood list of VNI 6000)) leaves") {
		t.Errorf("an unreachable VTEP is also reported as misrouted:\n%s", text)
	}
}

// Targets lists the remote VTEPs of the stretched networks' VNIs and the
// IPv4 BGP peers, once each, without this host's own addresses; nothing when
// no network is stretched.
func TestTargets(t *testing.T) {
	a := netip.MustParseAddr
	nets := withStretch().Networks
	remote := model.EVPN{Flood: []model.EVPNFlood{
		{VNI: 6000, VTEP: a("10.10.0.3")}, {VNI: 6000, VTEP: a("10.10.0.2")}, {VNI: 7000, VTEP: a("10.10.0.4")}, {VNI: 6000, VTEP: a("10.10.0.1")}}}
	peers := []netip.Addr{a("10.10.0.1"), a("10.10.0.2"), a("10.10.0.3"), a("10.10.0.2"), a("fd00:10::2")}
	got := Targets(nets, peers, remote, []netip.Addr{a("10.10.0.1")})
	var s []string
	for _, u := range got {
		s = append(s, u.Addr.String()+"/"+u.From+"/"+strings.TrimSpace(strings.Repeat("6000", int(u.VNI/6000))))
	}
	want := "10.10.0.2/bgp peer/,10.10.0.2/EVPN flood list/6000,10.10.0.3/bgp peer/,10.10.0.3/EVPN flood list/6000"
	if strings.Join(s, ",") != want {
		t.Errorf("Targets = %v, want %s", s, want)
	}
	if got := Targets(nets[:1], peers, remote, nil); got != nil {
		t.Errorf("no stretched network: Targets = %v, want nil", got)
	}
}
