package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// edgeNames are network names at the edge of the spec's regex
// ([a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}): 32 characters, a leading digit, dots,
// dashes, underscores. Each becomes part of five chain names.
var edgeNames = []string{strings.Repeat("x", 32), "0lead", "a.b-c_d", "n.1", "n-1"}

// tableBlocks is `nft list table inet guestnet` with its chain and map
// blocks sorted by their first line: a table changed by deltas lists its
// chains in the order they were made, a fresh one in Render's order, and
// nothing else may differ.
func tableBlocks(listing string) string {
	var head []string
	blocks := map[string][]string{}
	cur := ""
	for _, ln := range strings.Split(listing, "\n") {
		if strings.HasPrefix(ln, "\tchain ") || strings.HasPrefix(ln, "\tmap ") || strings.HasPrefix(ln, "\tset ") {
			cur = ln
			blocks[cur] = []string{ln}
			continue
		}
		if cur != "" {
			blocks[cur] = append(blocks[cur], ln)
			if ln == "\t}" {
				cur = ""
			}
			continue
		}
		head = append(head, ln)
	}
	out := strings.Join(head, "\n")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range blocks {
			if !yield(k) {
				return
			}
		}
	}) {
		out += "\n" + strings.Join(blocks[k], "\n")
	}
	return out
}

// sameAsFresh fails unless the table in ns is, block for block, what one
// apply of spec gives in a new empty namespace.
func (l *Lab) sameAsFresh(ns, specPath, step string) {
	l.t.Helper()
	fresh := l.NS(fmt.Sprintf("fresh%d", nsCounter.Add(1)))
	out, errs, code := l.runState(fresh, l.t.TempDir(), "apply", specPath)
	if code != 0 {
		l.t.Fatalf("%s: fresh apply: exit %d\n%s%s", step, code, out, errs)
	}
	want := tableBlocks(l.In(fresh, "nft", "list", "table", "inet", "guestnet"))
	got := tableBlocks(l.In(ns, "nft", "list", "table", "inet", "guestnet"))
	if got != want {
		l.t.Errorf("%s: the table differs from a fresh apply of the same spec:\n%s", step, diffLines(want, got))
	}
}

// runState is Run with another state directory (a second host).
func (l *Lab) runState(ns, dir string, args ...string) (string, string, int) {
	l.t.Helper()
	saved := l.StateDir
	l.StateDir = dir
	defer func() { l.StateDir = saved }()
	return l.Run(ns, args...)
}

// TestDeltaSequenceMatchesFreshApply walks one host through adds,
// changes, removals and mode changes (nat -> isolated -> routed -> open,
// peers, guest_to_host, dns, forwards) of networks named at the edge of
// the spec's regex; after each apply (a delta from the previous networks)
// the table is block for block a fresh apply's, and the next plan is
// empty. A guest of one network never reaches another's guest unless
// peers say so.
func TestDeltaSequenceMatchesFreshApply(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	big, lead, dots := edgeNames[0], edgeNames[1], edgeNames[2]
	net := func(name, mode string, i int, extra string) string {
		s := fmt.Sprintf("  '%s':\n    mode: %s\n    bridge: hb%d\n", name, mode, i)
		if mode != "isolated" {
			s += fmt.Sprintf("    ipv4: 10.82.%d.1/24\n", i)
		}
		return s + extra
	}
	steps := []struct{ what, spec string }{
		{"two nat networks", net(big, "nat", 0, "") + net(lead, "nat", 1, "")},
		{"a third, routed, with peers and dns", net(big, "nat", 0, "") + net(lead, "nat", 1, "") +
			net(dots, "routed", 2, fmt.Sprintf("    peers: ['%s']\n    dns: {domain: x.internal}\n", big))},
		{"nat -> isolated", net(big, "isolated", 0, "") + net(lead, "nat", 1, "") +
			net(dots, "routed", 2, fmt.Sprintf("    peers: ['%s']\n    dns: {domain: x.internal}\n", big))},
		{"isolated -> routed, guest_to_host all", net(big, "routed", 0, "    guest_to_host: all\n") + net(lead, "nat", 1, "") +
			net(dots, "routed", 2, fmt.Sprintf("    peers: ['%s']\n    dns: {domain: x.internal}\n", big))},
		{"remove the middle one, forwards on another", net(big, "routed", 0, "    guest_to_host: all\n") +
			net(dots, "nat", 2, "    forwards: [{proto: tcp, port: 2222, to: '10.82.2.10:22'}]\n")},
		{"routed -> open, one back", net(big, "open", 0, "") + net(lead, "routed", 1, "") +
			net(dots, "nat", 2, "    forwards: [{proto: tcp, port: 2222, to: '10.82.2.10:22'}]\n")},
		{"back to two nat networks", net(big, "nat", 0, "") + net(lead, "nat", 1, "")},
	}
	for i, s := range steps {
		spec := l.Spec("networks:\n" + s.spec)
		l.Guestnet(host, "apply", spec)
		l.sameAsFresh(host, spec, fmt.Sprintf("step %d (%s)", i, s.what))
		if out, _, code := l.Run(host, "plan", spec); code != 0 {
			t.Errorf("step %d (%s): plan after apply: exit %d\n%s", i, s.what, code, out)
		}
	}
	// The last step's networks, with real guests: nat to nat is blocked
	// both ways, each reaches its own gateway.
	g0 := l.Guest(host, big, "g0", "vg0", "10.82.0.10/24", "10.82.0.1")
	g1 := l.Guest(host, lead, "g1", "vg1", "10.82.1.10/24", "10.82.1.1")
	l.Serve(g0, "10.82.0.10:8080")
	l.Serve(g1, "10.82.1.10:8080")
	l.matrix("after the sequence", []check{
		{"g0 -> its gateway", true, func() bool { return l.Ping(g0, "10.82.0.1") }},
		{"g1 -> g0 tcp", false, func() bool { _, err := l.dialQuick(g1, "10.82.0.10:8080"); return err == nil }},
		{"g0 -> g1 tcp", false, func() bool { _, err := l.dialQuick(g0, "10.82.1.10:8080"); return err == nil }},
	})
}

// TestForeignDispatchDriftIsSeenAndRepaired: someone re-points two
// networks' dispatch at a chain of their own that accepts, which opens
// them to each other. Real packets pass while it is there; trace
// must not claim they are dropped; apply deletes the foreign chain and
// element by delta, and the network is closed again.
func TestForeignDispatchDriftIsSeenAndRepaired(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(fmt.Sprintf("networks:\n  '%s': {mode: nat, bridge: hb0, ipv4: 10.82.0.1/24}\n  '%s': {mode: nat, bridge: hb1, ipv4: 10.82.1.1/24}\n", edgeNames[0], edgeNames[1]))
	l.Guestnet(host, "apply", spec)
	g0 := l.Guest(host, edgeNames[0], "g0", "vg0", "10.82.0.10/24", "10.82.0.1")
	g1 := l.Guest(host, edgeNames[1], "g1", "vg1", "10.82.1.10/24", "10.82.1.1")
	l.Serve(g1, "10.82.1.10:8080")
	reach := func() bool { _, err := l.dialQuick(g0, "10.82.1.10:8080"); return err == nil }
	traceSays := func(when string, real bool) {
		t.Helper()
		out, _, code := l.Run(host, "trace", "10.82.0.10", "10.82.1.10", "tcp/8080")
		switch {
		case code == 3:
			t.Logf("%s: trace cannot tell (exit 3), real=%v:\n%s", when, real, out)
		case (code == 0) != real:
			t.Errorf("%s: real packets delivered=%v, trace exit %d:\n%s", when, real, code, out)
		}
	}
	l.expect("g0 -> g1 before drift", false, reach())
	traceSays("before drift", false)

	for _, v := range []struct{ what, verdict string }{{"jump", "jump theirs"}, {"goto", "goto theirs"}} {
		l.In(host, "nft", "add", "chain", "inet", "guestnet", "theirs")
		l.In(host, "nft", "add", "rule", "inet", "guestnet", "theirs", "accept")
		// Both directions: to-hb0 alone would still reject g1's replies
		// (another guest bridge is rejected before replies are accepted).
		for _, br := range []string{"hb0", "hb1"} {
			l.In(host, "nft", "delete", "element", "inet", "guestnet", "forward_to", `{ "`+br+`" }`)
			l.In(host, "nft", "add", "element", "inet", "guestnet", "forward_to", `{ "`+br+`" : `+v.verdict+` }`)
		}
		real := reach()
		l.expect("g0 -> g1 with forward_to hb0, hb1 : "+v.verdict, true, real)
		traceSays("forward_to hb0, hb1 : "+v.verdict, real)
		if out, _, code := l.Run(host, "plan", spec); code != 2 {
			t.Errorf("%s: plan does not see the foreign dispatch: exit %d\n%s", v.what, code, out)
		}
		l.Guestnet(host, "apply", spec)
		l.sameAsFresh(host, spec, "after repair of "+v.what)
		l.expect("g0 -> g1 after repair of "+v.what, false, reach())
	}
	if regexp.MustCompile(`theirs`).MatchString(l.In(host, "nft", "list", "table", "inet", "guestnet")) {
		t.Error("the foreign chain survived the repair")
	}
}

// TestForeignSetInOurTableIsSeen: a set someone adds to table inet
// guestnet is not one guestnet wrote; plan should call it drift and apply
// remove it, as it does a foreign chain. observe reads only the maps it
// knows by name (readMaps), so the plan is empty and the set stays.
// Harmless to packets while no rule looks it up (such a rule would be
// seen), but the table is not the one the digest vouches for.
func TestForeignSetInOurTableIsSeen(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec("networks:\n  A: {mode: nat, bridge: hb0, ipv4: 10.82.0.1/24}\n")
	l.Guestnet(host, "apply", spec)
	l.In(host, "nft", "add", "chain", "inet", "guestnet", "lonely")
	if _, _, code := l.Run(host, "plan", spec); code != 2 {
		t.Errorf("a foreign chain in our table: plan exit %d, want 2", code)
	}
	l.Guestnet(host, "apply", spec)
	l.In(host, "nft", "add", "set", "inet", "guestnet", "theirs", "{ type ipv4_addr; }")
	if out, _, code := l.Run(host, "plan", spec); code != 2 {
		t.Errorf("a foreign set in our table: plan exit %d, want 2 (drift)\n%s", code, out)
	}
	l.Guestnet(host, "apply", spec)
	l.sameAsFresh(host, spec, "after apply over a foreign set")
}
