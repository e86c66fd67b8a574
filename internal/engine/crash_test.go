package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
)

// These tests run the engine's write-ahead protocol (commit, changePort)
// against the in-memory kernel and stop it, as a kill -9 would, after
// every kernel write of a plan, then check that the state left on disk
// leads the next apply and destroy back to a clean host. No root needed.

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// baseHost has an internet uplink (eth0, default route), a LAN NIC (eth1)
// for bridge mode, a guest's TAP (vm0), and ip_forward off.
func baseHost() model.Host {
	return fake.BaseHost(model.Link{Name: "vm0", Index: 4, Kind: "tuntap", MTU: 1500})
}

// specs are the configurations the crash tests move between. "all" has
// every kind of write that must be undone: bridges, addresses, the uplink
// move of bridge mode, a floating address on eth0, ip_forward, both
// nftables tables.
var specs = map[string]string{
	"empty": "",
	"all": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24, floating: [{public: 198.51.100.10, guest: 10.99.0.10}]}\n" +
		"  iso: {mode: isolated, bridge: giso0}\n" +
		"  lab: {mode: routed, bridge: grt0, ipv4: 10.99.1.1/24, mtu: 1400}\n" +
		"  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	"moved": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.5.1/24}\n" +
		"  iso: {mode: isolated, bridge: giso0, ipv4: 10.98.0.1/24}\n",
	"lan": "  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	// stretch has the VXLAN devices (made, put in their bridge, port
	// flags set); stretch-moved changes each one's port, local or VNI.
	"stretch":       stretchStates["stretch"],
	"stretch-moved": stretchStates["stretch-moved"],
}

// stretchHead is the bgp section every stretched network needs (serve
// need not run for apply to make the VXLAN devices). No router_id: a
// vxlan without local leaves the source address to the kernel.
const stretchHead = "bgp: {asn: 65000, peers: [{address: 10.10.0.2, asn: 65000}]}\n"

// stretchStates are networks stretched over VXLAN: a nat one with its
// VTEP address set and an isolated one on another port with the kernel's
// choice of source; then the first moved to another local and port, the
// second to another VNI and MTU, and a third made plain.
var stretchStates = map[string]string{
	"stretch": "  wide: {mode: nat, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000, local: 10.10.0.1}}\n" +
		"  wide2: {mode: isolated, bridge: gst1, mtu: 1400, vxlan: {vni: 6001, port: 4790}}\n" +
		"  wide3: {mode: routed, bridge: gst2, ipv4: 10.61.0.1/24, vxlan: {vni: 6003}}\n",
	"stretch-moved": "  wide: {mode: nat, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000, local: 10.10.0.2, port: 4790}}\n" +
		"  wide2: {mode: isolated, bridge: gst1, mtu: 1300, vxlan: {vni: 6002, port: 4790}}\n" +
		"  wide3: {mode: routed, bridge: gst2, ipv4: 10.61.0.1/24}\n",
}

// specFiles loads named spec texts through files, as the CLI does, each
// once.
type specFiles struct {
	head   string            // what comes before networks: (a bgp section)
	texts  map[string]string // name -> the networks: lines
	loaded map[string]*spec.Spec
}

func (f *specFiles) load(t *testing.T, name string) *spec.Spec {
	t.Helper()
	if s, ok := f.loaded[name]; ok {
		return s
	}
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte(f.head+"networks:\n"+f.texts[name]), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := spec.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.loaded == nil {
		f.loaded = map[string]*spec.Spec{}
	}
	f.loaded[name] = s
	return s
}

var crashSpecs = &specFiles{head: stretchHead, texts: specs}

// loadSpec loads specs[name].
func loadSpec(t *testing.T, name string) *spec.Spec { return crashSpecs.load(t, name) }

// stateDir is where the rigs keep their states: tmpfs when there is one,
// as these tests are about the order of writes, not about fsync.
func stateDir(t *testing.T) string {
	t.Helper()
	if d, err := os.MkdirTemp("/dev/shm", "guestnet-engine-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return t.TempDir()
}

// rig is an engine on the fake kernel, with its state in a temp folder.
type rig struct {
	t *testing.T
	k *fake.Kernel
	e *Engine
}

func newRig(t *testing.T) *rig {
	k := &fake.Kernel{Host: baseHost()}
	return &rig{t: t, k: k, e: New(k, filepath.Join(stateDir(t), "state.json"))}
}

// plan diffs spec name (nil: destroy everything) against the fake host,
// checking the spec against the host as the engine does.
func (r *rig) plan(name string) plan.Plan {
	r.t.Helper()
	st, err := r.e.State()
	if err != nil {
		r.t.Fatal(err)
	}
	var want []model.Network
	if name != "" {
		s := loadSpec(r.t, name)
		if err := s.CheckHost(withoutHalfMade(st, r.k.Host)); err != nil {
			r.t.Fatalf("%s: %v", name, err)
		}
		want = s.Models()
	}
	p, err := plan.Diff(want, st, r.k.Host)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// apply plans and commits spec name ("" destroys all), and checks that a
// second plan finds nothing to do.
func (r *rig) apply(name string) {
	r.t.Helper()
	if err := r.e.commit(r.plan(name), nil); err != nil {
		r.t.Fatalf("apply %q: %v", name, err)
	}
	if again := r.plan(name); len(again.Actions) != 0 {
		r.t.Fatalf("apply %q is not complete: the next plan still has %v", name, again.Actions)
	}
}

// clean checks that no trace of guestnet is left: the host is as it began
// (but for vm0, which attach may have brought up) and the state is empty.
func (r *rig) clean(what string) {
	r.t.Helper()
	h, want := r.k.Host, baseHost()
	for _, x := range []*model.Host{&h, &want} {
		x.Links = slices.Clone(x.Links)
		for i := range x.Links {
			if x.Links[i].Name == "vm0" {
				x.Links[i].Up, x.Links[i].MTU = false, 1500
			}
		}
	}
	if !reflect.DeepEqual(h, want) {
		r.t.Fatalf("%s: host not clean:\n%+v\nwant\n%+v", what, h, want)
	}
	if st, err := r.e.State(); err != nil || len(st.Networks) != 0 || st.ForwardingWas != "" {
		r.t.Fatalf("%s: state not empty: %+v %v", what, st, err)
	}
}

// crash is what the kill hook panics with.
type crash struct{}

// crashed runs f, which must be stopped by the kill hook.
func crashed(t *testing.T, what string, f func() error) {
	t.Helper()
	defer func() {
		if v := recover(); v != (crash{}) {
			t.Fatalf("%s: want a crash, got panic %v", what, v)
		}
	}()
	err := f()
	t.Fatalf("%s: not stopped (err %v)", what, err)
}

// killAfter stops the process (panics) after the nth write of k; n = 0 is
// before any write.
func killAfter(k Kernel, n int) Kernel {
	if n == 0 {
		return killNow{k}
	}
	return &CrashAfter{Kernel: k, N: n, Kill: func() { panic(crash{}) }}
}

type killNow struct{ Kernel }

func (killNow) Do(plan.Action) error { panic(crash{}) }

// TestCrashAtEveryWrite stops each transition's apply after every one of
// its kernel writes (and before the first), then proves the state on disk
// is enough: destroy alone, or the interrupted apply run again and then
// destroy, or the old spec applied again and then destroy, all end on a
// clean host with an empty state.
func TestCrashAtEveryWrite(t *testing.T) {
	transitions := [][2]string{{"empty", "all"}, {"all", "empty"}, {"all", "moved"}, {"moved", "all"}, {"lan", "all"}, {"all", "lan"},
		{"empty", "stretch"}, {"stretch", "stretch-moved"}, {"stretch-moved", "stretch"}, {"stretch", "empty"}}
	cases := 0
	for _, tr := range transitions {
		for _, then := range []string{"destroy", "reapply", "revert"} {
			steps := -1
			for n := 0; steps < 0 || n <= steps; n++ {
				r := newRig(t)
				if tr[0] != "empty" {
					r.apply(tr[0])
				}
				p := r.plan(tr[1])
				steps = len(p.Actions)
				what := fmt.Sprintf("%s>%s, killed after write %d/%d, then %s", tr[0], tr[1], n, steps, then)
				r.e.Kernel = killAfter(r.k, n)
				crashed(t, what, func() error { return r.e.commit(p, nil) })
				r.e.Kernel = r.k
				switch then {
				case "reapply":
					r.apply(tr[1])
				case "revert":
					r.apply(tr[0])
				}
				r.apply("")
				r.clean(what)
				cases++
			}
		}
	}
	t.Logf("%d crashes, each followed by a clean destroy", cases)
}

// TestCrashDuringRollback fails a write of the all-modes apply, then stops
// the process part way through the undo of the earlier writes.
func TestCrashDuringRollback(t *testing.T) {
	cases := 0
	for _, tr := range [][2]string{{"empty", "all"}, {"all", "empty"}, {"empty", "stretch"}, {"stretch", "stretch-moved"}} {
		steps := len(func() plan.Plan { r := newRig(t); r.apply(tr[0]); return r.plan(tr[1]) }().Actions)
		for fail := 2; fail <= steps; fail++ {
			for undone := 1; undone < fail; undone++ {
				r := newRig(t)
				r.apply(tr[0])
				p := r.plan(tr[1])
				what := fmt.Sprintf("%s>%s, write %d failed, killed after %d undo writes", tr[0], tr[1], fail, undone)
				r.e.Kernel = killAfter(&FailAt{Kernel: r.k, N: fail}, fail+undone)
				crashed(t, what, func() error { return r.e.commit(p, nil) })
				r.e.Kernel = r.k
				r.apply("")
				r.clean(what)
				cases++
			}
		}
	}
	t.Logf("%d crashes during a rollback, each followed by a clean destroy", cases)
}

// TestFailedApplyRestoresState: a failure that is fully undone leaves the
// state as it was (no file, when there was none).
func TestFailedApplyRestoresState(t *testing.T) {
	r := newRig(t)
	p := r.plan("all")
	r.e.Kernel = &FailAt{Kernel: r.k, N: len(p.Actions)}
	var se *apply.StepError
	if err := r.e.commit(p, nil); !errors.As(err, &se) || se.Rollback != nil {
		t.Fatalf("want a failed step, undone: %v", err)
	}
	if _, err := os.Stat(r.e.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a fully undone first apply left a state file: %v", err)
	}
	r.e.Kernel = r.k
	r.apply("all")
	before, _ := os.ReadFile(r.e.StatePath)
	p = r.plan("moved")
	r.e.Kernel = &FailAt{Kernel: r.k, N: len(p.Actions)}
	if err := r.e.commit(p, nil); err == nil {
		t.Fatal("injected failure not reported")
	}
	if after, _ := os.ReadFile(r.e.StatePath); string(after) != string(before) {
		t.Errorf("a fully undone apply changed the state:\n%s\nwant\n%s", after, before)
	}
}

// TestCrashDuringAttachDetach stops attach (with a binding) and detach
// after each of their writes: a re-apply finishes an attach (port in the
// bridge, bound) and never puts back a port a detach took out.
func TestCrashDuringAttachDetach(t *testing.T) {
	bind := &model.PortBind{IPs: []netip.Addr{netip.MustParseAddr("10.99.0.9")}, MAC: "52:54:00:00:00:09"}
	port := func(r *rig, add bool) error {
		n, err := r.e.Network("default")
		if err != nil {
			return err
		}
		if !add {
			_, err := r.e.changePort("default", "vm0", false, nil, r.k.Host, plan.Detach(n, "vm0", r.k.Host))
			return err
		}
		acts, err := plan.Attach(n, "vm0", r.k.Host, plan.AttachOptions{})
		if err != nil {
			return err
		}
		_, err = r.e.changePort("default", "vm0", true, bind, r.k.Host, acts)
		return err
	}
	for _, attach := range []bool{true, false} {
		for n := 0; ; n++ {
			r := newRig(t)
			r.apply("all")
			if !attach {
				if err := port(r, true); err != nil {
					t.Fatal(err)
				}
			}
			what := fmt.Sprintf("attach=%v, killed after write %d", attach, n)
			r.e.Kernel = killAfter(r.k, n)
			if !stopped(func() error { return port(r, attach) }) {
				t.Logf("attach=%v: killed after each of its %d writes", attach, n)
				break
			}
			detached := false
			if vm, _ := r.k.Host.Link("vm0"); !attach && vm.Master == "" {
				detached = true
			}
			r.e.Kernel = r.k
			r.apply("all")
			vm, _ := r.k.Host.Link("vm0")
			bound := slices.ContainsFunc(r.k.Host.Guard.Bound, func(b model.Bind) bool { return b.Port == "vm0" })
			if attach && (vm.Master != "gnat0" || !bound) {
				t.Fatalf("%s: re-apply did not finish the attach: master %q, bound %v", what, vm.Master, bound)
			}
			if !attach && (bound || detached && vm.Master != "") {
				t.Fatalf("%s: re-apply undid the detach: master %q, bound %v", what, vm.Master, bound)
			}
			r.apply("")
			r.clean(what)
		}
	}
}

// stopped runs f and reports whether the kill hook stopped it.
func stopped(f func() error) (killed bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != (crash{}) {
				panic(v)
			}
			killed = true
		}
	}()
	f()
	return false
}

// TestHalfMadeBridge: a kill -9 between the two writes of a bridge (link,
// then alias) leaves a bridge guestnet does not recognise by its alias;
// the state names it, so apply makes it whole and destroy removes it.
func TestHalfMadeBridge(t *testing.T) {
	for _, then := range []string{"reapply", "destroy"} {
		r := newRig(t)
		p := r.plan("all")
		r.e.Kernel = killAfter(r.k, 0)
		crashed(t, "before the first write", func() error { return r.e.commit(p, nil) })
		r.e.Kernel = r.k
		if err := r.k.Do(plan.Action{Op: plan.OpBridgeAdd, Link: "gnat0"}); err != nil { // no alias
			t.Fatal(err)
		}
		if then == "reapply" {
			r.apply("all")
			if l, _ := r.k.Host.Link("gnat0"); l.Owner() != "default" {
				t.Fatalf("gnat0 not made whole: %+v", l)
			}
		}
		r.apply("")
		r.clean("half-made bridge, then " + then)
	}
}
