package nft

import (
	"net/netip"
	"os"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// TestGuardGoldenStretch: the guard table of testdata/stretch.yaml (two
// stretched networks among others) is testdata/stretch.guard.nft, the
// text `nft list table bridge guestnet` prints for it (e2e's
// TestVXLANFirewall compares the kernel's listing with the same
// rendering).
func TestGuardGoldenStretch(t *testing.T) {
	s, err := spec.Load("testdata/stretch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := model.Guard{On: true}
	g.SetVXLAN(s.Models())
	const golden = "testdata/stretch.guard.nft"
	if *update {
		os.WriteFile(golden, []byte(g.String()), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if g.String() != string(want) {
		t.Errorf("%s:\n%s", golden, lineDiff(string(want), g.String()))
	}
}

// TestVXLANKeys: the elements of sets vxlan_gateways and vxlan_dropped_*
// read back as written; an IPv6 gateway is refused with a reason.
func TestVXLANKeys(t *testing.T) {
	gw := netip.MustParseAddr("10.60.0.1")
	k, err := Addr4Key(gw)
	if err != nil {
		t.Fatal(err)
	}
	if back, ok := DecodeAddr4Key(k); !ok || back != gw {
		t.Errorf("gateway %s reads back as %s (%v)", gw, back, ok)
	}
	if _, err := Addr4Key(netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("an IPv6 gateway made an element of vxlan_gateways")
	}
	// ifname . ether_addr . ether_type, as the kernel stores it.
	key := append(append(ifname("gvx6000"), 0x52, 0x54, 0, 0, 0, 1, 0, 0), 0x08, 0x06, 0, 0)
	x, ok := DecodeVXLANDropKey(key, true)
	if !ok || x != (model.VXLANDrop{Port: "gvx6000", Out: true, MAC: "52:54:00:00:00:01", EtherType: "arp"}) {
		t.Errorf("decoded %+v (%v)", x, ok)
	}
	if _, ok := DecodeVXLANDropKey(key[:20], false); ok {
		t.Error("a short key decoded")
	}
}
