package plan_test

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

var update = flag.Bool("update", false, "rewrite golden files")

var _ apply.Writer = (*fake.Kernel)(nil)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// baseHost is fake.BaseHost: an internet uplink (eth0, default route) and a
// LAN NIC (eth1) for bridge mode.
func baseHost() model.Host { return fake.BaseHost() }

// states are the named configurations replayed in every order.
var states = map[string]string{
	"empty": "",
	"nat":   "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24}\n",
	"nat-moved": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.5.1/24}\n" +
		"  iso: {mode: isolated, bridge: giso0}\n",
	"all": "  default: {mode: nat, bridge: gnat0, ipv4: 10.99.0.1/24}\n" +
		"  iso: {mode: isolated, bridge: giso0}\n" +
		"  lab: {mode: routed, bridge: grt0, ipv4: 10.99.1.1/24, mtu: 1400}\n" +
		"  free: {mode: open, bridge: gopen0, ipv4: 10.99.2.1/24}\n" +
		"  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	"lan-only": "  lan: {mode: bridge, bridge: br0, uplink: eth1}\n",
	"iso-ip":   "  iso: {mode: isolated, bridge: giso0, ipv4: 10.98.0.1/24}\n",
}

func load(t *testing.T, name string) *spec.Spec {
	t.Helper()
	nets, err := spec.Parse(name+".yaml", []byte("networks:\n"+states[name]))
	if err != nil {
		t.Fatal(err)
	}
	s := &spec.Spec{Networks: nets}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	// Parse keeps file order; Load sorts. Sort the same way.
	s2 := &spec.Spec{}
	for _, n := range sortedNames(nets) {
		s2.Networks = append(s2.Networks, n)
	}
	return s2
}

func sortedNames(ns []spec.Network) []spec.Network {
	out := append([]spec.Network(nil), ns...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Name < out[i].Name {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// step converges the fake kernel k on state name through the engine's
// own verb (the random-order replay of these states is the engine's
// TestReplayStates) and returns the state it recorded.
func step(t *testing.T, k *fake.Kernel, name string) state.State {
	t.Helper()
	e := engine.New(k, filepath.Join(t.TempDir(), "state.json"))
	if _, err := e.Converge(context.Background(), load(t, name)); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	st, err := e.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestGolden prints the plans of a few transitions as their command-line
// equivalents and compares them with testdata/*.plan.
func TestGolden(t *testing.T) {
	for _, tr := range [][2]string{{"empty", "all"}, {"all", "all"}, {"all", "nat-moved"}, {"all", "empty"}} {
		k := &fake.Kernel{Host: baseHost()}
		st := state.State{}
		if tr[0] != "empty" {
			st = step(t, k, tr[0])
		}
		p, err := plan.Diff(load(t, tr[1]).Models(), st, k.Host)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, a := range p.Actions {
			fmt.Fprintln(&b, a)
			for _, l := range a.RuleDiff() {
				fmt.Fprintln(&b, "    "+l)
			}
		}
		golden := filepath.Join("testdata", tr[0]+"-to-"+tr[1]+".plan")
		if *update {
			os.MkdirAll("testdata", 0o755)
			os.WriteFile(golden, []byte(b.String()), 0o644)
		}
		want, _ := os.ReadFile(golden)
		if b.String() != string(want) {
			t.Errorf("%s:\n%s\nwant:\n%s", golden, b.String(), want)
		}
	}
}

func TestAttach(t *testing.T) {
	k := &fake.Kernel{Host: baseHost()}
	step(t, k, "all")
	lab := network(t, "all", "lab")
	acts, err := plan.Attach(lab, "tap0", k.Host, plan.AttachOptions{Create: true, Owner: 1000, Group: -1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range acts {
		got = append(got, a.String())
	}
	want := "ip tuntap add dev tap0 mode tap user 1000|ip link set tap0 mtu 1400|ip link set tap0 master grt0|ip link set tap0 up"
	if strings.Join(got, "|") != want {
		t.Errorf("attach:\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
	if err := apply.Run(k, acts); err != nil {
		t.Fatal(err)
	}
	if again, _ := plan.Attach(lab, "tap0", k.Host, plan.AttachOptions{}); len(again) != 0 {
		t.Errorf("second attach not a no-op: %v", again)
	}
	if _, err := plan.Attach(lab, "tap9", k.Host, plan.AttachOptions{}); err == nil {
		t.Error("attach of a missing interface without --create succeeded")
	}
	nat := network(t, "all", "default")
	if _, err := plan.Attach(nat, "tap0", k.Host, plan.AttachOptions{}); err == nil || !strings.Contains(err.Error(), "already a port of grt0") {
		t.Errorf("attach to a second bridge: %v", err)
	}
	if d := plan.Detach(lab, "tap0", k.Host); len(d) != 2 {
		t.Errorf("detach: %v", d)
	}
	if d := plan.Detach(lab, "gone0", k.Host); len(d) != 0 {
		t.Errorf("detach of a vanished TAP must be a no-op: %v", d)
	}
}

func network(t *testing.T, stateName, name string) model.Network {
	for _, n := range load(t, stateName).Networks {
		if n.Name == name {
			return n.Network
		}
	}
	t.Fatalf("no network %s in %s", name, stateName)
	return model.Network{}
}
