package plan_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

func nftActions(p plan.Plan) []plan.Action {
	var out []plan.Action
	for _, a := range p.Actions {
		if a.IsNft() {
			out = append(out, a)
		}
	}
	return out
}

// TestDiffDigest: when observe only vouches for the ruleset by digest, the
// plan renders the applied networks again; if that is the digest, the
// change is a delta from it, and its action holds the change and the two
// digests, not the old ruleset. A digest the applied networks do not give
// (the rules were written from something else) is a full replace whose old
// rules are unknown (the engine then reads them back).
func TestDiffDigest(t *testing.T) {
	k := &fake.Kernel{Host: baseHost()}
	st := step(t, k, "all")
	full := k.Host.Ruleset
	want := load(t, "nat-moved").Models()

	h := k.Host
	h.Ruleset = model.Ruleset{Digest: full.Sum()}
	p, err := plan.Diff(want, st, h)
	if err != nil {
		t.Fatal(err)
	}
	acts := nftActions(p)
	if len(acts) != 1 || acts[0].Op != plan.OpNftDelta {
		t.Fatalf("plan from a digest: %v, want one nft delta", acts)
	}
	a := acts[0]
	if a.OldSum != full.Sum() || a.Rules != nil || a.OldRules != nil {
		t.Errorf("delta action: old sum %s (want %s), rules %v, old rules %v", a.OldSum, full.Sum(), a.Rules, a.OldRules)
	}
	// The same plan from the rules read back whole.
	p2, err := plan.Diff(want, st, k.Host)
	if err != nil {
		t.Fatal(err)
	}
	if b := nftActions(p2); len(b) != 1 || b[0].Op != plan.OpNftDelta || b[0].Delta.String() != a.Delta.String() || b[0].Sum != a.Sum {
		t.Errorf("plan from the read-back rules %v differs from the one from the digest %v", b, a)
	}
	// The undo is the inverse, and the journal entry is the change alone.
	inv := a.Inverse()
	if inv.Sum != a.OldSum || inv.OldSum != a.Sum || len(inv.Delta.AddChains) != len(a.Delta.DelChains) {
		t.Errorf("inverse %v of %v", inv, a)
	}
	js, _ := json.Marshal(a)
	whole, _ := json.Marshal(full)
	if len(js) >= len(whole) || strings.Contains(string(js), `"old_rules"`) {
		t.Errorf("the delta action is %d bytes of JSON, the old ruleset %d: %s", len(js), len(whole), js)
	}

	h.Ruleset = model.Ruleset{Digest: "not-the-applied-networks"}
	p3, err := plan.Diff(want, st, h)
	if err != nil {
		t.Fatal(err)
	}
	if b := nftActions(p3); len(b) != 1 || b[0].Op != plan.OpNft || b[0].OldRules.Digest == "" {
		t.Errorf("plan from a foreign digest: %v, want a full replace with the old rules unknown", b)
	}

	// A host fact Render reads that changed since (Docker's chain now
	// there, a foreign chain dropping by policy) changes the rendering of
	// the applied networks, so its digest is not the kernel's: full replace.
	h.Ruleset = model.Ruleset{Digest: full.Sum()}
	h.Foreign = model.Foreign{DockerUser: true, ForwardDrop: []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}}
	p4, err := plan.Diff(want, st, h)
	if err != nil {
		t.Fatal(err)
	}
	if b := nftActions(p4); len(b) != 1 || b[0].Op != plan.OpNft || b[0].OldRules.Digest == "" {
		t.Errorf("plan from a digest with Docker's chain appeared since: %v, want a full replace", b)
	}
}
