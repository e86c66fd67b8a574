package nft

import (
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestGuardKeys: every kind of binding survives the trip through the set
// element bytes, and elements guestnet would not write are refused.
func TestGuardKeys(t *testing.T) {
	for _, b := range []model.Bind{
		{Port: "tap0", MAC: "52:54:00:12:34:56", IP: netip.MustParseAddr("10.99.0.20")},
		{Port: "vnet12", MAC: "52:54:00:12:34:56", IP: netip.IPv4Unspecified()},
		{Port: "tap0", IP: netip.MustParseAddr("10.99.0.20")}, // any MAC
		{Port: "a-fifteen-bytes", MAC: "02:00:00:00:00:01"},   // any address
	} {
		start, end := GuardKey(b)
		got, ok := DecodeGuardKey(start, end)
		if !ok || got != b {
			t.Errorf("%v: decoded %v (ok=%v)", b, got, ok)
		}
		if b.MAC != "" && b.IP.IsValid() {
			if got, ok := DecodeGuardKey(start, nil); !ok || got != b {
				t.Errorf("%v as an exact element: decoded %v (ok=%v)", b, got, ok)
			}
		}
	}
	start, end := GuardKey(model.Bind{Port: "tap0", IP: netip.MustParseAddr("10.99.0.20")})
	end[17] = 0x10 // a MAC range that is not "any"
	if b, ok := DecodeGuardKey(start, end); ok {
		t.Errorf("a partial MAC range decoded as %v", b)
	}
	if _, ok := DecodeGuardKey(start[:20], nil); ok {
		t.Error("a short key decoded")
	}
}

// TestGuardRulesMatchText: one printed rule for each encoded one, and no
// two encoded rules alike (SameGuardRule tells them apart).
func TestGuardRulesMatchText(t *testing.T) {
	exprs := GuardChains()
	for chain, rules := range model.GuardRules() {
		if len(exprs[chain]) != len(rules) {
			t.Errorf("chain %s: %d encoded rules, %d printed", chain, len(exprs[chain]), len(rules))
		}
		for i, r := range exprs[chain] {
			if i > 0 && SameGuardRule(r, exprs[chain][i-1]) {
				t.Errorf("chain %s rules %d and %d are the same", chain, i-1, i)
			}
		}
	}
}

// TestOwnerKeys: the elements of sets macs and port_macs survive the trip
// through their bytes, and ones guestnet would not write are refused.
func TestOwnerKeys(t *testing.T) {
	p := model.PortMAC{Port: "a-fifteen-bytes", MAC: "52:54:00:12:34:56"}
	k, err := PortMACKey(p)
	if err != nil || len(k) != 24 {
		t.Fatalf("PortMACKey(%v) = %x, %v", p, k, err)
	}
	if got, ok := DecodePortMACKey(k); !ok || got != p {
		t.Errorf("decoded %v (ok=%v), want %v", got, ok, p)
	}
	m, err := MACKey(p.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := DecodeMACKey(m); !ok || got != p.MAC {
		t.Errorf("decoded MAC %q (ok=%v)", got, ok)
	}
	k[23] = 1 // padding guestnet never sets
	if _, ok := DecodePortMACKey(k); ok {
		t.Error("a key with non-zero padding decoded")
	}
	for _, bad := range []string{"", "52:54:00:12:34", "00:00:00:00:fe:80:00:00"} {
		if _, err := MACKey(bad); err == nil {
			t.Errorf("MACKey(%q) made a key", bad)
		}
	}
}
