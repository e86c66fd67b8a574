package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// healthy6 is a dual-stack host as guestnet makes it: default is a
// dual-stack nat network, lab an IPv6-only routed one; every link has its
// link-local address, eth0 its IPv6 default route by RA with accept_ra 2,
// guestnet serve runs.
func healthy6() Input {
	in := healthy()
	h := &in.Host
	h.Links = []model.Link{
		{Name: "eth0", Kind: "device", Up: true, Carrier: true, MTU: 1500, Addrs: []netip.Prefix{pfx("fe80::1/64"), pfx("198.51.100.1/24"), pfx("2001:db8:1::1/64")}},
		{Name: "gnat0", Kind: "bridge", Up: true, Carrier: true, MTU: 1500, Alias: "guestnet:default", Addrs: []netip.Prefix{pfx("fe80::2/64"), pfx("10.99.0.1/24"), pfx("fd42:99::1/64")}},
		{Name: "grt0", Kind: "bridge", Up: true, Carrier: true, MTU: 1500, Alias: "guestnet:lab", Addrs: []netip.Prefix{pfx("fe80::3/64"), pfx("2001:db8:71::1/64")}},
		{Name: "tap0", Kind: "tuntap", Up: true, MTU: 1500, Master: "gnat0", Addrs: []netip.Prefix{pfx("fe80::4/64")}},
	}
	h.Routes = append(h.Routes,
		model.Route{Dst: pfx("::/0"), Gw: netip.MustParseAddr("fe80::ff"), Dev: "eth0", Proto: model.ProtoRA},
		model.Route{Dst: pfx("fe80::/64"), Dev: "eth0", Proto: model.ProtoKernel},
		model.Route{Dst: pfx("fe80::/64"), Dev: "gnat0", Proto: model.ProtoKernel},
		model.Route{Dst: pfx("fd42:99::/64"), Dev: "gnat0", Proto: model.ProtoKernel},
		model.Route{Dst: pfx("2001:db8:71::/64"), Dev: "grt0", Proto: model.ProtoKernel})
	h.IP6Forward = true
	h.RAUplinks = []model.RAUplink{{Name: "eth0", AcceptRA: 2}}
	in.Diag.Daemon = true
	in.Networks = []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.99.0.1/24"), IPv6: pfx("fd42:99::1/64")},
		{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv6: pfx("2001:db8:71::1/64")},
	}
	return in
}

// TestChecksIPv6: the IPv6 forms of doctor's checks, each on the healthy
// dual-stack host broken one way; the IPv4 switches do not stand in for
// IPv6 ones, nor the other way round.
func TestChecksIPv6(t *testing.T) {
	ip6Drop := model.ForeignChain{Name: "table ip6 filter chain FORWARD"}
	cases := []struct {
		name    string
		breakIt func(in *Input)
		want    string   // the checks, in order, with the network of each
		says    []string // what the findings must say
	}{
		{"healthy", func(in *Input) {}, "", nil},
		{"IPv6 forwarding off", func(in *Input) { in.Host.IP6Forward = false }, "ip-forward[default],ip-forward[lab]",
			[]string{"IPv6 forwarding is off: guests of default (fd42:99::/64)", "net.ipv6.conf.all.forwarding = 0", "sysctl -w net.ipv6.conf.all.forwarding=1", "accept_ra=2"}},
		{"IPv4 forwarding off: not the IPv6-only network's problem", func(in *Input) { in.Host.IPForward = false }, "ip-forward[default]",
			[]string{"IPv4 forwarding is off"}},
		{"uplink with accept_ra 1 and forwarding on", func(in *Input) { in.Host.RAUplinks[0].AcceptRA = 1 }, "accept-ra[]",
			[]string{"eth0 takes its IPv6 default route from router advertisements", "net.ipv6.conf.eth0.accept_ra = 1",
				"route ::/0 via fe80::ff dev eth0 proto ra", "sysctl -w net.ipv6.conf.eth0.accept_ra=2", "guestnet apply does it"}},
		{"accept_ra 1 with forwarding off: the RA is heeded", func(in *Input) {
			in.Host.RAUplinks[0].AcceptRA = 1
			in.Host.IP6Forward = false
		}, "ip-forward[default],ip-forward[lab]", nil},
		{"ip6tables FORWARD drop (Docker with ip6tables)", func(in *Input) { in.Host.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop} },
			"forward-drop[default],forward-drop[lab]", []string{"table ip6 filter chain FORWARD drops the forwarded IPv6 traffic of gnat0",
				"ip6tables -I FORWARD -i gnat0 -j ACCEPT", "moby/moby#48365", "IPv4 is not affected"}},
		{"iptables FORWARD drop: not the IPv6-only network's problem", func(in *Input) {
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}
		}, "forward-drop[default]", []string{"iptables -I FORWARD -i gnat0"}},
		{"ip6tables FORWARD drop, guestnet's ip6tables DOCKER-USER rules let the bridges through", func(in *Input) {
			in.Host.Foreign = model.Foreign{ForwardDrop: []model.ForeignChain{ip6Drop}}
			for _, br := range []string{"gnat0", "grt0"} {
				in.Host.Ruleset.DockerUser6 = append(in.Host.Ruleset.DockerUser6,
					model.Rule{Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: br}}},
					model.Rule{Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchOIF, Name: br}}})
			}
		}, "", nil},
		{"ip6tables FORWARD drop, guestnet's rules only in iptables' DOCKER-USER", func(in *Input) {
			in.Host.Foreign = model.Foreign{DockerUser: true, ForwardDrop: []model.ForeignChain{ip6Drop}}
			in.Host.Ruleset.DockerUser = []model.Rule{
				{Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: "gnat0"}}},
				{Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchOIF, Name: "gnat0"}}}}
		}, "forward-drop[default],forward-drop[lab]", nil},
		{"ip6tables FORWARD drop that accepts the bridges", func(in *Input) {
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{{Name: ip6Drop.Name, AcceptIIF: []string{"gnat0", "grt0"}, AcceptOIF: []string{"gnat0", "grt0"}}}
		}, "", nil},
		{"bridge-nf-call-ip6tables with an ip6tables drop, isolated IPv6 network", func(in *Input) {
			in.Networks = []model.Network{{Name: "iso", Mode: model.Isolated, Bridge: "gnat0", IPv6: pfx("fd42:99::1/64")}}
			in.Host.BridgeNFCallIP6Tables = true
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop}
		}, "forward-drop[iso]", []string{"bridged frames included (guests on gnat0 cannot reach each other by IPv6)", "net.bridge.bridge-nf-call-ip6tables = 1"}},
		{"ip6tables drop, isolated IPv6 network, br_netfilter off for ip6", func(in *Input) {
			in.Networks = []model.Network{{Name: "iso", Mode: model.Isolated, Bridge: "gnat0", IPv6: pfx("fd42:99::1/64")}}
			in.Host.BridgeNFCallIPTables = true
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop}
		}, "", nil},
		{"the bridge lacks its IPv6 address", func(in *Input) { in.Host.Links[1].Addrs = in.Host.Links[1].Addrs[:2] }, "bridge[default]",
			[]string{"bridge gnat0 lacks its IPv6 address fd42:99::1/64: the host has no route to fd42:99::/64", "gnat0 has no IPv6 address", "ip -6 addr add fd42:99::1/64 dev gnat0 nodad"}},
		{"the bridge has another IPv6 prefix length", func(in *Input) { in.Host.Links[2].Addrs[1] = pfx("2001:db8:71::1/48") }, "bridge[lab]",
			[]string{"not 2001:db8:71::1/64"}},
		{"guestnet serve not running", func(in *Input) {
			in.Diag.Daemon = false
			in.Networks[0].DHCP6 = &model.DHCP6{}
		}, "ipv6-ra[default],ipv6-ra[lab]", []string{"no router advertisements, so guests form no address", "and no DHCPv6 server answers", "guestnet-serve"}},
		{"ip6tables INPUT drop", func(in *Input) {
			in.Diag.InputDrop = []model.ForeignChain{{Name: "table ip6 filter chain INPUT", AcceptIIF: []string{"grt0"}}}
		}, "ipv6-ra[default]", []string{"router solicitations, DHCPv6 and DNS from gnat0", "ip6tables -I INPUT -i gnat0 -p ipv6-icmp -j ACCEPT"}},
		{"ip6tables INPUT drop is not the IPv4 DHCP's", func(in *Input) {
			in.Networks[0].DHCP = &model.DHCP{}
			in.Networks[0].IPv6 = netip.Prefix{}
			in.Host.Links[1].Addrs = in.Host.Links[1].Addrs[:2]
			in.Diag.InputDrop = []model.ForeignChain{{Name: "table ip6 filter chain INPUT", AcceptIIF: []string{"grt0"}}}
		}, "", nil},
		{"an IPv6 prefix under a host route", func(in *Input) {
			in.Host.Routes = append(in.Host.Routes, model.Route{Dst: pfx("fd42::/16"), Dev: "eth0"})
		}, "subnet-overlap[default]", []string{"fd42:99::/64 of default overlaps the host's route fd42::/16 dev eth0"}},
		{"two networks' IPv6 prefixes overlap", func(in *Input) { in.Networks[1].IPv6 = pfx("fd42:99::1/48") }, "subnet-overlap[lab],bridge[lab]",
			[]string{"fd42:99::/48 of lab overlaps fd42:99::/64 of default"}},
		{"strict rp_filter, one uplink (ports' link-local addresses are no uplinks)", func(in *Input) { in.Diag.RPFilter["eth0"] = 1 }, "", nil},
		{"ip6 masquerade bound to the IPv4 uplink", func(in *Input) {
			in.Host.Links = append(in.Host.Links, model.Link{Name: "eth1", Kind: "device", Up: true, MTU: 1500, Addrs: []netip.Prefix{pfx("203.0.113.1/24")}})
			in.Host.Routes[0].Dev = "eth1"
			in.Diag.ForeignNAT = []model.ForeignRule{
				{Chain: "table ip6 nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade, Match: []model.Match{{Kind: model.MatchOIF, Name: "eth1"}}}},
				{Chain: "table ip nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade, Match: []model.Match{{Kind: model.MatchOIF, Name: "eth1"}}}},
				{Chain: "table ip6 nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade, Match: []model.Match{{Kind: model.MatchOIF, Name: "eth0"}}}},
			}
		}, "masquerade-oif[]", []string{"masquerade is bound to eth1, but the default route leaves by eth0", "table ip6 nat chain POSTROUTING"}},
	}
	for _, c := range cases {
		in := healthy6()
		c.breakIt(&in)
		var got, text []string
		for _, f := range Run(in) {
			got = append(got, f.Check+"["+f.Network+"]")
			text = append(text, f.What+"\n"+strings.Join(f.Evidence, "\n")+"\n"+f.Fix)
			if f.What == "" || len(f.Evidence) == 0 || f.Fix == "" {
				t.Errorf("%s: incomplete finding %+v", c.name, f)
			}
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: checks %v, want %q\n%s", c.name, got, c.want, strings.Join(text, "\n\n"))
			continue
		}
		for _, s := range c.says {
			if !strings.Contains(strings.Join(text, "\n"), s) {
				t.Errorf("%s: the findings do not say %q:\n%s", c.name, s, strings.Join(text, "\n\n"))
			}
		}
	}
}

// TestDiscoverIPv6: a hand-made bridge is a network by its IPv4 address
// or its IPv6 one, never by the link-local address every bridge has.
func TestDiscoverIPv6(t *testing.T) {
	h := model.Host{Links: []model.Link{
		{Name: "br0", Kind: "bridge", Addrs: []netip.Prefix{pfx("fe80::1/64"), pfx("fd42:7::1/64")}},
		{Name: "br1", Kind: "bridge", Addrs: []netip.Prefix{pfx("fe80::2/64")}},
		{Name: "br2", Kind: "bridge", Addrs: []netip.Prefix{pfx("fe80::3/64"), pfx("10.77.0.1/24"), pfx("2001:db8:7::1/64")}},
	}}
	ns := Discover(h)
	if len(ns) != 2 || ns[0].Bridge != "br0" || ns[0].IPv4.IsValid() || ns[0].IPv6 != pfx("fd42:7::1/64") ||
		ns[1].Bridge != "br2" || ns[1].IPv4 != pfx("10.77.0.1/24") || ns[1].IPv6 != pfx("2001:db8:7::1/64") {
		t.Fatalf("Discover: %+v", ns)
	}
	// IPv6 forwarding off: the IPv6-only bridge is a warning (a hand-made
	// bridge may be host-only), and the IPv4 side of br2 is fine.
	in := Input{Host: h, Networks: ns}
	in.Host.IPForward = true
	fs := checkForwarding(in)
	if len(fs) != 2 || fs[0].Severity != Warning || !strings.Contains(fs[0].What, "IPv6 forwarding is off: guests of br0 (fd42:7::/64)") {
		t.Errorf("forwarding findings: %+v", fs)
	}
}
