package nft

import (
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// TestDNSOnlyFromBridge: for every network with dns: (all modes with a
// gateway address, guest_to_host: all included), its gateway's UDP and TCP
// 53 is dropped unless it arrives on its bridge or lo, and these drops come
// before every accept of the input chain. Each rule survives the trip to
// expressions and back (observe reads what apply wrote).
func TestDNSOnlyFromBridge(t *testing.T) {
	s, err := spec.Load("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Render(s.Models(), model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	var input []model.Rule
	for _, c := range rs.Chains {
		if c.Name == "input" {
			input = c.Rules
		}
	}
	firstAccept := len(input)
	for i, r := range input {
		if r.Verdict == model.Accept {
			firstAccept = i
			break
		}
	}
	for _, n := range s.Models() {
		if n.DNS == nil {
			continue
		}
		for _, p := range []string{"udp", "tcp"} {
			want := `iifname != "` + n.Bridge + `" iifname != "lo" ip daddr ` + n.IPv4.Addr().String() + " " + p + ` dport 53 drop comment "` + n.Name + `"`
			at := -1
			for i, r := range input {
				if r.String() == want {
					at = i
				}
			}
			if at < 0 || at > firstAccept {
				t.Errorf("network %s (mode %s, guest_to_host %q): want %q before the first accept (rule %d), found at %d",
					n.Name, n.Mode, n.GuestToHost, want, firstAccept, at)
			}
		}
	}
	for _, r := range input {
		exprs, err := Encode(r, true)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := Decode(exprs, r.Network); !ok || got.String() != r.String() {
			t.Errorf("round trip of %s: got %s (ok=%v)", r, got, ok)
		}
	}
	for _, r := range input {
		if r.Network == "nodns" && r.Verdict == model.Drop {
			t.Errorf("network nodns has no dns: but got %s", r)
		}
	}
}
