package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
)

// The fake kernel is an engine Kernel: reads and writes.
var _ Kernel = (*fake.Kernel)(nil)

// replayStates are the named configurations replayed in every order
// through the engine's own verbs (tailscale's TestRouterStates).
var replayStates = map[string]string{
	"empty": "",
	"nat":   "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24}\n",
	"nat-moved": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.5.1/24}\n" +
		"  iso: {mode: isolated, bridge: giso0}\n",
	"all": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24, floating: [{public: 198.51.100.10, guest: 10.99.0.10}]}\n" +
		"  iso: {mode: isolated, bridge: giso0}\n" +
		"  lab: {mode: routed, bridge: grt0, ipv4: 10.99.1.1/24, mtu: 1400}\n" +
		"  free: {mode: open, bridge: gopen0, ipv4: 10.99.2.1/24}\n" +
		"  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	"lan-only": "  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	"iso-ip":   "  iso: {mode: isolated, bridge: giso0, ipv4: 10.98.0.1/24}\n",
	"stretch":  stretchStates["stretch"],
	"stretch-moved": stretchStates["stretch-moved"] +
		"  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24}\n",
}

var replayFiles = &specFiles{head: stretchHead, texts: replayStates}

// replaySpec loads replayStates[name].
func replaySpec(t *testing.T, name string) *spec.Spec { return replayFiles.load(t, name) }

// converge runs Converge and checks that the plan after it is empty and
// that the host carries exactly the spec's networks.
func converge(t *testing.T, e *Engine, k *fake.Kernel, name string) {
	t.Helper()
	ctx := context.Background()
	s := replaySpec(t, name)
	if _, err := e.Converge(ctx, s); err != nil {
		t.Fatalf("converge %s: %v", name, err)
	}
	if again, err := e.Plan(ctx, s); err != nil || len(again.Actions) != 0 {
		t.Fatalf("%s: not stable after converge: %v %v", name, again.Actions, err)
	}
	checkInvariants(t, name, s, k.Host)
}

func checkInvariants(t *testing.T, name string, s *spec.Spec, h model.Host) {
	t.Helper()
	want := map[string]bool{}
	fwd := false
	for _, n := range s.Networks {
		want[n.Bridge] = true
		if n.Stretched() {
			want[model.VXLANName(n.VXLAN.VNI)] = true
			checkVXLAN(t, name, n.Network, h)
		}
		fwd = fwd || n.NeedsForwarding()
		l, ok := h.Link(n.Bridge)
		if !ok || !l.Up || l.Owner() != n.Name {
			t.Fatalf("%s: bridge %s: %+v", name, n.Bridge, l)
		}
		if n.IPv4.IsValid() && !reflect.DeepEqual(l.Addrs, []netip.Prefix{n.IPv4}) {
			t.Fatalf("%s: %s addrs %v", name, n.Bridge, l.Addrs)
		}
		if n.Mode == model.Bridge {
			up, _ := h.Link(n.Uplink)
			if up.Master != n.Bridge || len(up.Addrs) != 0 || len(l.Addrs) == 0 {
				t.Fatalf("%s: uplink not moved: %+v / %+v", name, up, l)
			}
		}
	}
	for _, l := range h.Links {
		if l.Owner() != "" && !want[l.Name] {
			t.Fatalf("%s: leftover link %s", name, l.Name)
		}
	}
	if h.IPForward != fwd {
		t.Fatalf("%s: ip_forward %v, want %v", name, h.IPForward, fwd)
	}
}

// TestReplayStates replays the named states in many random orders
// through Engine.Converge on the fake kernel, with vm0 attached to (and
// detached from) the NAT network whenever it is there, and ends each
// round with Destroy: every transition must reach its state, and the end
// must leave no trace.
func TestReplayStates(t *testing.T) {
	var names []string
	for n := range replayStates {
		names = append(names, n)
	}
	slices.Sort(names)
	rng := rand.New(rand.NewPCG(1, 2))
	transitions := map[string]bool{}
	ctx := context.Background()
	for round := 0; round < 100; round++ {
		r := newRig(t)
		order := slices.Clone(names)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		prev := "empty"
		for _, n := range order {
			converge(t, r.e, r.k, n)
			transitions[prev+">"+n] = true
			prev = n
			if _, err := r.e.Network("default"); err == nil && rng.IntN(2) == 0 {
				if _, err := r.e.Attach(ctx, "default", "vm0", attachOpts()); err != nil {
					t.Fatalf("round %d, %s: attach: %v", round, n, err)
				}
				if vm, _ := r.k.Host.Link("vm0"); vm.Master != "gnat0" {
					t.Fatalf("round %d, %s: vm0 not attached: %+v", round, n, vm)
				}
				if rng.IntN(2) == 0 {
					if _, err := r.e.Detach(ctx, "default", "vm0"); err != nil {
						t.Fatalf("round %d, %s: detach: %v", round, n, err)
					}
				}
			}
		}
		if _, _, err := r.e.Destroy(ctx, []string{"default", "iso", "lab", "free", "lan", "wide", "wide2", "wide3"}); err != nil {
			t.Fatalf("round %d: destroy: %v", round, err)
		}
		r.clean(fmt.Sprintf("round %d (%v), then destroy", round, order))
	}
	t.Logf("%d distinct transitions exercised, each round ended by Destroy", len(transitions))
}

// TestFailureAtEveryStep fails each kernel write of Converge and of
// Destroy on the fake kernel: the host and the state must be exactly as
// before each time, and the error must name the step.
func TestFailureAtEveryStep(t *testing.T) {
	ctx := context.Background()
	for _, tr := range [][2]string{{"empty", "all"}, {"all", "empty"}, {"all", "nat-moved"}, {"nat", "destroy"},
		{"empty", "stretch"}, {"stretch", "stretch-moved"}, {"stretch-moved", "stretch"}, {"stretch", "empty"}} {
		r := newRig(t)
		if tr[0] != "empty" {
			converge(t, r.e, r.k, tr[0])
		}
		run := func() error {
			if tr[1] == "destroy" {
				_, _, err := r.e.Destroy(ctx, []string{"default"})
				return err
			}
			_, err := r.e.Converge(ctx, replaySpec(t, tr[1]))
			return err
		}
		before := hostText(r.k.Host)
		stBefore, _ := os.ReadFile(r.e.StatePath)
		steps := -1
		for n := 1; steps < 0 || n <= steps; n++ {
			r.e.Kernel = &FailAt{Kernel: r.k, N: n}
			err := run()
			var se *apply.StepError
			if !errors.As(err, &se) || se.Step != n || !errors.Is(err, ErrInjected) || se.Rollback != nil {
				t.Fatalf("%v: failure at step %d: got %v", tr, n, err)
			}
			steps = se.Steps
			if after := hostText(r.k.Host); after != before {
				t.Fatalf("%v: failure at step %d (%s) left\n%s\nwant\n%s", tr, n, se.Action, after, before)
			}
			if st, _ := os.ReadFile(r.e.StatePath); string(st) != string(stBefore) {
				t.Fatalf("%v: failure at step %d changed the state:\n%s\nwant\n%s", tr, n, st, stBefore)
			}
		}
		r.e.Kernel = r.k
		t.Logf("%s>%s: a failure at each of %d steps left host and state as they were", tr[0], tr[1], steps)
	}
}

// attachOpts binds vm0 to a guest MAC, so that attach and detach also
// write the anti-spoofing table.
func attachOpts() plan.AttachOptions {
	return plan.AttachOptions{Owner: -1, Group: -1, Bind: &model.PortBind{MAC: "52:54:00:00:00:09"}}
}

// hostText prints a host without its ifindexes: a bridge deleted and made
// again by a rollback gets a new one, from the fake as from the kernel.
func hostText(h model.Host) string {
	h.Links = slices.Clone(h.Links)
	var vx []string // VXLAN devices' settings, not their pointers
	for i := range h.Links {
		h.Links[i].Index = 0
		if x := h.Links[i].VXLAN; x != nil {
			vx = append(vx, fmt.Sprintf("%s: %+v", h.Links[i].Name, *x))
			h.Links[i].VXLAN = nil
		}
	}
	return fmt.Sprintf("%+v\nVXLAN devices: %v", h, vx)
}
