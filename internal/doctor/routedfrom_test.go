package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// TestRoutedFromFindings: a nat network with routed_from, as guestnet
// renders it, on a host with a LAN interface facing the prefix, gives only
// the Info finding (the peers' return route is out of sight), naming the
// command with this host's LAN address; a foreign masquerade that covers
// the peers, a prefix reached by the default route, one with no route
// and guestnet's own rules missing are each found.
func TestRoutedFromFindings(t *testing.T) {
	n := model.Network{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.99.0.1/24"), RoutedFrom: []netip.Prefix{pfx("10.94.0.0/24")}}
	base := func() Input {
		in := healthy()
		in.Networks = []model.Network{n}
		in.Host.Links = append(in.Host.Links, model.Link{Name: "lan0", Kind: "device", Up: true, Addrs: []netip.Prefix{pfx("10.94.0.1/24")}})
		slices.SortFunc(in.Host.Links, func(a, b model.Link) int { return strings.Compare(a.Name, b.Name) })
		in.Host.Routes = append(in.Host.Routes, model.Route{Dst: pfx("10.94.0.0/24"), Dev: "lan0", Proto: model.ProtoKernel, Scope: 253},
			model.Route{Dst: pfx("10.99.0.0/24"), Dev: "gnat0", Proto: model.ProtoKernel, Scope: 253})
		rs, err := nft.Render([]model.Network{n}, model.Host{})
		if err != nil {
			t.Fatal(err)
		}
		in.Host.Ruleset = rs
		return in
	}
	foreign := base()
	foreign.Diag.ForeignNAT = []model.ForeignRule{{Chain: "table ip nat chain POSTROUTING", Rule: model.Rule{Verdict: model.Masquerade,
		Match: []model.Match{{Kind: model.MatchSAddr, Prefix: pfx("10.99.0.0/24")}}}}}
	viaDefault := base()
	viaDefault.Host.Routes = viaDefault.Host.Routes[:1] // the default route alone
	viaDefault.Host.Routes[0].Gw = netip.MustParseAddr("198.51.100.254")
	unrouted := base()
	unrouted.Host.Routes = unrouted.Host.Routes[2:] // the guests' subnet alone
	stale := base()
	rs, _ := nft.Render([]model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.99.0.1/24")}}, model.Host{})
	stale.Host.Ruleset = rs // applied before routed_from was added
	for _, c := range []struct {
		name string
		in   Input
		want []string // severity: what, one per finding
	}{
		{"healthy", base(), []string{"info: the hosts in routed_from 10.94.0.0/24"}},
		{"foreign masquerade", foreign, []string{"error: traffic from 10.99.0.0/24 to routed_from 10.94.0.0/24 is still masqueraded", "info:"}},
		{"beyond a router", viaDefault, []string{"warning: routed_from 10.94.0.0/24 is reached by the default route (dev eth0 via 198.51.100.254)", "info:"}},
		{"no route", unrouted, []string{"error: routed_from 10.94.0.0/24: this host has no route to it"}},
		{"rules not applied", stale, []string{"error: traffic from 10.99.0.0/24 to routed_from 10.94.0.0/24 is still masqueraded", "info:"}},
	} {
		fs := checkRoutedFrom(c.in)
		var got []string
		for _, f := range fs {
			got = append(got, string(f.Severity)+": "+f.What+" | "+strings.Join(f.Evidence, "; ")+" | "+f.Fix)
		}
		ok := len(got) == len(c.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.HasPrefix(got[i], c.want[i])
		}
		if !ok {
			t.Errorf("%s: findings\n%s\nwant prefixes %q", c.name, strings.Join(got, "\n"), c.want)
		}
	}
	fs := checkRoutedFrom(base())
	if len(fs) != 1 || !strings.Contains(fs[0].Fix, "ip route add 10.99.0.0/24 via 10.94.0.1") {
		t.Errorf("the Info finding's fix: %+v, want the route via the LAN address 10.94.0.1", fs)
	}
	if Problems(fs) != 0 {
		t.Errorf("a healthy routed_from network counts %d problems", Problems(fs))
	}
}
