package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// handTable is a table of the dispatching shape for the named networks,
// built by hand (not by Render): each network's five chains and the
// elements of the five verdict maps that jump to them; nat_from holds
// adjacent /24s, the hard case of an interval map.
func handTable(nets ...int) model.Ruleset {
	rs := model.Ruleset{Chains: []model.Chain{
		{Name: "forward", Type: "filter", Hook: "forward", Rules: []model.Rule{{Network: "base", Match: []model.Match{{Kind: model.MatchCtReply}}, Verdict: model.Accept}}},
		{Name: "input", Type: "filter", Hook: "input"},
		{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100},
	}}
	for _, v := range model.Vmaps {
		rs.Vmaps = append(rs.Vmaps, model.Vmap{Name: v.Name, Key: v.Key})
	}
	for _, i := range nets {
		net, br := fmt.Sprintf("n%d", i), fmt.Sprintf("gn%d", i)
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 7, byte(i), 0}), 24)
		iif := model.Match{Kind: model.MatchIIF, Name: br}
		for j, name := range []string{model.ChainTo(net), model.ChainFrom(net), model.ChainInput(net), model.ChainDNS(net), model.ChainNAT(net)} {
			c := model.Chain{Name: name, Rules: []model.Rule{{Network: net, Match: []model.Match{iif}, Verdict: model.Accept}}}
			if j == 4 {
				c.Rules = []model.Rule{{Network: net, Match: []model.Match{{Kind: model.MatchOIF, Name: br, Neg: true}}, Verdict: model.Masquerade}}
			}
			rs.Chains = append(rs.Chains, c)
			el := model.VmapElement{Name: br, Chain: name}
			switch j {
			case 3:
				el = model.VmapElement{Prefix: netip.PrefixFrom(sub.Addr().Next(), 32), Chain: name}
			case 4:
				el = model.VmapElement{Prefix: sub, Chain: name}
			}
			rs.Vmaps[j].Elements = append(rs.Vmaps[j].Elements, el)
		}
	}
	rs.Canonical()
	return rs
}

// sameTable fails the test unless the read-back table is want, part by part.
func sameTable(t *testing.T, what string, got, want model.Ruleset) {
	t.Helper()
	got.Canonical()
	want.Canonical()
	for _, f := range []struct {
		name string
		a, b any
	}{{"chains", got.Chains, want.Chains}, {"verdict maps", got.Vmaps, want.Vmaps}, {"forwards", got.Forwards, want.Forwards},
		{"floating", got.Floating, want.Floating}, {"DOCKER-USER", got.DockerUser, want.DockerUser}} {
		if !reflect.DeepEqual(f.a, f.b) {
			t.Fatalf("%s: %s read back differ:\ngot  %+v\nwant %+v", what, f.name, f.a, f.b)
		}
	}
}

// TestDeltaKernel: the real kernel takes the dispatching table whole (maps,
// regular chains before the elements that jump to them) and changes by
// delta; observe reads back regular chains and verdict-map elements
// (interval ones too) exactly; a delta the kernel refuses half way changes
// nothing, since an nftables transaction is atomic.
func TestDeltaKernel(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	e, err := engine.Open(host, l.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	read := func() model.Ruleset {
		t.Helper()
		h, err := e.Observe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return h.Ruleset
	}
	rs0 := handTable(0, 1, 2, 3)
	if err := e.Kernel.Do(plan.Action{Op: plan.OpNft, Rules: &rs0, OldRules: &model.Ruleset{}}); err != nil {
		t.Fatalf("full replace: %v", err)
	}
	sameTable(t, "after the full replace", read(), rs0)
	if got, want := l.In(host, "nft", "list", "table", "inet", "guestnet"), rs0.String(); !strings.Contains(got, "\"gn3\" : jump to-n3") {
		t.Errorf("nft list of the full replace lacks an element:\n%s\nwant (Ruleset.String):\n%s", got, want)
	}

	// Network 1 goes, 4 comes, 2's from- chain changes.
	rs1 := handTable(0, 2, 3, 4)
	for i, c := range rs1.Chains {
		if c.Name == "from-n2" {
			rs1.Chains[i].Rules = append(rs1.Chains[i].Rules, model.Rule{Network: "n2", Verdict: model.Reject})
		}
	}
	d, ok := model.Delta(rs0, rs1)
	if !ok {
		t.Fatal("no delta")
	}
	if len(d.AddChains) != 5 || len(d.DelChains) != 5 || len(d.SetChains) != 1 || len(d.AddElements) != 5 || len(d.DelElements) != 5 {
		t.Fatalf("delta %v", d)
	}
	if err := e.Kernel.Do(plan.Action{Op: plan.OpNftDelta, Delta: &d}); err != nil {
		t.Fatalf("delta %v: %v", d, err)
	}
	sameTable(t, "after the delta", read(), rs1)
	listed := l.In(host, "nft", "list", "table", "inet", "guestnet")
	for _, s := range []string{`"gn4" : jump to-n4`, "10.7.4.0/24 : jump nat-n4", "10.7.4.1 : jump dns-n4", "chain from-n2 {"} {
		if !strings.Contains(listed, s) {
			t.Errorf("nft list lacks %q:\n%s", s, listed)
		}
	}
	if strings.Contains(listed, "n1") {
		t.Errorf("nft list still holds network n1:\n%s", listed)
	}

	// The inverse puts the table back.
	inv := d.Inverse()
	if err := e.Kernel.Do(plan.Action{Op: plan.OpNftDelta, Delta: &inv}); err != nil {
		t.Fatalf("inverse delta: %v", err)
	}
	sameTable(t, "after the inverse", read(), rs0)

	// An element someone else added where the delta adds another (same
	// key, other chain): the kernel refuses the transaction at that step,
	// late in it, and the elements deleted, chains deleted, added and
	// refilled before it in the same transaction are not changed.
	l.In(host, "nft", "add", "element", "inet", "guestnet", "forward_to", `{ "gn4" : jump to-n0 }`)
	before := l.In(host, "nft", "list", "table", "inet", "guestnet")
	gen0, _ := e.Kernel.NftGen()
	if err := e.Kernel.Do(plan.Action{Op: plan.OpNftDelta, Delta: &d}); err == nil {
		t.Fatal("a delta adding an existing chain was taken")
	} else {
		t.Logf("refused as expected: %v", err)
	}
	if after := l.In(host, "nft", "list", "table", "inet", "guestnet"); after != before {
		t.Fatalf("a refused delta changed the table:\n%s", diffLines(before, after))
	}
	if gen1, _ := e.Kernel.NftGen(); gen1 != gen0 {
		t.Errorf("nftables generation moved from %d to %d on a refused transaction", gen0, gen1)
	}
}

// TestDriftInOneNetworkIsRepairedByDelta: someone deletes one network's
// map element and empties another's chain. The generation moved, so the
// next plan reads the table back (one dump), sees both, and repairs them
// with a delta of just those two objects; the table is then Render's.
func TestDriftInOneNetworkIsRepairedByDelta(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(`networks:
  n0: {mode: nat, bridge: gn0, ipv4: 10.70.0.1/24}
  n1: {mode: nat, bridge: gn1, ipv4: 10.70.1.1/24}
  n2: {mode: routed, bridge: gn2, ipv4: 10.70.2.1/24}
`)
	l.Guestnet(host, "apply", spec)
	l.In(host, "nft", "delete", "element", "inet", "guestnet", "forward_to", `{ "gn1" }`)
	l.In(host, "nft", "flush", "chain", "inet", "guestnet", "from-n2")
	out, _, code := l.Run(host, "plan", spec)
	if code != 2 {
		t.Fatalf("plan after drift: exit %d, want 2 (changes)\n%s", code, out)
	}
	for _, want := range []string{"nft: 1 chain refilled, 1 map element added (table inet guestnet kept)",
		`+ map forward_to: "gn1" : jump to-n1`, "+ from-n2: ip saddr 10.70.2.0/24 accept"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan after drift lacks %q:\n%s", want, out)
		}
	}
	if w := l.ApplyJSON(host, spec); w != 1 {
		t.Errorf("repair made %d kernel writes, want 1 (one delta)", w)
	}
	l.tableIsRendered(host, spec)
	if out, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after repair: exit %d\n%s", code, out)
	}
}
