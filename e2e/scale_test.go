package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
)

// scaleSpec writes a spec of NAT networks n0..n(count-1), each with DNS,
// with change applied to each line (nil: none), and loads it.
func scaleSpec(t *testing.T, dir string, count int, change func(i int, line string) string) *spec.Spec {
	t.Helper()
	var b strings.Builder
	b.WriteString("networks:\n")
	for i := range count {
		line := fmt.Sprintf("  n%d: {mode: nat, bridge: gn%d, ipv4: 10.%d.%d.1/24, dns: {domain: n%d.lab}}", i, i, 100+i/256, i%256, i)
		if change != nil {
			line = change(i, line)
		}
		if line != "" {
			b.WriteString(line + "\n")
		}
	}
	p := filepath.Join(dir, fmt.Sprintf("scale-%d-%d.yaml", count, time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := spec.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestThousandNetworksDelta: on a host with 1,000 NAT networks (each with
// DNS), adding one more, changing one and removing one are each a delta of
// a handful of chain and element operations in one transaction, planned
// without reading the rules back; after each, the table the kernel lists
// is the one Render gives for the networks, and the next plan is empty.
func TestThousandNetworksDelta(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	dir := t.TempDir()
	e, err := engine.Open(host, l.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()

	start := time.Now()
	if _, err := e.Converge(ctx, scaleSpec(t, dir, 1000, nil)); err != nil {
		t.Fatal(err)
	}
	t.Logf("1000 networks applied in %v", time.Since(start))

	for _, step := range []struct {
		name   string
		count  int
		change func(i int, line string) string
		want   func(d *model.RulesetDelta) bool
	}{
		{"one more network", 1001, nil, func(d *model.RulesetDelta) bool {
			return len(d.AddChains) == 5 && len(d.AddElements) == 5 && d.Objects() <= 30 && len(d.DelChains)+len(d.DelElements)+len(d.SetChains) == 0
		}},
		{"one network changed (peers)", 1001, func(i int, line string) string {
			if i == 500 {
				return strings.TrimSuffix(line, "}") + ", peers: [n501]}"
			}
			return line
		}, func(d *model.RulesetDelta) bool {
			// to-n500 lets n501 in; to-n501 takes n500's replies to them by
			// bridge (replies from another guest bridge come after its reject).
			names := []string{}
			for _, c := range d.SetChains {
				names = append(names, c.Name)
			}
			slices.Sort(names)
			return slices.Equal(names, []string{"to-n500", "to-n501"}) && d.Objects() <= 24 && len(d.AddChains)+len(d.DelChains) == 0
		}},
		{"one network removed", 1001, func(i int, line string) string {
			if i == 7 {
				return ""
			}
			if i == 500 { // as the change before left it
				return strings.TrimSuffix(line, "}") + ", peers: [n501]}"
			}
			return line
		}, func(d *model.RulesetDelta) bool {
			return len(d.DelChains) == 5 && len(d.DelElements) == 5 && len(d.AddChains)+len(d.AddElements)+len(d.SetChains) == 0
		}},
	} {
		s := scaleSpec(t, dir, step.count, step.change)
		w0 := e.Writes()
		start := time.Now()
		p, err := e.Converge(ctx, s)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var nftActs []plan.Action
		for _, a := range p.Actions {
			if a.IsNft() {
				nftActs = append(nftActs, a)
			}
		}
		if len(nftActs) != 1 || nftActs[0].Op != plan.OpNftDelta || !step.want(nftActs[0].Delta) {
			t.Fatalf("%s: nft actions %v, want one small delta", step.name, nftActs)
		}
		t.Logf("%s: %d kernel writes in %v; nft: %s, %d objects", step.name, e.Writes()-w0, took, nftActs[0].Delta, nftActs[0].Delta.Objects())

		h, err := e.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := nft.Render(s.Models(), h)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Ruleset.Equal(want) {
			t.Fatalf("%s: the table read back is not Render of the networks:\n%s", step.name, diffLines(want.String(), h.Ruleset.String()))
		}
		// nft lists chains in the order they were made; the same table,
		// chain by chain, as nft prints it and as String renders it.
		listed := l.In(host, "nft", "list", "table", "inet", "guestnet")
		if got, exp := chainBlocks(listed), chainBlocks(want.String()); !slices.Equal(got, exp) {
			for i := range got {
				if got[i] != exp[i] {
					t.Fatalf("%s: nft list table inet guestnet differs from Render:\n%s\nwant\n%s", step.name, got[i], exp[i])
				}
			}
			t.Fatalf("%s: nft list table inet guestnet differs from Render (%d and %d blocks)", step.name, len(got), len(exp))
		}
		if again, err := e.Plan(ctx, s); err != nil || len(again.Actions) != 0 {
			t.Fatalf("%s: next plan %v %v, want nothing", step.name, again.Actions, err)
		}
	}
}

// chainBlocks splits nft's listing of a table into its maps and chains,
// sorted, so that two listings that differ only in the order the chains
// were made compare equal.
func chainBlocks(listing string) []string {
	listing = strings.TrimSpace(listing)
	listing = strings.TrimPrefix(listing, "table inet guestnet {")
	listing = strings.TrimSuffix(listing, "}")
	var blocks []string
	for _, b := range strings.Split(listing, "\n\n") {
		blocks = append(blocks, strings.TrimSpace(b))
	}
	slices.Sort(blocks)
	return blocks
}
