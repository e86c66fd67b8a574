package trace

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// nets6 are the networks of the IPv6 walks: default is dual-stack nat
// (lab may reach it), lab an IPv6-only routed network with a global
// prefix, other an IPv6-only nat network with no peers.
func nets6() []model.Network {
	p := netip.MustParsePrefix
	return []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: p("10.99.0.1/24"), IPv6: p("fd42:99::1/64"), Peers: []string{"lab"}},
		{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv6: p("2001:db8:71::1/64")},
		{Name: "other", Mode: model.NAT, Bridge: "gnat1", IPv6: p("fd42:2::1/64")},
	}
}

// host6 is an observed dual-stack host: the uplink up0 has a global IPv6
// address and its IPv6 default route by RA via a link-local router, every
// link its link-local address (listed first, as the kernel may), IPv6
// forwarding on, br_netfilter off for both families.
func host6(t *testing.T) model.Host {
	t.Helper()
	p := netip.MustParsePrefix
	h := model.Host{
		Links: []model.Link{
			{Name: "gnat0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("fe80::1/64"), p("10.99.0.1/24"), p("fd42:99::1/64")}},
			{Name: "gnat1", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("fe80::3/64"), p("fd42:2::1/64")}},
			{Name: "grt0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("fe80::2/64"), p("2001:db8:71::1/64")}},
			{Name: "lo", Kind: "device", Up: true, Addrs: []netip.Prefix{p("127.0.0.1/8"), p("::1/128")}},
			{Name: "up0", Kind: "veth", Up: true, Addrs: []netip.Prefix{p("fe80::4/64"), p("198.51.100.1/25"), p("2001:db8:1::1/64")}},
		},
		Routes: []model.Route{
			{Dst: p("0.0.0.0/0"), Gw: a("198.51.100.126"), Dev: "up0"},
			{Dst: p("198.51.100.0/25"), Dev: "up0", Proto: model.ProtoKernel},
			{Dst: p("10.99.0.0/24"), Dev: "gnat0", Proto: model.ProtoKernel},
			{Dst: p("::/0"), Gw: a("fe80::ff"), Dev: "up0", Proto: model.ProtoRA, Metric: 1024},
			{Dst: p("2001:db8:1::/64"), Dev: "up0", Proto: model.ProtoKernel, Metric: 256},
			{Dst: p("fd42:99::/64"), Dev: "gnat0", Proto: model.ProtoKernel, Metric: 256},
			{Dst: p("2001:db8:71::/64"), Dev: "grt0", Proto: model.ProtoKernel, Metric: 256},
			{Dst: p("fd42:2::/64"), Dev: "gnat1", Proto: model.ProtoKernel, Metric: 256},
		},
		IPForward: true, IP6Forward: true,
	}
	for _, l := range h.Links {
		if l.Name != "lo" {
			h.Routes = append(h.Routes, model.Route{Dst: p("fe80::/64"), Dev: l.Name, Proto: model.ProtoKernel, Metric: 256})
		}
	}
	rs, err := nft.Render(nets6(), h)
	if err != nil {
		t.Fatal(err)
	}
	h.Ruleset = withIPv6(rs, nets6())
	return h
}

// withIPv6 adds to a ruleset rendered without IPv6 the rules the firewall
// for IPv6 is specified to have (issue 15): a network's
// from-chain accepts its IPv6 prefix, a routed network's to-chain the
// traffic to it, a nat network's prefix is masqueraded (NAT66), guests
// reach the host's services by ICMPv6 too. A render that already holds
// IPv6 rules is returned as it is, so these tests then walk the real one.
// Rules and map elements of a missing IPv4 address (an IPv6-only network
// in a render that knows only IPv4) are dropped.
func withIPv6(rs model.Ruleset, nets []model.Network) model.Ruleset {
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, m := range r.Match {
				if m.Prefix.IsValid() && m.Prefix.Addr().Is6() {
					return rs
				}
			}
		}
	}
	valid := func(r model.Rule) bool {
		return !slices.ContainsFunc(r.Match, func(m model.Match) bool {
			return (m.Kind == model.MatchSAddr || m.Kind == model.MatchDAddr) && !m.Prefix.IsValid()
		})
	}
	for i, c := range rs.Chains {
		rs.Chains[i].Rules = slices.DeleteFunc(slices.Clone(c.Rules), func(r model.Rule) bool { return !valid(r) })
	}
	for i, v := range rs.Vmaps {
		rs.Vmaps[i].Elements = slices.DeleteFunc(slices.Clone(v.Elements), func(e model.VmapElement) bool {
			return e.Name == "" && !e.Prefix.IsValid()
		})
	}
	beforeLast := func(chain string, r model.Rule) {
		for i, c := range rs.Chains {
			if c.Name == chain {
				n := len(c.Rules) - 1
				rs.Chains[i].Rules = slices.Insert(slices.Clone(c.Rules), n, r)
				return
			}
		}
		rs.Chains = append(rs.Chains, model.Chain{Name: chain, Rules: []model.Rule{r, {Network: r.Network, Verdict: model.Reject}}})
	}
	for _, n := range nets {
		s6 := n.Subnet6()
		if !s6.IsValid() || !n.NeedsForwarding() {
			continue
		}
		beforeLast(model.ChainFrom(n.Name), model.Rule{Network: n.Name, Match: []model.Match{{Kind: model.MatchSAddr, Prefix: s6}}, Verdict: model.Accept})
		if n.Mode == model.Routed {
			beforeLast(model.ChainTo(n.Name), model.Rule{Network: n.Name, Match: []model.Match{{Kind: model.MatchDAddr, Prefix: s6}}, Verdict: model.Accept})
		}
		if n.Mode == model.NAT { // NAT66 (fw's render dispatches by nat_from6 to the same masquerade)
			for i, c := range rs.Chains {
				if c.Name == "postrouting" {
					rs.Chains[i].Rules = append(slices.Clone(c.Rules), model.Rule{Network: n.Name, Verdict: model.Masquerade,
						Match: []model.Match{{Kind: model.MatchSAddr, Prefix: s6}, {Kind: model.MatchOIF, Name: n.Bridge, Neg: true}}})
				}
			}
		}
		if _, ok := rs.Chain(model.ChainInput(n.Name)); ok {
			beforeLast(model.ChainInput(n.Name), model.Rule{Network: n.Name, Match: []model.Match{{Kind: model.MatchL4, Name: "ipv6-icmp"}}, Verdict: model.Accept})
		}
	}
	return rs
}

// TestWalkIPv6 walks IPv6 paths through host6: out of a nat network
// through NAT66, into it from the internet (refused), into a routed
// network, across networks (refused without peers), and past each switch
// of the IPv6 family (forwarding, br_netfilter for ip6, ip6tables'
// FORWARD drop), which must not be the IPv4 one's.
func TestWalkIPv6(t *testing.T) {
	ip6Drop := model.ForeignChain{Name: "table ip6 filter chain FORWARD"}
	ip4Drop := model.ForeignChain{Name: "table ip filter chain FORWARD"}
	inetDrop := model.ForeignChain{Name: "table inet firewalld chain filter_FORWARD"}
	pk := func(src, dst, proto string, port int) Packet {
		return Packet{Src: a(src), Dst: a(dst), Proto: proto, Port: port}
	}
	out := pk("fd42:99::10", "2001:db8:ff::2", "tcp", 80)
	for _, c := range []struct {
		name  string
		p     Packet
		edit  func(*model.Host)
		where string // "host", an egress interface, or "" (dropped)
		says  []string
	}{
		{"nat guest -> internet (NAT66)", out, nil, "up0", []string{
			"ip -6 route get 2001:db8:ff::2: dev up0 via fe80::ff (main table)",
			"masquerade", "source fd42:99::10 becomes 2001:db8:1::1",
			"conntrack un-NATs 2001:db8:1::1 to fd42:99::10"}},
		{"internet -> nat guest", pk("2001:db8:ff::2", "fd42:99::10", "tcp", 8080), nil, "", []string{"chain to-default: reject"}},
		{"internet -> routed guest", pk("2001:db8:ff::2", "2001:db8:71::10", "tcp", 8080), nil, "grt0", []string{
			"chain to-lab: ip6 daddr 2001:db8:71::/64 accept", "chain from-lab: ip6 saddr 2001:db8:71::/64 accept"}},
		{"routed guest -> internet, not NATed", pk("2001:db8:71::10", "2001:db8:ff::2", "udp", 53), nil, "up0", []string{
			"chain from-lab: ip6 saddr 2001:db8:71::/64 accept", "no NAT: 2001:db8:ff::2 must route 2001:db8:71::10 back via this host"}},
		{"other -> default (no peers)", pk("fd42:2::10", "fd42:99::10", "tcp", 8080), nil, "", []string{`chain to-default: iifgroup 26485 iifname != "gnat0" reject`}},
		{"lab -> default (peers: [lab])", pk("2001:db8:71::10", "fd42:99::10", "tcp", 8080), nil, "gnat0", []string{`chain to-default: iifname "grt0" accept`}},
		{"default -> lab (lab names no peers)", pk("fd42:99::10", "2001:db8:71::10", "tcp", 8080), nil, "", []string{`chain to-lab: iifgroup 26485 iifname != "grt0" reject`}},
		{"guest -> gateway, ICMPv6", pk("fd42:99::10", "fd42:99::1", "icmp", 0), nil, "host", []string{"chain input-default: meta l4proto ipv6-icmp accept"}},
		{"guest -> gateway tcp/22", pk("fd42:99::10", "fd42:99::1", "tcp", 22), nil, "", []string{"chain input-default: reject"}},
		{"IPv6 forwarding off", out, func(h *model.Host) { h.IP6Forward = false }, "", []string{
			"net.ipv6.conf.all.forwarding = 0: the host does not route IPv6 between gnat0 and up0"}},
		{"IPv4 forwarding off does not stop IPv6", out, func(h *model.Host) { h.IPForward = false }, "up0", nil},
		{"no IPv6 default route", out, func(h *model.Host) {
			h.Routes = slices.DeleteFunc(h.Routes, func(r model.Route) bool { return r.Dst.Bits() == 0 && r.Dst.Addr().Is6() })
		}, "", []string{"no route to 2001:db8:ff::2"}},
		{"ip6tables FORWARD drop", out, func(h *model.Host) { h.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop} }, "", []string{
			"table ip6 filter chain FORWARD: policy drop, no rule accepts gnat0 -> up0"}},
		{"ip6tables FORWARD drop with guestnet's IPv4 DOCKER-USER rules", out, func(h *model.Host) {
			h.Foreign = model.Foreign{DockerUser: true, ForwardDrop: []model.ForeignChain{ip6Drop}}
			h.Ruleset.DockerUser = []model.Rule{{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: "gnat0"}}}}
		}, "", []string{"table ip6 filter chain FORWARD: policy drop"}},
		{"ip6tables FORWARD drop, guestnet's ip6tables DOCKER-USER rules", out, func(h *model.Host) {
			h.Foreign = model.Foreign{ForwardDrop: []model.ForeignChain{ip6Drop}}
			h.Ruleset.DockerUser6 = []model.Rule{{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: "gnat0"}}},
				{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchOIF, Name: "gnat0"}}}}
		}, "up0", []string{`table ip6 filter chain DOCKER-USER: iifname "gnat0" accept`, `table ip6 filter chain DOCKER-USER: oifname "gnat0" accept`}},
		{"iptables FORWARD drop does not see IPv6", out, func(h *model.Host) { h.Foreign.ForwardDrop = []model.ForeignChain{ip4Drop} }, "up0", nil},
		{"an inet table's FORWARD drop sees IPv6", out, func(h *model.Host) { h.Foreign.ForwardDrop = []model.ForeignChain{inetDrop} }, "", []string{
			"table inet firewalld chain filter_FORWARD: policy drop"}},
		{"ip6tables drop that accepts the bridge", out, func(h *model.Host) {
			h.Foreign.ForwardDrop = []model.ForeignChain{{Name: ip6Drop.Name, AcceptIIF: []string{"gnat0"}, AcceptOIF: []string{"gnat0"}}}
		}, "up0", nil},
		{"within a bridge, br_netfilter off for ip6", pk("fd42:99::10", "fd42:99::11", "tcp", 22), func(h *model.Host) {
			h.BridgeNFCallIPTables = true
			h.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop}
		}, "gnat0", []string{"bridged within gnat0 (bridge-nf-call-ip6tables = 0: no IP hooks)"}},
		{"within a bridge, bridge-nf-call-ip6tables = 1 and an ip6tables drop", pk("fd42:99::10", "fd42:99::11", "tcp", 22), func(h *model.Host) {
			h.BridgeNFCallIP6Tables = true
			h.Foreign.ForwardDrop = []model.ForeignChain{ip6Drop}
		}, "", []string{`chain to-default: iifname "gnat0" accept`, "table ip6 filter chain FORWARD: policy drop, no rule accepts gnat0 -> gnat0"}},
		{"source and destination of two families", pk("fd42:99::10", "203.0.113.10", "tcp", 80), nil, "", []string{"not of one address family"}},
		{"link-local source without --in", pk("fe80::10", "fd42:99::1", "icmp", 0), nil, "", []string{"is link-local"}},
		{"link-local source on gnat0", Packet{Src: a("fe80::10"), Dst: a("fd42:99::1"), Proto: "icmp", InDev: "gnat0"}, nil, "host", nil},
	} {
		h := host6(t)
		if c.edit != nil {
			c.edit(&h)
		}
		r := Walk(h, model.Diag{}, c.p)
		where := ""
		switch {
		case r.Delivered && r.Local:
			where = "host"
		case r.Delivered:
			where = r.Egress
		}
		text := detail(r)
		if where != c.where || r.CannotTell {
			t.Errorf("%s: ends at %q (cannot tell %v), want %q\n%s", c.name, where, r.CannotTell, c.where, text)
			continue
		}
		for _, s := range c.says {
			if !strings.Contains(text, s) {
				t.Errorf("%s: the walk does not say %q:\n%s", c.name, s, text)
			}
		}
	}
}

// TestWalkIPv4NotStoppedByIPv6Switches: the IPv6 switches (forwarding,
// an ip6tables FORWARD drop, IPv6 policy rules) leave IPv4 packets alone.
func TestWalkIPv4NotStoppedByIPv6Switches(t *testing.T) {
	h := host6(t)
	h.IP6Forward = false
	h.Foreign.ForwardDrop = []model.ForeignChain{{Name: "table ip6 filter chain FORWARD"}}
	d := model.Diag{PolicyRules6: []string{"1000: from fd42:99::/64 lookup 100"}}
	r := Walk(h, d, Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10"), Proto: "tcp", Port: 80})
	if !r.Delivered || strings.Contains(detail(r), "ip -6") || !strings.Contains(detail(r), "source 10.99.0.10 becomes 198.51.100.1") {
		t.Errorf("IPv4 walk:\n%s", detail(r))
	}
	r = Walk(h, d, Packet{Src: a("fd42:99::10"), Dst: a("2001:db8:ff::2"), Proto: "tcp", Port: 80})
	if !strings.Contains(detail(r), "not simulated: policy routing (ip -6 rule 1000: from fd42:99::/64 lookup 100)") {
		t.Errorf("the IPv6 walk does not name the IPv6 policy rule:\n%s", detail(r))
	}
}
