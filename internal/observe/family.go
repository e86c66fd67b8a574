package observe

import (
	"net"
	"net/netip"
)

// addrOf converts an address netlink read into netip, in its own family:
// an IPv4 address (which a net.IP may hold in 4 or 16 bytes) as IPv4,
// any other 16-byte address as IPv6. ok is false for nil or a bad length.
func addrOf(ip net.IP) (netip.Addr, bool) {
	if v4 := ip.To4(); v4 != nil {
		return netip.AddrFromSlice(v4)
	}
	return netip.AddrFromSlice(ip.To16())
}

// prefixOf converts an address and mask into a prefix of the address's
// family (a 16-byte mask of an IPv4 address counts its last 32 bits).
func prefixOf(ip net.IP, mask net.IPMask) (netip.Prefix, bool) {
	a, ok := addrOf(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := mask.Size()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	if bits == 0 || ones < 0 || ones > a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}
