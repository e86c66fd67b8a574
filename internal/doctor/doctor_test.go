package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// healthy is a host with a NAT bridge as guestnet makes it.
func healthy() Input {
	h := model.Host{
		Links: []model.Link{
			{Name: "eth0", Kind: "device", Up: true, Carrier: true, MTU: 1500, Addrs: []netip.Prefix{pfx("198.51.100.1/24")}},
			{Name: "gnat0", Kind: "bridge", Up: true, Carrier: true, MTU: 1500, Alias: "guestnet:default", Addrs: []netip.Prefix{pfx("10.99.0.1/24")}},
			{Name: "tap0", Kind: "tuntap", Up: true, MTU: 1500, Master: "gnat0"},
		},
		Routes:    []model.Route{{Dst: pfx("0.0.0.0/0"), Dev: "eth0"}},
		IPForward: true,
		Ruleset: model.Ruleset{Chains: []model.Chain{{Name: "postrouting", Rules: []model.Rule{{Network: "default", Verdict: model.Masquerade,
			Match: []model.Match{{Kind: model.MatchSAddr, Prefix: pfx("10.99.0.0/24")}}}}}}},
	}
	return Input{Host: h, Diag: model.Diag{RPFilter: map[string]int{"all": 0}, Conntrack: 10, CtMax: 1000},
		Networks: []model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.99.0.1/24")}}, Declared: true}
}

func TestChecks(t *testing.T) {
	cases := []struct {
		name    string
		breakIt func(in *Input)
		want    string
	}{
		{"healthy", func(in *Input) {}, ""},
		{"forwarding off", func(in *Input) { in.Host.IPForward = false }, "ip-forward"},
		{"FORWARD drop", func(in *Input) {
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}
		}, "forward-drop"},
		{"FORWARD drop that accepts the bridge", func(in *Input) {
			in.Host.Foreign.ForwardDrop = []model.ForeignChain{{Name: "x", AcceptIIF: []string{"gnat0"}, AcceptOIF: []string{"gnat0"}}}
		}, ""},
		{"FORWARD drop, guestnet's DOCKER-USER rules let the bridge through", func(in *Input) {
			in.Host.Foreign = model.Foreign{DockerUser: true, ForwardDrop: []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}}
			in.Host.Ruleset.DockerUser = []model.Rule{
				{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: "gnat0"}}},
				{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchOIF, Name: "gnat0"}}}}
		}, ""},
		{"FORWARD drop, DOCKER-USER lets only the way out", func(in *Input) {
			in.Host.Foreign = model.Foreign{DockerUser: true, ForwardDrop: []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}}
			in.Host.Ruleset.DockerUser = []model.Rule{{Network: "default", Verdict: model.Accept, Match: []model.Match{{Kind: model.MatchIIF, Name: "gnat0"}}}}
		}, "forward-drop"},
		{"masquerade on the wrong uplink", func(in *Input) {
			in.Diag.ForeignNAT = []model.ForeignRule{{Chain: "table ip nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade,
				Match: []model.Match{{Kind: model.MatchOIF, Name: "eth1"}, {Kind: model.MatchSAddr, Prefix: pfx("10.99.0.0/24")}}}}}
		}, "masquerade-oif"},
		{"hand-made bridge without NAT", func(in *Input) {
			in.Host.Ruleset = model.Ruleset{}
			in.Declared, in.Networks = false, Discover(in.Host)
		}, "return-route"},
		{"overlap with a host route", func(in *Input) {
			in.Host.Routes = append(in.Host.Routes, model.Route{Dst: pfx("10.99.0.0/16"), Dev: "eth0"})
		}, "subnet-overlap"},
		{"strict rp_filter with two uplinks", func(in *Input) {
			in.Host.Links = append(in.Host.Links, model.Link{Name: "eth1", Kind: "device", Addrs: []netip.Prefix{pfx("203.0.113.1/24")}})
			in.Diag.RPFilter["gnat0"] = 1
		}, "rp-filter"},
		{"bridge down", func(in *Input) { in.Host.Links[1].Up = false }, "bridge"},
		{"TAP in no bridge", func(in *Input) { in.Host.Links[2].Master = "" }, "bridge"},
		{"veth end in no bridge", func(in *Input) {
			in.Host.Links = append(in.Host.Links, model.Link{Name: "veth1a2b", Kind: "veth", Up: true})
		}, "bridge"},
		{"veth with an address is a routed link, not a port", func(in *Input) {
			in.Host.Links = append(in.Host.Links, model.Link{Name: "up1", Kind: "veth", Up: true, Addrs: []netip.Prefix{pfx("203.0.113.1/24")}})
		}, ""},
		{"conntrack nearly full", func(in *Input) { in.Diag.Conntrack = 950 }, "conntrack"},
		{"guest sends from an address it is not bound to", func(in *Input) {
			bound := model.Bind{Port: "tap0", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.99.0.10")}
			in.Host.Guard = model.Guard{On: true, Bound: []model.Bind{bound}, Guests6: []string{"tap0"},
				Spoofed: []model.Spoofed{{Bind: model.Bind{Port: "tap0", MAC: bound.MAC, IP: netip.MustParseAddr("10.99.0.99")}, Packets: 4}}}
		}, "spoofed"},
		{"bound guest sends IPv6 and VLAN-tagged frames", func(in *Input) {
			in.Host.Guard = model.Guard{On: true, Guests6: []string{"tap0"}, DroppedOther: []model.OtherDrop{
				{Port: "tap0", MAC: "52:54:00:00:00:01", EtherType: "ip6", Packets: 7},
				{Port: "tap0", MAC: "52:54:00:00:00:01", EtherType: "8021q", Packets: 1}}}
			in.Host.Guard.SetDeclared([]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.99.0.10")}})
		}, "not-ipv4,not-ipv4"},
	}
	for _, c := range cases {
		in := healthy()
		c.breakIt(&in)
		var got []string
		for _, f := range Run(in) {
			got = append(got, f.Check)
			if f.What == "" || len(f.Evidence) == 0 || f.Fix == "" {
				t.Errorf("%s: incomplete finding %+v", c.name, f)
			}
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: checks %v, want %q", c.name, got, c.want)
		}
	}
}

// TestSpoofedFinding: the finding names the port's network, what was
// dropped, what the port may send from, and the attach command that
// rebinds it.
func TestSpoofedFinding(t *testing.T) {
	in := healthy()
	in.Host.Guard = model.Guard{On: true,
		Learned: []model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.99.0.10")}},
		Spoofed: []model.Spoofed{
			{Bind: model.Bind{Port: "tap0", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.99.0.99")}, Packets: 3},
			{Bind: model.Bind{Port: "tap0", MAC: "52:54:00:00:00:02", IP: netip.IPv4Unspecified()}, Packets: 1},
		}}
	fs := checkSpoofed(in)
	if len(fs) != 1 {
		t.Fatalf("findings: %+v", fs)
	}
	f := fs[0]
	text := f.What + "\n" + strings.Join(f.Evidence, "\n") + "\n" + f.Fix
	for _, want := range []string{"sent 4 frames", "3 frames from MAC 52:54:00:00:00:01, address 10.99.0.99",
		"1 frame from MAC 52:54:00:00:00:02, address 0.0.0.0", "MAC 52:54:00:00:00:01, 10.99.0.10 (bound by lease)",
		"guestnet attach default tap0 --ip", "let it renew"} {
		if !strings.Contains(text, want) {
			t.Errorf("finding lacks %q:\n%s", want, text)
		}
	}
	if f.Network != "default" {
		t.Errorf("network %q", f.Network)
	}
}

// TestMasqueradedAsksTheMatcher: whether a hand-made bridge is NATed is
// decided by package match on packets from the subnet's first and last
// hosts; a rule it cannot simulate is named in the evidence, not guessed.
func TestMasqueradedAsksTheMatcher(t *testing.T) {
	sub := pfx("10.99.0.0/24")
	for _, c := range []struct {
		name     string
		m        []model.Match
		finding  bool
		evidence string
	}{
		{"by source, not to its own subnet", []model.Match{{Kind: model.MatchSAddr, Prefix: sub}, {Kind: model.MatchDAddr, Prefix: sub, Neg: true}}, false, ""},
		{"by source on the uplink", []model.Match{{Kind: model.MatchSAddr, Prefix: sub}, {Kind: model.MatchOIF, Name: "eth0"}}, false, ""},
		{"half the subnet", []model.Match{{Kind: model.MatchSAddr, Prefix: pfx("10.99.0.0/25")}}, true, ""},
		{"another subnet", []model.Match{{Kind: model.MatchSAddr, Prefix: pfx("10.98.0.0/24")}}, true, ""},
		{"out of the bridge only", []model.Match{{Kind: model.MatchSAddr, Prefix: sub}, {Kind: model.MatchOIF, Name: "gnat0"}}, true, ""},
		{"a match doctor cannot simulate", []model.Match{{Kind: model.MatchSAddr, Prefix: sub}, {Kind: "meta mark", Port: 1}}, true, "cannot simulate"},
	} {
		in := healthy()
		in.Host.Ruleset = model.Ruleset{}
		in.Declared, in.Networks = false, Discover(in.Host)
		in.Diag.ForeignNAT = []model.ForeignRule{{Chain: "table ip nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade, Match: c.m}}}
		fs := checkReturnRoute(in)
		if (len(fs) > 0) != c.finding {
			t.Errorf("%s: return-route findings %+v, want a finding: %v", c.name, fs, c.finding)
			continue
		}
		if c.evidence != "" && !strings.Contains(strings.Join(fs[0].Evidence, "\n"), c.evidence) {
			t.Errorf("%s: evidence %q does not say %q", c.name, fs[0].Evidence, c.evidence)
		}
	}
}

// TestNotIPv4Finding: frames neither IPv4 nor ARP get one finding per
// port and ether type: IPv6 chatter is Info (no problem: doctor's exit
// status ignores it), VLAN-tagged frames a Warning, each with the records
// as evidence and a fix naming the network; frames from a MAC bound to
// another port are the spoofed check's, not these.
func TestNotIPv4Finding(t *testing.T) {
	in := healthy()
	mac := "52:54:00:00:00:01"
	in.Host.Guard = model.Guard{On: true, DroppedOther: []model.OtherDrop{
		{Port: "tap0", MAC: mac, EtherType: "ip6", Packets: 5},
		{Port: "tap0", MAC: "52:54:00:00:00:09", EtherType: "ip6", Packets: 2},
		{Port: "tap0", MAC: mac, EtherType: "8021q", Packets: 3},
		{Port: "tap1", MAC: mac, EtherType: "ip6", Packets: 4}, // tap0's MAC on another port
	}}
	in.Host.Guard.SetDeclared([]model.Bind{{Port: "tap0", MAC: mac, IP: netip.MustParseAddr("10.99.0.10")}})
	fs := checkNotIPv4(in)
	if len(fs) != 2 {
		t.Fatalf("findings: %+v", fs)
	}
	text := func(f Finding) string { return f.What + "\n" + strings.Join(f.Evidence, "\n") + "\n" + f.Fix }
	for i, c := range []struct {
		sev  Severity
		want []string
	}{
		{Warning, []string{"tap0 sent 3 VLAN-tagged frames (ether type 8021q)", "IPv4 included", "set dropped_other: 3 VLAN-tagged frames", "untagged interface", "anti_spoofing: false on network default"}},
		{Info, []string{"tap0 sent 7 IPv6 frames (ether type ip6)", "router solicitations", "not an attack",
			"set dropped_other: 5 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:01", "set dropped_other: 2 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:09",
			"tap0 may send from MAC 52:54:00:00:00:01, 10.99.0.10", "disable_ipv6=1", "anti_spoofing: false on network default"}},
	} {
		f := fs[i]
		if f.Severity != c.sev || f.Network != "default" {
			t.Errorf("finding %d: severity %s, network %q, want %s, default", i, f.Severity, f.Network, c.sev)
		}
		for _, w := range c.want {
			if !strings.Contains(text(f), w) {
				t.Errorf("finding %d lacks %q:\n%s", i, w, text(f))
			}
		}
	}
	if n := Problems(fs); n != 1 {
		t.Errorf("Problems = %d, want 1 (the Warning; Info is none)", n)
	}
	sp := checkSpoofed(in)
	if len(sp) != 1 || !strings.Contains(text(sp[0]), "set dropped_other: 4 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:01 (last 0s ago): the MAC is bound to port tap0") ||
		!strings.Contains(sp[0].What, "tap1 sent 4 frames") {
		t.Errorf("spoofed does not take the IPv6 frames from tap0's MAC on tap1: %+v", sp)
	}
}

// TestMasqueradeThroughDispatch: guestnet's masquerade lives in the chain
// nat_from sends the subnet to; doctor finds it there (and only for the
// subnet the map holds).
func TestMasqueradeThroughDispatch(t *testing.T) {
	for _, c := range []struct {
		name    string
		ipv4    string
		finding bool
	}{
		{"nat_from holds the subnet", "10.99.0.1/24", false},
		{"nat_from holds another subnet", "10.98.0.1/24", true},
	} {
		in := healthy()
		rs, err := nft.Render([]model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx(c.ipv4)}}, model.Host{})
		if err != nil {
			t.Fatal(err)
		}
		in.Host.Ruleset = rs
		in.Declared, in.Networks = false, Discover(in.Host)
		if fs := checkReturnRoute(in); (len(fs) > 0) != c.finding {
			t.Errorf("%s: return-route findings %+v, want a finding: %v", c.name, fs, c.finding)
		}
	}
}
