package plan_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

func scaleModels(b testing.TB, n int) []model.Network {
	var y strings.Builder
	y.WriteString("networks:\n")
	for i := range n {
		fmt.Fprintf(&y, "  n%d: {mode: nat, bridge: gn%d, ipv4: 10.%d.%d.1/24, dns: {domain: n%d.lab}}\n", i, i, 100+i/256, i%256, i)
	}
	nets, err := spec.Parse("scale.yaml", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	s := &spec.Spec{Networks: nets}
	if err := s.Validate(); err != nil {
		b.Fatal(err)
	}
	return s.Models()
}

// BenchmarkPlanOneMore plans one more network on a host with 1,000, from
// the digest (as after an apply); BenchmarkPlanNoop the same 1,000 again.
func BenchmarkPlanOneMore(b *testing.B) { benchPlan(b, 1001) }
func BenchmarkPlanNoop(b *testing.B)    { benchPlan(b, 1000) }

func benchPlan(b *testing.B, want int) {
	k := &fake.Kernel{Host: baseHost()}
	p, err := plan.Diff(scaleModels(b, 1000), state.State{}, k.Host)
	if err != nil {
		b.Fatal(err)
	}
	if err := apply.Run(k, p.Actions); err != nil {
		b.Fatal(err)
	}
	nets, st, h := scaleModels(b, want), p.State, k.Host
	h.Ruleset = model.Ruleset{Digest: k.Host.Ruleset.Sum()}
	for b.Loop() {
		p, err := plan.Diff(nets, st, h)
		if err != nil {
			b.Fatal(err)
		}
		if (want == 1000) != (len(p.Actions) == 0) {
			b.Fatalf("plan of %d networks on 1000: %v", want, p.Actions)
		}
	}
}
