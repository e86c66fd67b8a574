package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// vxlanStates are stretched networks one host moves between: made, then
// one device's port and local changed (deleted and made again) and the
// other's VNI (a new device, the old one deleted).
var vxlanStates = map[string]string{
	"stretch": vxlanHead + "networks:\n" +
		"  wide: {mode: nat, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000, local: 10.10.0.1}}\n" +
		"  wide2: {mode: isolated, bridge: gst1, mtu: 1400, vxlan: {vni: 6001, port: 4790}}\n",
	"moved": vxlanHead + "networks:\n" +
		"  wide: {mode: nat, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000, port: 4790}}\n" +
		"  wide2: {mode: isolated, bridge: gst1, mtu: 1300, vxlan: {vni: 6002, port: 4790}}\n",
}

const vxlanHead = "bgp: {asn: 65000, peers: [{address: 10.10.0.2, asn: 65000}]}\n"

// TestVXLANFailureAtEachStep fails each kernel write of applying
// stretched networks, of moving them, and of destroying them, in a real
// namespace: every time the host is exactly as before (links with their
// VXLAN settings and port flags, the rules, the state).
func TestVXLANFailureAtEachStep(t *testing.T) {
	l := newLab(t)
	host, peer := l.NS("host"), l.NS("peer")
	l.Veth(host, "lan0", "10.10.0.1/24", peer, "lan0", "10.10.0.2/24")
	waitUntil(t, "lan0 has carrier (before the first snapshot)", 5*time.Second, func() bool {
		out, _, _ := runIn(host, "ip", "link", "show", "lan0")
		return strings.Contains(out, "state UP")
	})
	ctx := context.Background()
	run := func(what string, mk func(*engine.Engine) (plan.Plan, error), do func(*engine.Engine) error) {
		t.Helper()
		before := vxSnapshot(l, host)
		steps, vx := -1, 0
		for n := 1; steps < 0 || n <= steps; n++ {
			e, err := engine.Open(host, l.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			p, err := mk(e)
			if err != nil {
				t.Fatal(err)
			}
			steps = len(p.Actions)
			e.Kernel = &engine.FailAt{Kernel: e.Kernel, N: n}
			err = do(e)
			e.Close()
			var se *apply.StepError
			if !errors.As(err, &se) || se.Step != n || !errors.Is(err, engine.ErrInjected) || se.Rollback != nil {
				t.Fatalf("%s: failure at step %d: got %v", what, n, err)
			}
			if after := vxSnapshot(l, host); after != before {
				t.Fatalf("%s: failure at step %d/%d (%s) changed the host:\n%s", what, n, steps, se.Action, diffLines(before, after))
			}
			if se.Action.VXLAN != nil || se.Action.Op == plan.OpBridgePort || se.Action.Link == "gvx6000" || se.Action.Link == "gvx6001" || se.Action.Link == "gvx6002" {
				vx++
			}
		}
		if vx == 0 {
			t.Fatalf("%s: no step touched a VXLAN device", what)
		}
		t.Logf("%s: a failure at each of %d steps (%d of them on VXLAN devices) left the host as it was", what, steps, vx)
	}
	converge := func(name string) (func(*engine.Engine) (plan.Plan, error), func(*engine.Engine) error) {
		s, err := specLoad(l.Spec(vxlanStates[name]))
		if err != nil {
			t.Fatal(err)
		}
		return func(e *engine.Engine) (plan.Plan, error) { return e.Plan(ctx, s) },
			func(e *engine.Engine) error { _, err := e.Converge(ctx, s); return err }
	}
	mk, do := converge("stretch")
	run("apply", mk, do)
	l.Guestnet(host, "apply", l.Spec(vxlanStates["stretch"]))
	mk, do = converge("moved")
	run("move", mk, do)
	all := []string{"wide", "wide2"}
	run("destroy", func(e *engine.Engine) (plan.Plan, error) {
		p, _, err := e.PlanDestroy(ctx, all)
		return p, err
	}, func(e *engine.Engine) error { _, _, err := e.Destroy(ctx, all); return err })
}

// vxSnapshot is Lab.snapshot with the routes in one order: an undone
// delete makes a bridge again, and the kernel lists its IPv6 link-local
// route (made once the bridge has a port up: the VXLAN device) after
// those of older links. The order of a dump is not the host's state.
func vxSnapshot(l *Lab, ns string) string {
	l.t.Helper()
	e, err := engine.Open(ns, l.StateDir)
	if err != nil {
		l.t.Fatal(err)
	}
	defer e.Close()
	h, err := e.Observe(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	for i := range h.Links {
		h.Links[i].Index = 0
		if h.Links[i].Kind == "bridge" {
			h.Links[i].MAC = ""
		}
	}
	// What the guard's VXLAN rules recorded meanwhile (the bridge's own
	// frames, kept off its VXLAN port) is traffic, not the host's state.
	h.Guard.VXLANDrops, h.Guard.VXLANDropped = nil, 0
	slices.SortFunc(h.Routes, func(a, b model.Route) int {
		return cmp.Or(strings.Compare(a.Dst.String(), b.Dst.String()), strings.Compare(a.Dev, b.Dev))
	})
	b, _ := json.MarshalIndent(h, "", " ")
	st, _ := os.ReadFile(e.StatePath)
	return string(b) + "\n" + staticPart(l.rulesetByTable(ns)) + "\nstate:" + string(st)
}
