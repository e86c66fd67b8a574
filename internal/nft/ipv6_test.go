package nft

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestDeltaIPv6OneNetwork: among 40 networks (a third dual-stack), giving
// one network IPv6, changing its prefix, and taking IPv6 away again are
// each a delta of that network's chains and map elements (the base chains
// and the other networks' chains stay), which applied to the old ruleset
// gives the new one.
func TestDeltaIPv6OneNetwork(t *testing.T) {
	nets := manyNetworks(40)
	i := slices.IndexFunc(nets, func(n model.Network) bool { return n.Mode == model.NAT && !n.IPv6.IsValid() })
	if i < 0 {
		t.Fatal("no IPv4-only nat network to change")
	}
	steps := []netip.Prefix{netip.MustParsePrefix("fd42:ab::1/64"), netip.MustParsePrefix("fd42:ac::1/64"), {}}
	prev, err := Render(nets, model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range steps {
		nets[i].IPv6 = p
		cur, err := Render(nets, model.Host{})
		if err != nil {
			t.Fatal(err)
		}
		d, ok := model.Delta(prev, cur)
		if !ok {
			t.Fatalf("ipv6 %v on %s: no delta, a full replace", p, nets[i].Name)
		}
		got, err := d.Apply(prev)
		if err != nil || !got.Equal(cur) {
			t.Fatalf("ipv6 %v: old + delta is not the new ruleset (%v)", p, err)
		}
		for _, c := range append(append(slices.Clone(d.AddChains), d.SetChains...), d.DelChains...) {
			if c.Hook != "" || !slices.Contains([]string{model.ChainFrom(nets[i].Name), model.ChainInput(nets[i].Name),
				model.ChainDNS(nets[i].Name), model.ChainNAT(nets[i].Name)}, c.Name) {
				t.Errorf("ipv6 %v on %s: the delta touches chain %s", p, nets[i].Name, c.Name)
			}
		}
		for _, e := range append(slices.Clone(d.AddElements), d.DelElements...) {
			if e.Map != model.VmapDNSTo6 && e.Map != model.VmapNATFrom6 {
				t.Errorf("ipv6 %v: the delta changes %s in map %s", p, e.Element.KeyString(), e.Map)
			}
		}
		if d.Objects() > 20 {
			t.Errorf("ipv6 %v: %d kernel objects (%s), want a handful", p, d.Objects(), d)
		}
		t.Logf("ipv6 %v on %s: %s (%d objects)", p, nets[i].Name, d, d.Objects())
		prev = cur
	}
}

// TestFamiliesOfInput: the host-facing chain of a network serves the
// families it has addresses of, and rejects the other (after replies of
// the host's own connections); a network with no address drops all.
func TestFamiliesOfInput(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("fd42:9::1/64")
	for _, c := range []struct {
		ipv4, ipv6 netip.Prefix
		want       []string
	}{
		// Replies to the host's flows only from the network's own
		// addresses (TestIPv6SpoofedReplyToTheHost sends the spoofed ones).
		{v4, netip.Prefix{}, []string{"ct state established,related ip saddr 10.9.0.0/24 accept", "meta nfproto ipv6 reject with icmpx admin-prohibited",
			"meta l4proto icmp accept", "udp dport 67 accept", "udp dport 53 accept", "tcp dport 53 accept", "reject with icmpx admin-prohibited"}},
		{netip.Prefix{}, v6, []string{"ct state established,related ip6 saddr fd42:9::/64 accept", "ct state established,related ip6 saddr fe80::/10 accept",
			"meta nfproto ipv4 reject with icmpx admin-prohibited",
			"meta l4proto ipv6-icmp accept", "udp dport 547 accept", "udp dport 53 accept", "tcp dport 53 accept", "reject with icmpx admin-prohibited"}},
		{v4, v6, []string{"ct state established,related ip saddr 10.9.0.0/24 accept", "ct state established,related ip6 saddr fd42:9::/64 accept",
			"ct state established,related ip6 saddr fe80::/10 accept", "meta l4proto icmp accept", "meta l4proto ipv6-icmp accept",
			"udp dport 67 accept", "udp dport 547 accept", "udp dport 53 accept", "tcp dport 53 accept", "reject with icmpx admin-prohibited"}},
		{netip.Prefix{}, netip.Prefix{}, []string{"drop"}},
	} {
		n := model.Network{Name: "n", Mode: model.Isolated, Bridge: "gb0", IPv4: c.ipv4, IPv6: c.ipv6}
		rs, err := Render([]model.Network{n}, model.Host{})
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := rs.Chain(model.ChainInput("n"))
		var got []string
		for _, r := range ch.Rules {
			r.Network = ""
			got = append(got, r.String())
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("ipv4 %v ipv6 %v: input-n\n%q\nwant\n%q", c.ipv4, c.ipv6, got, c.want)
		}
	}
}

// TestDockerIP6: a foreign table ip6 filter FORWARD that drops by policy
// (Docker's ip6tables, moby/moby#48365) is a conflict for networks whose
// IPv6 it would drop, named with the ip6tables fix, unless table ip6
// filter has DOCKER-USER: then guestnet's accepts go there, and not into
// table ip filter's DOCKER-USER. A chain of table ip says nothing of IPv6.
func TestDockerIP6(t *testing.T) {
	nets := []model.Network{
		{Name: "dual", Mode: model.NAT, Bridge: "gdual0", IPv4: netip.MustParsePrefix("10.9.0.1/24"), IPv6: netip.MustParsePrefix("fd42:9::1/64")},
		{Name: "v4", Mode: model.NAT, Bridge: "gv4", IPv4: netip.MustParsePrefix("10.8.0.1/24")},
	}
	drop6 := model.Foreign{ForwardDrop: []model.ForeignChain{{Name: "table ip6 filter chain FORWARD"}}}
	_, err := Render(nets, model.Host{Foreign: drop6})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Network != "dual" || !strings.Contains(err.Error(), "ip6tables -I FORWARD -i gdual0 -j ACCEPT") ||
		!strings.Contains(err.Error(), "table ip6 filter chain FORWARD drops by policy") {
		t.Fatalf("ip6 FORWARD drop without DOCKER-USER: %v, want a conflict for network dual naming ip6tables", err)
	}
	// Bridged IPv6 frames of an IPv4-only network cross it too, under
	// bridge-nf-call-ip6tables=1.
	_, err = Render(nets[1:], model.Host{Foreign: drop6, BridgeNFCallIP6Tables: true})
	if !errors.As(err, &ce) || !ce.Bridged || !strings.Contains(err.Error(), "bridge-nf-call-ip6tables=1") {
		t.Fatalf("bridged IPv6 of an IPv4-only network: %v, want the br_netfilter conflict for ip6", err)
	}
	if _, err := Render(nets[1:], model.Host{Foreign: drop6}); err != nil {
		t.Fatalf("an IPv4-only network without br_netfilter forwards no IPv6: %v", err)
	}
	drop6.DockerUser6 = true
	rs, err := Render(nets, model.Host{Foreign: drop6, BridgeNFCallIP6Tables: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs.DockerUser6 {
		got = append(got, r.String())
		exprs, err := Encode(r, false)
		if err != nil {
			t.Fatal(err)
		}
		if back, ok := Decode(exprs, r.Network); !ok || back.String() != r.String() {
			t.Errorf("%s decodes to %s (ok %v)", r, back, ok)
		}
	}
	want := []string{`iifname "gdual0" accept comment "dual"`, `oifname "gdual0" accept comment "dual"`, `iifname "gv4" oifname "gv4" accept comment "v4"`}
	if !slices.Equal(got, want) || len(rs.DockerUser) != 0 {
		t.Errorf("ip6 DOCKER-USER %q, ip DOCKER-USER %v; want %q and none", got, rs.DockerUser, want)
	}
	if !strings.Contains(rs.String(), "insert rule ip6 filter DOCKER-USER iifname \"gdual0\" accept comment \"guestnet:dual\"") {
		t.Errorf("String lacks the ip6 DOCKER-USER rules:\n%s", rs.String())
	}
}
