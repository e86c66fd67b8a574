package engine

import (
	"context"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
)

// raceKernel makes one foreign nftables change (someone's `nft insert
// rule inet guestnet CHAIN accept`) the first time the engine reads the
// generation after it observed the host: between guestnet's read-back
// and its delta, the window a script running beside `guestnet serve`
// can hit.
type raceKernel struct {
	Kernel
	observed, done bool
	foreign        func()
}

func (r *raceKernel) Observe(hint *observe.Hint) (model.Host, error) {
	r.observed = true
	return r.Kernel.Observe(hint)
}

func (r *raceKernel) NftGen() (uint32, error) {
	if r.observed && !r.done {
		r.done = true
		r.foreign()
	}
	return r.Kernel.NftGen()
}

// TestForeignChangeBeforeDeltaIsNotVouched: a foreign change to one
// network's chain made after the plan read the table but before its delta
// was written survives the delta (a delta only touches what changed;
// the full replace of the flat layout rebuilt the table and wiped it). The
// ruleset mark must then not vouch for the table: the next plan has to
// read it back and see the foreign rule. The mark's generation is counted
// from the generation read just before the delta, which already includes
// the foreign commit, so the mark trusts a table that is not guestnet's.
// The foreign rule goes into from-iso, a chain the delta leaves alone
// (to-iso changes with it: it names the open network's bridge, removed).
func TestForeignChangeBeforeDeltaIsNotVouched(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	converge(t, r.e, r.k, "all")
	rk := &raceKernel{Kernel: r.k}
	rk.foreign = func() {
		rs := r.k.Host.Ruleset
		for _, c := range rs.Chains {
			if c.Name == model.ChainFrom("iso") {
				old := cloneChainForTest(c)
				c = cloneChainForTest(c)
				c.Rules = append([]model.Rule{{Verdict: model.Accept}}, c.Rules...)
				d := model.RulesetDelta{SetChains: []model.Chain{c}, OldSetChains: []model.Chain{old}}
				if err := r.k.Do(plan.Action{Op: plan.OpNftDelta, Delta: &d}); err != nil {
					t.Fatalf("foreign change: %v", err)
				}
				return
			}
		}
		t.Fatalf("no chain %s to change", model.ChainFrom("iso"))
	}
	r.e.Kernel = rk
	p, err := r.e.Converge(ctx, replaySpec(t, "nat-moved"))
	if err != nil {
		t.Fatal(err)
	}
	if !rk.done {
		t.Fatal("the foreign change was never made")
	}
	delta := false
	for _, a := range p.Actions {
		delta = delta || a.Op == plan.OpNftDelta
	}
	if !delta {
		t.Fatalf("converge wrote no delta (%v): the race this test is about did not happen", p.Actions)
	}
	r.e.Kernel = r.k
	again, err := r.e.Plan(ctx, replaySpec(t, "nat-moved"))
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Actions) == 0 {
		t.Fatalf("the foreign accept rule in %s survives and the next plan is empty: the ruleset mark vouched for a table someone else changed\nchain now: %+v",
			model.ChainFrom("iso"), chainNamed(r.k.Host.Ruleset, model.ChainFrom("iso")))
	}
}

func cloneChainForTest(c model.Chain) model.Chain {
	c.Rules = append([]model.Rule(nil), c.Rules...)
	return c
}

func chainNamed(rs model.Ruleset, name string) model.Chain {
	for _, c := range rs.Chains {
		if c.Name == name {
			return c
		}
	}
	return model.Chain{}
}
