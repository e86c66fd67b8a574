package dhcp

import (
	"net/netip"
	"testing"
	"time"
)

// TestNameHeldInOtherFamily: a DHCPv4 client does not take a name that
// another guest holds in DHCPv6 (Config.NameHeld): else A web would point
// to it while AAAA web points to the holder. The holder itself, with the
// same MAC, takes its name for its IPv4 address too; the pool's own
// holders answer NameHeld for the other family.
func TestNameHeldInOtherFamily(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
	cfg := twoAddrConfig()
	cfg.NameHeld = func(name, mac string) bool { return name == "web" && mac != "02:00:00:00:00:aa" }
	p := NewPool(cfg, c.now, nil)
	b, ok := p.Bind("02:00:00:00:00:bb", netip.MustParseAddr("10.96.0.100"), "web", "")
	if !ok || b.Lease.Hostname != "" || b.NameTaken != "web" {
		t.Errorf("guest B asking for web, held over DHCPv6 by A: %+v (taken %q), want its address without the name", b.Lease, b.NameTaken)
	}
	if a, ok := p.Resolve("web"); ok {
		t.Errorf("A web resolves to %v (guest B's)", a)
	}
	a, ok := p.Bind("02:00:00:00:00:aa", netip.MustParseAddr("10.96.0.101"), "web", "")
	if !ok || a.Lease.Hostname != "web" {
		t.Errorf("guest A's own name: %+v", a.Lease)
	}
	if !p.NameHeld("web", "02:00:00:00:00:bb") || p.NameHeld("web", "02:00:00:00:00:aa") || !p.NameHeld("web", "") {
		t.Errorf("NameHeld(web): held for B, not for A, held for an unknown MAC: want true, false, true")
	}
}
