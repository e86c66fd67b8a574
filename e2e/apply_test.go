package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// allModesHost is a host with a pretend-internet uplink (up0) and a LAN NIC
// (eth1) for a bridge-mode network.
func allModesHost(l *Lab) string {
	host, inet := natHost(l)
	_ = inet
	lan := l.NS("lan")
	l.Veth(host, "eth1", "172.16.5.10/24", lan, "eth0", "172.16.5.1/24")
	l.must("ip", "-n", host, "route", "add", "172.17.0.0/16", "via", "172.16.5.1")
	return host
}

const allModesSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
  iso:
    mode: isolated
    bridge: giso0
  lab:
    mode: routed
    bridge: grt0
    ipv4: 10.99.1.1/24
    mtu: 1400
  free:
    mode: open
    bridge: gopen0
    ipv4: 10.99.2.1/24
  lan:
    mode: bridge
    bridge: br0
    uplink: eth1
`

// snapshot is everything observable about a namespace that guestnet could
// change, minus what the kernel picks at random (ifindex, bridge MACs),
// plus the whole nft ruleset as nft prints it.
func (l *Lab) snapshot(ns string) string {
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
	b, _ := json.MarshalIndent(h, "", " ")
	st, _ := os.ReadFile(e.StatePath)
	return string(b) + "\n" + l.rulesetByTable(ns) + "\nstate:" + string(st)
}

// rulesetByTable lists every table, in name order rather than in the order
// the tables were made (an undo may make them again in another order).
func (l *Lab) rulesetByTable(ns string) string {
	tables := strings.Split(strings.TrimSpace(l.In(ns, "nft", "list", "tables")), "\n")
	slices.Sort(tables)
	var b strings.Builder
	for _, t := range tables {
		if f := strings.Fields(t); len(f) == 3 {
			b.WriteString(l.In(ns, "nft", "list", "table", f[1], f[2]))
		}
	}
	return b.String()
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, "- "+x, "+ "+y)
		}
		if len(out) > 20 {
			break
		}
	}
	return strings.Join(out, "\n")
}

func TestReapplyIsNoopAndDestroyLeavesNoTrace(t *testing.T) {
	l := newLab(t)
	host := allModesHost(l)
	before := l.snapshot(host)
	spec := l.Spec(allModesSpec)
	if w := l.ApplyJSON(host, spec); w == 0 {
		t.Fatal("first apply made no kernel writes")
	}
	out, _, code := l.Run(host, "plan", spec)
	if code != 0 {
		t.Fatalf("plan after apply: exit %d, want 0\n%s", code, out)
	}
	if w := l.ApplyJSON(host, spec); w != 0 {
		t.Errorf("second apply made %d kernel writes, want 0", w)
	}
	// The kernel's copy of guestnet's table is exactly what guestnet renders.
	s := l.tableIsRendered(host, spec)
	// So is its anti-spoofing table, with a port bound.
	l.must("ip", "-n", host, "tuntap", "add", "dev", "tap9", "mode", "tap")
	l.Guestnet(host, "attach", "default", "tap9", "--ip", "10.99.0.9", "--mac", "52:54:00:00:00:09")
	g := plan.WantGuard(s.Models(), map[string]state.Net{"default": {Ports: []string{"tap9"},
		Binds: map[string]model.PortBind{"tap9": {IPs: []netip.Addr{netip.MustParseAddr("10.99.0.9")}, MAC: "52:54:00:00:00:09"}}}})
	if got := l.In(host, "nft", "list", "table", "bridge", "guestnet"); got != g.String() {
		t.Errorf("nft list table bridge differs from the rendered guard:\n%s", diffLines(g.String(), got))
	}
	l.Guestnet(host, "detach", "default", "tap9")
	l.must("ip", "-n", host, "link", "del", "tap9")
	l.Guestnet(host, "destroy", spec)
	if after := l.snapshot(host); after != before+"{}\n" && after != before {
		t.Errorf("destroy left a trace:\n%s", diffLines(before, after))
	}
}

func specLoad(path string) (*spec.Spec, error) { return spec.Load(path) }

// tableIsRendered checks that the kernel's table inet guestnet in ns is
// exactly what guestnet renders for the spec file, and returns the spec.
func (l *Lab) tableIsRendered(ns, specPath string) *spec.Spec {
	l.t.Helper()
	s, err := specLoad(specPath)
	if err != nil {
		l.t.Fatal(err)
	}
	rs, err := nft.Render(s.Models(), model.Host{})
	if err != nil {
		l.t.Fatal(err)
	}
	if got := l.In(ns, "nft", "list", "table", "inet", "guestnet"); got != rs.String() {
		l.t.Errorf("nft list table differs from the rendered ruleset:\n%s", diffLines(rs.String(), got))
	}
	return s
}

// TestFailureAtEachStep injects a failure at every step of an apply (and
// of a destroy) and checks the namespace and the state are exactly as
// before each time.
func TestFailureAtEachStep(t *testing.T) {
	l := newLab(t)
	host := allModesHost(l)
	s, err := specLoad(l.Spec(allModesSpec))
	if err != nil {
		t.Fatal(err)
	}
	// mk plans (a dry run) and do runs the same verb with the kernel
	// failing at write n.
	run := func(mk func(*engine.Engine) (plan.Plan, error), do func(*engine.Engine) error) int {
		t.Helper()
		before := l.snapshot(host)
		steps := -1
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
			if !errors.As(err, &se) || se.Step != n || !errors.Is(err, engine.ErrInjected) {
				t.Fatalf("failure at step %d: got %v", n, err)
			}
			if after := l.snapshot(host); after != before {
				t.Fatalf("failure at step %d/%d (%s) changed the host:\n%s", n, steps, se.Action, diffLines(before, after))
			}
		}
		return steps
	}
	ctx := context.Background()
	n := run(func(e *engine.Engine) (plan.Plan, error) { return e.Plan(ctx, s) },
		func(e *engine.Engine) error { _, err := e.Converge(ctx, s); return err })
	t.Logf("apply: a failure at each of %d steps left the host as it was", n)
	l.Guestnet(host, "apply", l.Spec(allModesSpec))
	all := []string{"default", "iso", "lab", "free", "lan"}
	n = run(func(e *engine.Engine) (plan.Plan, error) {
		p, _, err := e.PlanDestroy(ctx, all)
		return p, err
	}, func(e *engine.Engine) error { _, _, err := e.Destroy(ctx, all); return err })
	t.Logf("destroy: a failure at each of %d steps left the host as it was", n)
}

// TestRecreatedHostIsIdentical applies, then builds the same host from
// scratch (as after a reboot) and applies again with the same state.
func TestRecreatedHostIsIdentical(t *testing.T) {
	l := newLab(t)
	spec := l.Spec(allModesSpec)
	host := allModesHost(l)
	l.Guestnet(host, "apply", spec)
	first := l.snapshot(host)

	l2 := &Lab{t: t, prefix: l.prefix, StateDir: l.StateDir}
	for _, ns := range []string{"host", "inet", "lan"} {
		l.must("ip", "netns", "del", l.prefix+ns)
	}
	host = allModesHost(l2)
	l.Guestnet(host, "apply", spec)
	// veth MACs are random: the bridge-mode bridge copies its uplink's.
	strip := func(s string) string {
		var out []string
		for _, line := range strings.Split(s, "\n") {
			if !strings.Contains(line, `"mac"`) {
				out = append(out, line)
			}
		}
		return strings.Join(out, "\n")
	}
	if second := l.snapshot(host); strip(second) != strip(first) {
		t.Errorf("re-created host differs:\n%s", diffLines(strip(first), strip(second)))
	}
}

// TestDriftIsSeen changes guestnet's rules and links behind its back; plan
// must see each change (exit 2) and apply must repair it.
func TestDriftIsSeen(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	spec := l.Spec(natSpec)
	l.Guestnet(host, "apply", spec)
	for _, drift := range [][]string{
		{"nft", "flush", "ruleset"},
		{"nft", "add", "rule", "inet", "guestnet", "forward", "iifname", "gnat0", "accept"},
		{"nft", "delete", "chain", "inet", "guestnet", "input"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"}, // someone else's rule: no drift of ours
		{"ip", "addr", "flush", "dev", "gnat0"},
		{"ip", "link", "set", "gnat0", "down"},
		{"ip", "link", "del", "gnat0"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=0"},
	} {
		l.In(host, drift...)
		out, _, code := l.Run(host, "plan", spec)
		want := 2
		if drift[0] == "iptables" {
			want = 0
		}
		if code != want {
			t.Errorf("after %v: plan exit %d, want %d\n%s", drift, code, want, out)
		}
		l.Guestnet(host, "apply", spec)
		if _, _, code := l.Run(host, "plan", spec); code != 0 {
			t.Errorf("after repairing %v: plan exit %d, want 0", drift, code)
		}
	}
}
