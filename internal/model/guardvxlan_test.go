package model

import (
	"net/netip"
	"slices"
	"testing"
)

// TestGuardVXLANRules: the VXLAN rules of the guard table, as nft lists
// them: every frame of a VXLAN port goes to vxlan_in first thing at
// prerouting, every frame leaving one to vxlan_out at postrouting (the
// bridge's own frames too), and each direction drops DHCP, ARP for or
// from a gateway and the gateway MACs, recording port . MAC . ether type.
// RARP passes chain check from a MAC bound to the port.
func TestGuardVXLANRules(t *testing.T) {
	rules := GuardRules()
	want := map[string][]string{
		"vxlan_drop_in":  {"update @vxlan_dropped_in { iifname . ether saddr . ether type counter }", "counter packets 0 bytes 0 drop"},
		"vxlan_drop_out": {"update @vxlan_dropped_out { oifname . ether saddr . ether type counter }", "counter packets 0 bytes 0 drop"},
		"vxlan_in": {
			"ether saddr @vxlan_macs goto vxlan_drop_in",
			"meta protocol ip udp dport 67 goto vxlan_drop_in",
			"meta protocol ip udp dport 68 goto vxlan_drop_in",
			"arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp daddr ip @vxlan_gateways goto vxlan_drop_in",
			"arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @vxlan_gateways goto vxlan_drop_in",
		},
		"vxlan_out": {
			"ether saddr @vxlan_macs goto vxlan_drop_out",
			"meta protocol ip udp dport 67 goto vxlan_drop_out",
			"meta protocol ip udp dport 68 goto vxlan_drop_out",
			"arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp daddr ip @vxlan_gateways goto vxlan_drop_out",
			"arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @vxlan_gateways goto vxlan_drop_out",
		},
		"postrouting": {"oifname @vxlan_ports goto vxlan_out"},
	}
	for chain, w := range want {
		if !slices.Equal(rules[chain], w) {
			t.Errorf("chain %s:\n got %q\nwant %q", chain, rules[chain], w)
		}
	}
	if got := rules["prerouting"][0]; got != "iifname @vxlan_ports jump vxlan_in" {
		t.Errorf("prerouting's first rule %q, want the VXLAN ports' jump before any anti-spoofing", got)
	}
	for _, r := range []string{"ether type 0x8035 iifname . ether saddr @port_macs accept", "ether type 0x8035 iifname . ether saddr @learned_port_macs accept"} {
		if !slices.Contains(rules["check"], r) {
			t.Errorf("chain check lacks %q:\n%q", r, rules["check"])
		}
	}
	// The base chains come after the chains they go to.
	var names []string
	for _, c := range GuardTableOf(GuardFamily).Chains {
		names = append(names, c.Name)
	}
	if i, j := slices.Index(names, "vxlan_in"), slices.Index(names, "prerouting"); i < 0 || i > j {
		t.Errorf("chain order %q: vxlan_in must come before prerouting", names)
	}
	if names[len(names)-1] != "postrouting" {
		t.Errorf("chain order %q: postrouting last", names)
	}
}

// TestSetVXLAN: the VXLAN sets hold the stretched networks' devices,
// IPv4 gateways and bridge MACs, and nothing of the others; the ports are
// infrastructure, not guest ports, as a bridge-mode network's uplink is.
func TestSetVXLAN(t *testing.T) {
	p := netip.MustParsePrefix
	nets := []Network{
		{Name: "stretch", Mode: NAT, Bridge: "gst0", IPv4: p("10.60.0.1/24"), VXLAN: &VXLAN{VNI: 6000, Port: VXLANPort}},
		{Name: "lab", Mode: Isolated, Bridge: "gst1", IPv4: p("10.61.0.1/24"), VXLAN: &VXLAN{VNI: 6001, Port: 4790}},
		{Name: "local", Mode: NAT, Bridge: "gloc0", IPv4: p("10.62.0.1/24")},
		{Name: "lan", Mode: Bridge, Bridge: "glan0", Uplink: "eth1"},
	}
	var g Guard
	g.SetVXLAN(nets)
	if want := []string{"gvx6000", "gvx6001"}; !slices.Equal(g.VXLANPorts, want) {
		t.Errorf("vxlan_ports %q, want %q", g.VXLANPorts, want)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.60.0.1"), netip.MustParseAddr("10.61.0.1")}; !slices.Equal(g.VXLANGateways, want) {
		t.Errorf("vxlan_gateways %v, want %v", g.VXLANGateways, want)
	}
	macs := []string{BridgeMAC("lab"), BridgeMAC("stretch")}
	slices.Sort(macs)
	if !slices.Equal(g.VXLANMACs, macs) {
		t.Errorf("vxlan_macs %q, want %q", g.VXLANMACs, macs)
	}
	for _, c := range []struct {
		n    int
		port string
		want bool
	}{{0, "gvx6000", true}, {0, "gvx6001", false}, {0, "vnet0", false}, {1, "gvx6001", true}, {2, "gvx6000", false}, {3, "eth1", true}, {3, "vnet1", false}} {
		if got := nets[c.n].Infra(c.port); got != c.want {
			t.Errorf("network %s: Infra(%s) = %v, want %v", nets[c.n].Name, c.port, got, c.want)
		}
	}
	// Declared: a change of the VXLAN sets is an element change.
	add, del := DiffElems(Guard{On: true}.Declared(), g.Declared())
	if len(add.VXLANPorts) != 2 || len(add.VXLANGateways) != 2 || len(add.VXLANMACs) != 2 || del.Len() != 0 || g.Equal(Guard{On: true}) {
		t.Errorf("adding stretched networks: add %+v, del %+v", add, del)
	}
}

// TestVXLANDropsOf: status tells what a recorded drop was by its MAC and
// ether type.
func TestVXLANDropsOf(t *testing.T) {
	gw := BridgeMAC("stretch")
	g := Guard{VXLANMACs: []string{gw}, VXLANDrops: []VXLANDrop{
		{Port: "gvx6000", Out: true, MAC: gw, EtherType: "arp", Packets: 2},
		{Port: "gvx6000", MAC: "52:54:00:00:00:01", EtherType: "arp", Packets: 1},
		{Port: "gvx6000", MAC: "52:54:00:00:00:01", EtherType: "ip", Packets: 3},
		{Port: "gvx6001", MAC: "52:54:00:00:00:02", EtherType: "ip", Packets: 1},
	}}
	var got []string
	for _, x := range g.VXLANDropsOf("gvx6000") {
		got = append(got, x.Summary())
	}
	want := []string{
		"2 frames out from MAC " + gw + " (from the gateway MAC, last 0s ago): DHCP, ARP for the gateway and the gateway MAC stay on each host",
		"1 frame in from MAC 52:54:00:00:00:01 (ARP for or from the gateway, last 0s ago): DHCP, ARP for the gateway and the gateway MAC stay on each host",
		"3 frames in from MAC 52:54:00:00:00:01 (DHCP, last 0s ago): DHCP, ARP for the gateway and the gateway MAC stay on each host",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}
