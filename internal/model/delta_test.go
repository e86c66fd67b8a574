package model

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// dispatchBase is the constant base chains of the dispatching table.
func dispatchBase() []Chain {
	return []Chain{
		{Name: "forward", Type: "filter", Hook: "forward", Rules: []Rule{{Network: "dispatch", Verdict: DispatchForwardTo}, {Network: "dispatch", Verdict: DispatchForwardFrom}}},
		{Name: "input", Type: "filter", Hook: "input", Rules: []Rule{{Network: "dispatch", Verdict: DispatchDNSTo}, {Network: "dispatch", Verdict: DispatchInputFrom}}},
		{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Rules: []Rule{{Network: "dispatch", Verdict: DispatchNATFrom}}},
		{Name: "prerouting", Type: "nat", Hook: "prerouting", Priority: -100, Rules: []Rule{{Network: "floating", Verdict: DNATFloat}, {Network: "forwards", Verdict: DNATPort}}},
		{Name: "output", Type: "nat", Hook: "output", Priority: -100, Rules: []Rule{{Network: "floating", Verdict: DNATFloat}, {Network: "forwards", Verdict: DNATPort}}},
	}
}

// randomRuleset builds a dispatching table for a random subset of 12
// networks: each with a random subset of its five chains, random rules,
// and the map elements that reach them; random forwards, floating
// addresses and DOCKER-USER rules.
func randomRuleset(r *rand.Rand) Ruleset {
	rs := Ruleset{Chains: dispatchBase()}
	for _, v := range Vmaps {
		rs.Vmaps = append(rs.Vmaps, Vmap{Name: v.Name, Key: v.Key})
	}
	verdicts := []Verdict{Accept, Reject, Drop, Masquerade}
	for i := range 12 {
		if r.IntN(2) == 0 {
			continue
		}
		net := fmt.Sprintf("n%d", i)
		br := fmt.Sprintf("gn%d", i)
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)
		for j, name := range []string{ChainTo(net), ChainFrom(net), ChainInput(net), ChainDNS(net), ChainNAT(net)} {
			if r.IntN(3) == 0 {
				continue
			}
			c := Chain{Name: name}
			for range 1 + r.IntN(3) {
				c.Rules = append(c.Rules, Rule{Network: net, Match: []Match{{Kind: MatchIIF, Name: br, Neg: r.IntN(2) == 0}},
					Verdict: verdicts[r.IntN(len(verdicts))]})
			}
			rs.Chains = append(rs.Chains, c)
			el := VmapElement{Name: br, Chain: name}
			if j == 3 {
				el = VmapElement{Prefix: netip.PrefixFrom(sub.Addr().Next(), 32), Chain: name}
			}
			if j == 4 {
				el = VmapElement{Prefix: sub, Chain: name}
			}
			rs.Vmaps[j].Elements = append(rs.Vmaps[j].Elements, el)
		}
	}
	for i := range r.IntN(6) {
		rs.Forwards = append(rs.Forwards, Forward{Src: anyIPv4, Dst: anyIPv4, Proto: "tcp", Port: 8000 + i,
			To: netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + r.IntN(3))}), ToPort: 80})
	}
	for i := range r.IntN(4) {
		rs.Floating = append(rs.Floating, Floating{Public: netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}),
			Guest: netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(2)), byte(10 + i)})})
	}
	for i := range r.IntN(3) {
		rs.DockerUser = append(rs.DockerUser, Rule{Network: fmt.Sprintf("n%d", i), Match: []Match{{Kind: MatchIIF, Name: "gn0"}}, Verdict: Accept})
	}
	rs.Canonical()
	return rs
}

func sameRuleset(t *testing.T, what string, got, want Ruleset) {
	t.Helper()
	got.Canonical()
	want.Canonical()
	for _, f := range []struct {
		name string
		a, b any
	}{{"chains", got.Chains, want.Chains}, {"vmaps", got.Vmaps, want.Vmaps}, {"forwards", got.Forwards, want.Forwards},
		{"floating", got.Floating, want.Floating}, {"docker_user", got.DockerUser, want.DockerUser}} {
		if !reflect.DeepEqual(f.a, f.b) {
			t.Fatalf("%s: %s differ:\ngot  %+v\nwant %+v", what, f.name, f.a, f.b)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}

// TestDeltaProperty: over random pairs of dispatching tables, the delta
// applied to the old one gives the new one, and its inverse applied to
// the new one gives the old one back; the delta names only what differs.
func TestDeltaProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 1000))
	for i := range 2000 {
		old, cur := randomRuleset(r), randomRuleset(r)
		if i%5 == 0 {
			cur = old.Clone() // also small changes: one network's chain
			if n := len(cur.Chains); n > 5 {
				cur.Chains[5+r.IntN(n-5)].Rules[0].Verdict = Drop
			}
			cur.Canonical()
		}
		d, ok := Delta(old, cur)
		if !ok {
			t.Fatalf("case %d: no delta between two dispatching tables", i)
		}
		got, err := d.Apply(old)
		if err != nil {
			t.Fatalf("case %d: apply(old, Delta(old, new)): %v\ndelta %+v", i, err, d)
		}
		sameRuleset(t, fmt.Sprintf("case %d: apply(old, Delta(old, new))", i), got, cur)
		back, err := d.Inverse().Apply(cur)
		if err != nil {
			t.Fatalf("case %d: apply(new, Inverse): %v", i, err)
		}
		sameRuleset(t, fmt.Sprintf("case %d: apply(new, Inverse)", i), back, old)
		if self, _ := Delta(old, old); !self.Empty() {
			t.Fatalf("case %d: Delta(old, old) = %v, want nothing", i, self)
		}
	}
}

// TestDeltaProportional: adding one network to a table of 1,000 is its
// chains and elements, nothing of the other 999.
func TestDeltaProportional(t *testing.T) {
	build := func(n int) Ruleset {
		rs := Ruleset{Chains: dispatchBase()}
		for _, v := range Vmaps {
			rs.Vmaps = append(rs.Vmaps, Vmap{Name: v.Name, Key: v.Key})
		}
		for i := range n {
			net, br := fmt.Sprintf("net%d", i), fmt.Sprintf("gn%d", i)
			sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
			for j, name := range []string{ChainTo(net), ChainFrom(net), ChainInput(net), ChainDNS(net), ChainNAT(net)} {
				rs.Chains = append(rs.Chains, Chain{Name: name, Rules: []Rule{{Network: net, Match: []Match{{Kind: MatchIIF, Name: br}}, Verdict: Accept}}})
				el := VmapElement{Name: br, Chain: name}
				if j >= 3 {
					el = VmapElement{Prefix: sub, Chain: name}
				}
				rs.Vmaps[j].Elements = append(rs.Vmaps[j].Elements, el)
			}
		}
		rs.Canonical()
		return rs
	}
	old, cur := build(1000), build(1001)
	d, ok := Delta(old, cur)
	if !ok {
		t.Fatal("no delta")
	}
	if len(d.AddChains) != 5 || len(d.AddElements) != 5 || d.Objects() != 15 || len(d.DelChains)+len(d.SetChains)+len(d.DelElements) != 0 {
		t.Fatalf("delta for one more network: %v (%d objects), want 5 chains and 5 elements added", d, d.Objects())
	}
	if got, want := d.String(), "5 chains added, 5 map elements added"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := d.Inverse().String(); got != "5 chains deleted, 5 map elements deleted" {
		t.Errorf("Inverse().String() = %q", got)
	}
	one := RulesetDelta{SetChains: []Chain{{}}, DelFloating: []Floating{{}}, AddElements: []VmapChange{{}}}
	if got, want := one.String(), "1 chain refilled, 1 map element added, 1 floating address deleted"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestDeltaFullReplace: the cases only a full replace handles.
func TestDeltaFullReplace(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := randomRuleset(r)
	changedBase := base.Clone()
	changedBase.Chains[0].Rules = changedBase.Chains[0].Rules[:1]
	noMap := base.Clone()
	noMap.Vmaps = noMap.Vmaps[:4]
	otherKey := base.Clone()
	otherKey.Vmaps[0].Key = MatchIIF
	unread := base.Clone()
	unread.Floating = append(unread.Floating, Floating{Uplink: "(floating maps do not mirror each other)"})
	badElem := base.Clone()
	badElem.Vmaps[0].Elements = append(badElem.Vmaps[0].Elements, VmapElement{})
	for name, c := range map[string][2]Ruleset{
		"no table before":         {{}, base},
		"no table after":          {base, {}},
		"digest before":           {{Digest: base.Sum()}, base},
		"base chain changed":      {base, changedBase},
		"verdict map gone":        {base, noMap},
		"verdict map key changed": {base, otherKey},
		"unreadable floating":     {unread, base},
		"unreadable element":      {badElem, base},
	} {
		if _, ok := Delta(c[0], c[1]); ok {
			t.Errorf("%s: Delta gave a delta, want a full replace", name)
		}
	}
}

// TestDeltaApplyRefuses: a delta that does not fit is refused whole, as
// the kernel refuses the transaction.
func TestDeltaApplyRefuses(t *testing.T) {
	rs := Ruleset{Chains: append(dispatchBase(), Chain{Name: "to-a", Rules: []Rule{{Network: "a", Verdict: Accept}}})}
	for _, v := range Vmaps {
		rs.Vmaps = append(rs.Vmaps, Vmap{Name: v.Name, Key: v.Key})
	}
	rs.Vmaps[0].Elements = []VmapElement{{Name: "gna", Chain: "to-a"}}
	before := rs.Clone()
	for name, d := range map[string]RulesetDelta{
		"element for a missing chain": {AddElements: []VmapChange{{Map: VmapForwardTo, Element: VmapElement{Name: "gnb", Chain: "to-b"}}}},
		"chain still jumped to":       {DelChains: []Chain{{Name: "to-a"}}},
		"element there already":       {AddElements: []VmapChange{{Map: VmapForwardTo, Element: VmapElement{Name: "gna", Chain: "to-a"}}}},
		"element not there":           {DelElements: []VmapChange{{Map: VmapForwardTo, Element: VmapElement{Name: "gnb", Chain: "to-a"}}}},
		"chain there already":         {AddChains: []Chain{{Name: "to-a"}}},
		"refill of a missing chain":   {SetChains: []Chain{{Name: "to-b"}}},
		"delete of a base chain":      {DelChains: []Chain{{Name: "forward"}}},
		"forward not there":           {DelForwards: []Forward{{Proto: "tcp", Port: 1}}},
		"no such map":                 {AddElements: []VmapChange{{Map: "nope", Element: VmapElement{Name: "x", Chain: "to-a"}}}},
	} {
		_, err := d.Apply(rs)
		if !errors.Is(err, ErrDelta) {
			t.Errorf("%s: Apply = %v, want ErrDelta", name, err)
		} else if !strings.Contains(err.Error(), "delta does not apply") {
			t.Errorf("%s: error %q", name, err)
		}
		if !reflect.DeepEqual(rs, before) {
			t.Fatalf("%s: Apply changed its input", name)
		}
	}
}
