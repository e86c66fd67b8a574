package report

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/state"
)

var host = model.Host{
	Links: []model.Link{
		{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.10.0.1/24")}},
		{Name: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/25")}},
		{Name: "grt0", Kind: "bridge", Up: true, Alias: "guestnet:lab", Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.1.1/24")}},
		{Name: "tap0", Master: "grt0"},
	},
	Routes: []model.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth1"}},
}

var lab = model.Network{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv4: netip.MustParsePrefix("10.99.1.1/24")}

func TestRoutes(t *testing.T) {
	cases := []struct {
		via, peer, os, want string
	}{
		{"", "10.10.0.7", "linux", "ip route add 10.99.1.0/24 via 10.10.0.1"},
		{"", "", "linux", "ip route add 10.99.1.0/24 via 198.51.100.1"},
		{"10.10.0.9", "", "windows", "route -p add 10.99.1.0 mask 255.255.255.0 10.10.0.9"},
		{"", "10.10.0.7", "windows", "route -p add 10.99.1.0 mask 255.255.255.0 10.10.0.1"},
	}
	for _, c := range cases {
		var via, peer netip.Addr
		if c.via != "" {
			via = netip.MustParseAddr(c.via)
		}
		if c.peer != "" {
			peer = netip.MustParseAddr(c.peer)
		}
		got, err := Routes(lab, host, via, peer, c.os)
		if err != nil || strings.Join(got, "\n") != c.want {
			t.Errorf("%+v: got %q %v", c, got, err)
		}
	}
	if _, err := Routes(lab, host, netip.Addr{}, netip.MustParseAddr("172.30.0.1"), "linux"); err == nil {
		t.Error("a peer on no connected subnet must ask for --via")
	}
	if _, err := Routes(lab, host, netip.Addr{}, netip.Addr{}, "bsd"); err == nil {
		t.Error("unknown --for accepted")
	}
}

func TestStatus(t *testing.T) {
	st := state.State{Networks: map[string]state.Net{"lab": {Network: lab}, "gone": {Network: model.Network{Name: "gone", Mode: model.NAT, Bridge: "gn0"}}}}
	s := MakeStatus(st, host)
	text := s.Text()
	for _, want := range []string{"lab          routed    grt0            up    10.99.1.1/24", "tap0", "gone         nat       gn0             MISSING"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}

// TestStatusCountsNetworkChains: a network's rule count is the rules of
// its own chains in the dispatching ruleset (each tagged with its name),
// not the base chains' dispatch rules, which serve every network.
func TestStatusCountsNetworkChains(t *testing.T) {
	other := model.Network{Name: "other", Mode: model.NAT, Bridge: "gnat0", IPv4: netip.MustParsePrefix("10.99.0.1/24"), DNS: &model.DNS{}}
	rs, err := nft.Render([]model.Network{lab, other}, model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	h := host
	h.Ruleset = rs
	s := MakeStatus(state.State{Networks: map[string]state.Net{"lab": {Network: lab}, "other": {Network: other}}}, h)
	for _, ns := range s.Networks {
		want := 0
		for _, c := range rs.Chains {
			for _, r := range c.Rules {
				if r.Network == ns.Name {
					want++
				}
			}
		}
		if want == 0 || ns.Rules != want {
			t.Errorf("network %s: %d rules, want %d", ns.Name, ns.Rules, want)
		}
	}
}

func TestRoutesIPv6(t *testing.T) {
	h := host
	h.Links = append([]model.Link(nil), host.Links...)
	h.Links[0].Addrs = append(h.Links[0].Addrs, netip.MustParsePrefix("fd10:10::1/64"))
	h.Links[1].Addrs = append(h.Links[1].Addrs, netip.MustParsePrefix("2001:db8:ff::1/64"))
	h.Routes = append(h.Routes, model.Route{Dst: netip.MustParsePrefix("::/0"), Dev: "eth1"},
		model.Route{Dst: netip.MustParsePrefix("fe80::/64"), Dev: "eth0"})
	only6 := model.Network{Name: "dmz", Mode: model.Routed, Bridge: "grt6", IPv6: netip.MustParsePrefix("2001:db8:71::1/64")}
	dual := lab
	dual.IPv6 = netip.MustParsePrefix("fd42:1::1/64")
	// An IPv6-only nat network is refused (TestRoutesOddPeers).
	nat := model.Network{Name: "n6", Mode: model.NAT, Bridge: "gn6", IPv6: netip.MustParsePrefix("fd42:6::1/64")}
	nat.IPv4 = netip.MustParsePrefix("10.99.6.1/24")
	cases := []struct {
		n             model.Network
		via, peer, os string
		want          string
	}{
		{only6, "", "", "linux", "ip -6 route add 2001:db8:71::/64 via 2001:db8:ff::1"},
		{only6, "", "fd10:10::7", "linux", "ip -6 route add 2001:db8:71::/64 via fd10:10::1"},
		{only6, "fd10:10::9", "", "windows", "route -p add 2001:db8:71::/64 fd10:10::9"},
		{dual, "", "", "linux", "ip route add 10.99.1.0/24 via 198.51.100.1\nip -6 route add fd42:1::/64 via 2001:db8:ff::1"},
		{dual, "", "10.10.0.7", "linux", "ip route add 10.99.1.0/24 via 10.10.0.1\nip -6 route add fd42:1::/64 via fd10:10::1"},
		{dual, "", "fd10:10::7", "linux", "ip route add 10.99.1.0/24 via 10.10.0.1\nip -6 route add fd42:1::/64 via fd10:10::1"},
		{dual, "", "198.51.100.5", "windows", "route -p add 10.99.1.0 mask 255.255.255.0 198.51.100.1\nroute -p add fd42:1::/64 2001:db8:ff::1"},
		{nat, "", "", "linux", "ip route add 10.99.6.0/24 via 198.51.100.1"},
	}
	for _, c := range cases {
		var via, peer netip.Addr
		if c.via != "" {
			via = netip.MustParseAddr(c.via)
		}
		if c.peer != "" {
			peer = netip.MustParseAddr(c.peer)
		}
		got, err := Routes(c.n, h, via, peer, c.os)
		if err != nil || strings.Join(got, "\n") != c.want {
			t.Errorf("%s %+v: got %q %v, want %q", c.n.Name, c, got, err, c.want)
		}
	}
	if _, err := Routes(only6, host, netip.Addr{}, netip.Addr{}, "linux"); err == nil || !strings.Contains(err.Error(), "no IPv6 default route") {
		t.Errorf("no IPv6 default route: %v", err)
	}
	if _, err := Routes(only6, host, netip.Addr{}, netip.MustParseAddr("10.10.0.7"), "linux"); err == nil || !strings.Contains(err.Error(), "eth0, which faces 10.10.0.7, has no static IPv6 address") {
		t.Errorf("a peer facing an interface without IPv6: %v", err)
	}
	if _, err := Routes(only6, h, netip.MustParseAddr("10.10.0.1"), netip.Addr{}, "linux"); err == nil {
		t.Error("an IPv4 --via for an IPv6-only network accepted")
	}
}

func TestStatusIPv6(t *testing.T) {
	h := host
	h.IP6Forward = true
	h.RAUplinks = []model.RAUplink{{Name: "eth1", AcceptRA: 2}, {Name: "eth0", AcceptRA: 1}}
	st := state.State{AcceptRAWas: map[string]string{"eth1": "1"}}
	text := MakeStatus(st, h).Text()
	for _, want := range []string{"ipv6 forwarding: on",
		"router advertisements on eth1: accept_ra 2 (raised by guestnet",
		"router advertisements on eth0: accept_ra 1 (IPv6 forwarding is on: the kernel ignores"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}
