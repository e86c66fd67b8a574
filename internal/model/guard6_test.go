package model

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestGuard6Reasons: each IPv6 drop says why, told from the table as it is:
// an address another port claimed or was bound to, one outside the
// prefixes, one a bound port did not list, a guest's RA, an NA for a
// neighbour's address.
func TestGuard6Reasons(t *testing.T) {
	a := netip.MustParseAddr
	g := Guard{
		Bound:    []Bind{{Port: "vgd", MAC: "02:00:00:00:00:0d", IP: a("fd42:99::20")}},
		Ports6:   []string{"vgd"},
		PortMACs: []PortMAC{{"vgd", "02:00:00:00:00:0d"}},
		Claims6:  []Claim6{{Port: "vgs", IP: a("fd42:99::77")}, {Port: "vga", IP: a("fd42:99::5")}},
		Dropped6: []Drop6{
			{Kind: Drop6Source, Port: "vga", IP: a("fd42:99::77"), Packets: 3},
			{Kind: Drop6Source, Port: "vga", IP: a("fd42:99::20"), Packets: 1},
			{Kind: Drop6Source, Port: "vga", IP: a("fd99::5"), Packets: 1},
			{Kind: Drop6Source, Port: "vga", IP: a("::"), Packets: 1},
			{Kind: Drop6Source, Port: "vgd", MAC: "02:00:00:00:00:0d", IP: a("fd42:99::21"), Packets: 2},
			{Kind: Drop6Source, Port: "vgd", MAC: "02:00:00:00:00:99", IP: a("fd42:99::20"), Packets: 2},
			{Kind: Drop6Router, Port: "vgr", IP: a("fe80::1"), Packets: 2},
			{Kind: Drop6DHCP, Port: "vgr", IP: a("fe80::1"), Packets: 1},
			{Kind: Drop6NA, Port: "vga", IP: a("fd42:99::77"), Packets: 1},
		},
	}
	var got []string
	for _, p := range []string{"vga", "vgd", "vgr"} {
		for _, x := range g.Dropped6By(p) {
			got = append(got, p+": "+x.Why)
		}
	}
	want := []string{
		"vga: address held by port vgs (claimed first)",
		"vga: address bound to port vgd (attach --ip)",
		"vga: outside the network's IPv6 prefix and not link-local (or held by a port whose claim has since lapsed)",
		"vga: from :: but neither duplicate address detection nor an MLD report",
		"vga: advertises an address held by port vgs",
		"vgd: not among the port's bound IPv6 addresses (attach --ip)",
		"vgd: the port is bound to MAC 02:00:00:00:00:0d (attach --mac)",
		"vgr: router advertisement or redirect from a guest (RA guard)",
		"vgr: DHCPv6 server message from a guest",
	}
	if !slices.Equal(got, want) {
		t.Errorf("reasons:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := g.Dropped6By("vga")[0].Summary(); s != "IPv6 3 frames from MAC , address fd42:99::77 (last 0s ago): address held by port vgs (claimed first)" {
		t.Errorf("summary: %s", s)
	}
	if got := g.ClaimsOf("vga"); !slices.Equal(got, []netip.Addr{a("fd42:99::5")}) {
		t.Errorf("claims of vga: %v", got)
	}
}

// TestGuard6Table: the common case comes first, behind the MAC check of a
// port bound to a MAC (a source the port holds:
// one lookup, the claim's refresh, then own6), every rule of the IPv6
// chains checks the protocol, the RA guard is in own6, and each key fits
// the 64 bytes of registers a lookup may use.
func TestGuard6Table(t *testing.T) {
	tb := GuardTableOf(GuardFamily)
	check6, _ := tb.Chain("check6")
	if got := check6.Rules[1].String(); got != "iifname . ip6 saddr @claims6 update @claims6 { iifname . ip6 saddr } update @claimed6 { ip6 saddr } goto own6" {
		t.Errorf("check6 starts with %q", got)
	}
	own6, _ := tb.Chain("own6")
	for i, typ := range []string{"nd-router-advert", "nd-redirect"} {
		if r := own6.Rules[i].String(); !strings.HasPrefix(r, "icmpv6 type "+typ+" update @router6") || !strings.HasSuffix(r, "drop") {
			t.Errorf("own6 rule %d: %q", i, r)
		}
	}
	for _, c := range []GuardChain{check6, own6} {
		for _, r := range c.Rules {
			if len(r.Terms) > 0 && (r.Terms[0].Op != OpProtocol || r.Terms[0].Proto != "ip6") {
				t.Errorf("chain %s: %q does not check meta protocol ip6 first", c.Name, r)
			}
		}
	}
	size := map[string]int{"ifname": 16, "ether_addr": 8, "ipv6_addr": 16, "ipv4_addr": 4, "inet_proto": 4, "ether_type": 4}
	for _, s := range tb.Sets {
		n := 0
		for _, k := range s.Key {
			n += size[k]
		}
		if n > 64 {
			t.Errorf("set %s: key of %d bytes", s.Name, n)
		}
	}
	pre, _ := tb.Chain("prerouting")
	var texts []string
	for _, r := range pre.Rules {
		texts = append(texts, r.String())
	}
	i := slices.Index(texts, "meta protocol ip6 iifname @guests6 goto check6")
	if i < 0 || i > slices.Index(texts, "iifname @ports jump check") {
		t.Errorf("IPv6 of guest ports does not go to check6 before bound ports go to check: %q", texts)
	}
}

// TestFirstComePorts: the guest ports of guarded networks on their own
// bridge get first-come claims in their prefix and link-local; those of
// mode open and mode bridge do not.
func TestFirstComePorts(t *testing.T) {
	nets := []Network{
		{Name: "default", Mode: NAT, Bridge: "gnat0", IPv6: netip.MustParsePrefix("fd42:99::1/64")},
		{Name: "v4", Mode: Isolated, Bridge: "giso0"},
		{Name: "free", Mode: Open, Bridge: "gopen0", IPv6: netip.MustParsePrefix("fd42:98::1/64")},
		{Name: "lan", Mode: Bridge, Bridge: "br0"},
	}
	var g Guard
	g.SetFirstCome(nets, map[string][]string{"default": {"vnet1"}, "v4": {"vnet2"}, "free": {"vnet3"}, "lan": {"vnet4"}})
	if !slices.Equal(g.Guests6, []string{"vnet1", "vnet2"}) {
		t.Errorf("first-come ports: %v", g.Guests6)
	}
	var got []string
	for _, p := range g.Prefixes6 {
		got = append(got, p.String())
	}
	if want := []string{`"vnet1" . fd42:99::/64`, `"vnet1" . fe80::/10`, `"vnet2" . fe80::/10`}; !slices.Equal(got, want) {
		t.Errorf("prefixes: %q, want %q", got, want)
	}
}

// TestLearnedGuests6Checked: a port the daemon put in guests6_learned goes
// to check6 as a declared one does, and claims in prefixes6_learned.
func TestLearnedGuests6Checked(t *testing.T) {
	rules := GuardRules()
	has := func(chain, want string) {
		t.Helper()
		for _, r := range rules[chain] {
			if r == want {
				return
			}
		}
		t.Errorf("chain %s lacks %q:\n%s", chain, want, strings.Join(rules[chain], "\n"))
	}
	has("prerouting", `meta protocol ip6 iifname @guests6_learned goto check6`)
	has("check6", `iifname . ip6 saddr @prefixes6_learned update @claims6 { iifname . ip6 saddr } update @claimed6 { ip6 saddr } goto own6`)
	found := false
	for _, r := range rules["check6"] {
		found = found || (strings.Contains(r, "icmpv6 type nd-neighbor-solicit") && strings.Contains(r, "@prefixes6_learned"))
	}
	if !found {
		t.Error("no DAD claim rule looks up prefixes6_learned")
	}
	for _, name := range []string{GuardLearnedGuests6, GuardLearnedPrefixes6} {
		if slices.Contains(DeclaredSets6, name) {
			t.Errorf("set %s is the daemon's, not declared", name)
		}
	}
}
