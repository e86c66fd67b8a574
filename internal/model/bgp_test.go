package model

import (
	"net/netip"
	"slices"
	"testing"
)

func TestAnnounced(t *testing.T) {
	pub := netip.MustParseAddr("198.51.100.7")
	lis := netip.MustParseAddr("198.51.100.9")
	nets := []Network{
		{Name: "r", Mode: Routed, IPv4: netip.MustParsePrefix("10.71.0.1/24"), IPv6: netip.MustParsePrefix("2001:db8:71::1/64")},
		{Name: "r6", Mode: Routed, IPv6: netip.MustParsePrefix("fd42:72::1/64")}, // IPv6-only
		{Name: "q6", Mode: Open, IPv6: netip.MustParsePrefix("fd42:76::1/64"), NoAnnounce: true},
		{Name: "o", Mode: Open, IPv4: netip.MustParsePrefix("10.70.0.1/24")},
		{Name: "i", Mode: Isolated, IPv4: netip.MustParsePrefix("10.73.0.1/24")},
		{Name: "q", Mode: Routed, IPv4: netip.MustParsePrefix("10.74.0.1/24"), NoAnnounce: true},
		{Name: "i6", Mode: Isolated, IPv6: netip.MustParsePrefix("fd42:73::1/64")},
		{Name: "n", Mode: NAT, IPv4: netip.MustParsePrefix("10.75.0.1/24"), IPv6: netip.MustParsePrefix("fd42:75::1/64"), // NAT66: not announced
			Floating: []Floating{{Public: pub, Guest: netip.MustParseAddr("10.75.0.5")}},
			Forwards: []PortForward{{Proto: "tcp", PortFrom: 80, PortTo: 80, To: netip.MustParseAddr("10.75.0.6"), Listen: []netip.Addr{lis, pub}},
				{Proto: "tcp", PortFrom: 22, PortTo: 22, To: netip.MustParseAddr("10.75.0.6")}}},
	}
	got := Announced(nets)
	want := []netip.Prefix{
		netip.MustParsePrefix("10.70.0.0/24"), netip.MustParsePrefix("10.71.0.0/24"),
		netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("198.51.100.9/32"),
		netip.MustParsePrefix("2001:db8:71::/64"), netip.MustParsePrefix("fd42:72::/64"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("Announced = %v\nwant        %v", got, want)
	}
}
