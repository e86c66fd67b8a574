package main

import (
	"net/netip"
	"slices"
	"testing"
)

// TestParseBindIPv6: --ip takes IPv6 unicast addresses next to IPv4 ones,
// and refuses what no guest sends from.
func TestParseBindIPv6(t *testing.T) {
	b, err := parseBind([]string{"10.99.0.10", "fd42:99::10", "fe80::10"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.99.0.10"), netip.MustParseAddr("fd42:99::10"), netip.MustParseAddr("fe80::10")}
	if !slices.Equal(b.IPs, want) {
		t.Errorf("got %v, want %v", b.IPs, want)
	}
	for _, bad := range []string{"::", "ff02::1", "::1", "::ffff:10.99.0.10", "fe80::1%eth0", "224.0.0.1"} {
		if _, err := parseBind([]string{bad}, ""); err == nil {
			t.Errorf("--ip %s accepted", bad)
		}
	}
}
