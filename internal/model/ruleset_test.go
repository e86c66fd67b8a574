package model

import (
	"net/netip"
	"slices"
	"testing"
)

// TestEqualIgnoresChainAndElementOrder: the kernel lists regular chains in
// the order they were made and map elements in its own order, so a
// ruleset read back after incremental changes is Equal to the rendered
// one (and has its Sum); a changed element or rule is not.
func TestEqualIgnoresChainAndElementOrder(t *testing.T) {
	rule := func(net string) Rule { return Rule{Network: net, Verdict: Accept} }
	a := Ruleset{
		Chains: []Chain{{Name: "forward", Type: "filter", Hook: "forward", Rules: []Rule{{Verdict: DispatchForwardTo}}},
			{Name: "to-a", Rules: []Rule{rule("a")}}, {Name: "to-b", Rules: []Rule{rule("b")}}},
		Vmaps: []Vmap{{Name: VmapForwardTo, Key: MatchOIF, Elements: []VmapElement{{Name: "gb1", Chain: "to-a"}, {Name: "gb2", Chain: "to-b"}}},
			{Name: VmapNATFrom, Key: MatchSAddr, Elements: []VmapElement{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Chain: "to-a"}}}},
	}
	b := a
	b.Chains = []Chain{a.Chains[0], a.Chains[2], a.Chains[1]}
	b.Vmaps = []Vmap{a.Vmaps[1], {Name: VmapForwardTo, Key: MatchOIF, Elements: []VmapElement{a.Vmaps[0].Elements[1], a.Vmaps[0].Elements[0]}}}
	if !a.Equal(b) || a.Sum() != b.Sum() {
		t.Errorf("the same ruleset in another order is not Equal (or not the same Sum):\n%s\n%s", a, b)
	}
	c := a
	c.Vmaps = slices.Clone(a.Vmaps)
	c.Vmaps[0] = Vmap{Name: VmapForwardTo, Key: MatchOIF, Elements: []VmapElement{{Name: "gb1", Chain: "to-b"}, {Name: "gb2", Chain: "to-b"}}}
	if a.Equal(c) {
		t.Error("an element jumping elsewhere is Equal")
	}
	d := a
	d.Chains = slices.Clone(a.Chains)
	d.Chains[1] = Chain{Name: "to-a", Rules: []Rule{rule("x")}}
	if a.Equal(d) {
		t.Error("a changed rule of a regular chain is Equal")
	}
	// A base chain turned regular chain is another ruleset.
	e := a
	e.Chains = slices.Clone(a.Chains)
	e.Chains[0].Hook = ""
	if a.Equal(e) {
		t.Error("a base chain turned regular is Equal")
	}
}

// TestIfnameOrder: interface names sort as nft lists them (the
// little-endian integer of the zero-padded name), which
// TestKernelListsString in package nft checks against the kernel.
func TestIfnameOrder(t *testing.T) {
	es := []VmapElement{{Name: "gnat0"}, {Name: "ab"}, {Name: "br10"}, {Name: "b"}, {Name: "br2"}, {Name: "ba"}}
	SortVmapElements(MatchIIF, es)
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
	}
	if want := []string{"b", "ba", "ab", "br2", "br10", "gnat0"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// TestDispatchRuleText: a base chain's dispatch rule serves no network, so
// it has no comment; nft prints its protocol and port before the lookup.
func TestDispatchRuleText(t *testing.T) {
	r := Rule{Match: []Match{{Kind: MatchL4, Name: "udp"}, {Kind: MatchDPort, Port: 53}}, Verdict: DispatchDNSTo}
	if got, want := r.String(), "udp dport 53 ip daddr vmap @dns_to"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
