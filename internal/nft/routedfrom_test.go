package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestRoutedFromDelta: giving one of 40 nat networks a routed_from prefix
// refills that network's to- and nat-chains and nothing else (no element,
// no other chain), the digest follows the rules, and the delta applied to
// the old ruleset is the new one.
func TestRoutedFromDelta(t *testing.T) {
	var nets []model.Network
	for i := range 40 {
		nets = append(nets, model.Network{
			Name: fmt.Sprintf("n%d", i), Mode: model.NAT, Bridge: fmt.Sprintf("gn%d", i),
			IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(i), 1}), 24),
		})
	}
	old, err := Render(nets, model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(nets)
	changed[7].RoutedFrom = []netip.Prefix{netip.MustParsePrefix("10.94.0.0/24")}
	cur, err := Render(changed, model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cur.RuleCount()-old.RuleCount(), 2; got != want {
		t.Errorf("rule count grew by %d, want %d (one accept in to-n7, one in nat-n7)", got, want)
	}
	if old.Sum() == cur.Sum() {
		t.Error("digest unchanged by routed_from")
	}
	d, ok := model.Delta(old, cur)
	if !ok {
		t.Fatal("no delta: a full replace for one network's routed_from")
	}
	var set []string
	for _, c := range d.SetChains {
		set = append(set, c.Name)
	}
	if want := []string{model.ChainTo("n7"), model.ChainNAT("n7")}; !slices.Equal(set, want) || d.String() != "2 chains refilled" {
		t.Errorf("delta %q refills %v, want only %v", d, set, want)
	}
	got, err := d.Apply(old)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(cur) || got.Sum() != cur.Sum() {
		t.Errorf("old + delta is not the new ruleset:\n%s\nwant\n%s", got, cur)
	}
}
