package observe

import (
	"net"
	"net/netip"
	"testing"
)

// TestFamilyDecoding: addresses and prefixes netlink hands over decode in
// their own family, IPv4 whether held in 4 or 16 bytes, IPv6 as IPv6.
func TestFamilyDecoding(t *testing.T) {
	for _, c := range []struct {
		ip   net.IP
		mask net.IPMask
		want string
	}{
		{net.IP{10, 99, 0, 1}, net.CIDRMask(24, 32), "10.99.0.1/24"},
		{net.ParseIP("10.99.0.1"), net.CIDRMask(24, 32), "10.99.0.1/24"}, // 16-byte IPv4
		{net.ParseIP("10.99.0.1"), net.CIDRMask(120, 128), "10.99.0.1/24"},
		{net.ParseIP("fd00:99::1"), net.CIDRMask(64, 128), "fd00:99::1/64"},
		{net.ParseIP("fd00:99::1"), net.CIDRMask(128, 128), "fd00:99::1/128"},
	} {
		p, ok := prefixOf(c.ip, c.mask)
		if !ok || p != netip.MustParsePrefix(c.want) {
			t.Errorf("prefixOf(%v, %v) = %v, %v; want %s", c.ip, c.mask, p, ok, c.want)
		}
	}
	if p, ok := prefixOf(net.ParseIP("fd00:99::1"), net.IPMask{0xff, 0, 0xff, 0}); ok {
		t.Errorf("a non-contiguous mask decoded as %v", p)
	}
	if a, ok := addrOf(nil); ok {
		t.Errorf("nil decoded as %v", a)
	}
}
