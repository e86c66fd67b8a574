package engine

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
)

// observeCounter counts the reads of the host and those that read the
// rules back whole (no hint, or one the generation no longer vouches for).
type observeCounter struct {
	Kernel
	reads, whole int
}

func (o *observeCounter) Observe(hint *observe.Hint) (model.Host, error) {
	h, err := o.Kernel.Observe(hint)
	o.reads++
	if h.Ruleset.Digest == "" {
		o.whole++
	}
	return h, err
}

// TestDeltaThroughEngine: after an apply, the next change of networks is
// planned from the digest alone (one read of the host, no rule read-back)
// as a delta; a failure after the delta is undone by its inverse, and a
// crash right after it leaves a state the next apply and destroy finish.
func TestDeltaThroughEngine(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	converge(t, r.e, r.k, "all")
	st, _ := r.e.State()
	if st.Nft == nil {
		t.Fatal("no ruleset mark after an apply")
	}
	oc := &observeCounter{Kernel: r.k}
	r.e.Kernel = oc
	p, err := r.e.Plan(ctx, replaySpec(t, "nat-moved"))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(p.Actions, func(a plan.Action) bool { return a.IsNft() })
	if i < 0 || p.Actions[i].Op != plan.OpNftDelta {
		t.Fatalf("plan all > nat-moved: %v, want an nft delta", p.Actions)
	}
	if oc.reads != 1 || oc.whole != 0 {
		t.Errorf("planning read the host %d times, %d of them with the rules read back; want once, by digest", oc.reads, oc.whole)
	}
	t.Logf("step %d/%d: %s", i+1, len(p.Actions), p.Actions[i])
	if i == len(p.Actions)-1 {
		t.Fatal("the delta is the last step: no later failure to undo it")
	}

	// A failure at the step after the delta: the delta is undone by its
	// inverse, host and state are as before.
	before, stBefore := hostText(r.k.Host), mustRead(t, r.e.StatePath)
	r.e.Kernel = &FailAt{Kernel: r.k, N: i + 2}
	_, err = r.e.Converge(ctx, replaySpec(t, "nat-moved"))
	var se *apply.StepError
	if !errors.As(err, &se) || se.Step != i+2 || se.Rollback != nil {
		t.Fatalf("want step %d to fail and be undone: %v", i+2, err)
	}
	if after := hostText(r.k.Host); after != before {
		t.Fatalf("the undo of a delta left\n%s\nwant\n%s", after, before)
	}
	if got := mustRead(t, r.e.StatePath); got != stBefore {
		t.Fatalf("a failed apply changed the state:\n%s\nwant\n%s", got, stBefore)
	}

	// A crash right after the delta: apply again reaches the spec, and
	// destroy leaves no trace.
	r.e.Kernel = killAfter(r.k, i+1)
	crashed(t, "crash after the delta", func() error { _, err := r.e.Converge(ctx, replaySpec(t, "nat-moved")); return err })
	r.e.Kernel = r.k
	converge(t, r.e, r.k, "nat-moved")
	if _, _, err := r.e.Destroy(ctx, []string{"default", "iso", "lab", "free", "lan"}); err != nil {
		t.Fatal(err)
	}
	r.clean("crash after the delta, apply, destroy")
}

// TestFakeRefusesBadDelta: the fake kernel refuses a delta the kernel
// would (an element that jumps to a missing chain, a chain still jumped
// to), and changes nothing.
func TestFakeRefusesBadDelta(t *testing.T) {
	r := newRig(t)
	converge(t, r.e, r.k, "nat")
	before := hostText(r.k.Host)
	for name, d := range map[string]model.RulesetDelta{
		"element for a missing chain": {AddElements: []model.VmapChange{{Map: model.VmapForwardTo, Element: model.VmapElement{Name: "gx", Chain: "to-nope"}}}},
		"chain still jumped to":       {DelChains: []model.Chain{{Name: model.ChainTo("default")}}},
	} {
		err := r.k.Do(plan.Action{Op: plan.OpNftDelta, Delta: &d})
		if !errors.Is(err, model.ErrDelta) {
			t.Errorf("%s: %v, want a refused delta", name, err)
		}
		if after := hostText(r.k.Host); after != before {
			t.Fatalf("%s: a refused delta changed the host", name)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
