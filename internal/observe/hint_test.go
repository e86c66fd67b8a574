package observe

import "testing"

// TestHintTrusts: the generation vouches for the ruleset only when it has
// not moved, or moved only by guestnet's own element writes.
func TestHintTrusts(t *testing.T) {
	own := map[uint32]bool{11: true, 12: true, 14: true}
	h := &Hint{Gen: 10, Sum: "x", Own: func(g uint32) bool { return own[g] }}
	for gen, want := range map[uint32]bool{10: true, 11: true, 12: true, 13: false, 14: false, 9: false} {
		if got := h.Trusts(gen); got != want {
			t.Errorf("generation %d: trusts = %v, want %v", gen, got, want)
		}
	}
	if (&Hint{Gen: 10, Sum: "x"}).Trusts(11) {
		t.Error("a moved generation trusted without Own")
	}
	if (&Hint{Gen: 10}).Trusts(10) {
		t.Error("trusted without a digest")
	}
	var none *Hint
	if none.Trusts(10) {
		t.Error("a nil hint trusted")
	}
}
