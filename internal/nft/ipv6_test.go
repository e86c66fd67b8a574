package nft

import (
	"net/netip"
	"slices"
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
		{v4, netip.Prefix{}, []string{"ct state established,related accept", "meta nfproto ipv6 reject with icmpx admin-prohibited",
			"meta l4proto icmp accept", "udp dport 67 accept", "udp dport 53 accept", "tcp dport 53 accept", "reject with icmpx admin-prohibited"}},
		{netip.Prefix{}, v6, []string{"ct state established,related accept", "meta nfproto ipv4 reject with icmpx admin-prohibited",
			"meta l4proto ipv6-icmp accept", "udp dport 547 accept", "udp dport 53 accept", "tcp dport 53 accept", "reject with icmpx admin-prohibited"}},
		{v4, v6, []string{"ct state established,related accept", "meta l4proto icmp accept", "meta l4proto ipv6-icmp accept",
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
