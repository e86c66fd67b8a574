package model

import "net/netip"

// Family is an address family, as nft names its network header: "ip" or
// "ip6". The model keeps addresses as netip values, which carry their
// family; Family is what rendering and encoding read from them, so that
// no IPv4 width or keyword is baked into a rule, a key or a set type.
type Family string

const (
	IPv4 Family = "ip"
	IPv6 Family = "ip6"
)

// FamilyOf is the family of an address (an invalid one counts as IPv4,
// the family of every network guestnet manages today).
func FamilyOf(a netip.Addr) Family {
	if a.Is6() && !a.Is4In6() {
		return IPv6
	}
	return IPv4
}

// Len is the length of an address of the family in bytes.
func (f Family) Len() int {
	if f == IPv6 {
		return 16
	}
	return 4
}

// SrcOffset and DstOffset are where the family's network header holds
// the source and destination addresses.
func (f Family) SrcOffset() uint32 {
	if f == IPv6 {
		return 8
	}
	return 12
}

func (f Family) DstOffset() uint32 {
	if f == IPv6 {
		return 24
	}
	return 16
}

// Bits is the length of an address of the family in bits.
func (f Family) Bits() int { return 8 * f.Len() }

// AddrType is nft's name of the family's address type in a set or map
// declaration.
func (f Family) AddrType() string {
	if f == IPv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// Unspecified is the family's all-zeros address (0.0.0.0 or ::).
func (f Family) Unspecified() netip.Addr {
	if f == IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// HostPrefix is the prefix of a single address of its own family (/32, /128).
func HostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
