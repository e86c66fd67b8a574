package match

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestWalk: a dispatch rule is replaced by the rules of the chain its map
// sends the packet to, and the walk goes on after it (a jump returns);
// a key not in the map, absent at the hook, or of another family skips
// the rule; the rules of other chains are never reached.
func TestWalk(t *testing.T) {
	acc := func(net string, m ...model.Match) model.Rule {
		return model.Rule{Network: net, Match: m, Verdict: model.Accept}
	}
	rs := model.Ruleset{
		Chains: []model.Chain{
			{Name: "forward", Type: "filter", Hook: "forward", Rules: []model.Rule{
				{Verdict: model.DispatchForwardTo}, {Verdict: model.DispatchForwardFrom}, acc("tail")}},
			{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Rules: []model.Rule{{Verdict: model.DispatchNATFrom}}},
			{Name: "to-a", Rules: []model.Rule{acc("a", model.Match{Kind: model.MatchIIF, Name: "bra"}), {Network: "a", Verdict: model.Reject}}},
			{Name: "from-b", Rules: []model.Rule{acc("b")}},
			{Name: "nat-a", Rules: []model.Rule{{Network: "a", Verdict: model.Masquerade}}},
		},
		Vmaps: []model.Vmap{
			{Name: model.VmapForwardTo, Key: model.MatchOIF, Elements: []model.VmapElement{{Name: "bra", Chain: "to-a"}}},
			{Name: model.VmapForwardFrom, Key: model.MatchIIF, Elements: []model.VmapElement{{Name: "brb", Chain: "from-b"}}},
			{Name: model.VmapNATFrom, Key: model.MatchSAddr, Elements: []model.VmapElement{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Chain: "nat-a"}}},
		},
	}
	walk := func(chain string, p Packet) string {
		t.Helper()
		steps, err := Walk(rs, chain, p)
		if err != nil {
			t.Fatalf("%s %+v: %v", chain, p, err)
		}
		var out []string
		for _, s := range steps {
			out = append(out, s.Chain+":"+s.Rule.Network)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		chain string
		p     Packet
		want  string
	}{
		{"forward", Packet{IIF: "brb", OIF: "bra"}, "to-a:a to-a:a from-b:b forward:tail"},
		{"forward", Packet{IIF: "brx", OIF: "bra"}, "to-a:a to-a:a forward:tail"},
		{"forward", Packet{IIF: "brb", OIF: "brx"}, "from-b:b forward:tail"},
		{"forward", Packet{OIF: "bra"}, "to-a:a to-a:a forward:tail"}, // no input interface: forward_from skipped
		{"forward", Packet{}, "forward:tail"},
		{"postrouting", Packet{Src: netip.MustParseAddr("10.1.200.3")}, "nat-a:a"},
		{"postrouting", Packet{Src: netip.MustParseAddr("10.2.0.3")}, ""},
		{"postrouting", Packet{Src: netip.MustParseAddr("fd00::3")}, ""}, // the nfproto ipv4 check fails
		{"input", Packet{IIF: "bra"}, ""},                                // no such chain
	} {
		if got := walk(c.chain, c.p); got != c.want {
			t.Errorf("%s %+v: walked %q, want %q", c.chain, c.p, got, c.want)
		}
	}
	// A map the ruleset lacks, or a chain an element names that it lacks:
	// the walk cannot tell.
	broken := rs
	broken.Vmaps = rs.Vmaps[:1]
	if _, err := Walk(broken, "forward", Packet{IIF: "brb", OIF: "brx"}); err == nil || !strings.Contains(err.Error(), "no such map") {
		t.Errorf("lookup in a missing map: %v, want an error naming it", err)
	}
	broken = rs
	broken.Chains = rs.Chains[:2]
	if _, err := Walk(broken, "forward", Packet{OIF: "bra"}); err == nil || !strings.Contains(err.Error(), "to-a") {
		t.Errorf("jump to a missing chain: %v, want an error naming it", err)
	}
}
