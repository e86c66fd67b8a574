package fake

import (
	"net/netip"

	"github.com/guestnet/guestnet/internal/model"
)

// BaseHost is the host the unit tests start from: an internet uplink (eth0,
// 198.51.100.1/25, the default route), a LAN NIC for bridge mode (eth1,
// 172.16.5.10/24, with a route to 172.17.0.0/16 behind it), ip_forward off,
// br_netfilter on, and any extra links (a guest's TAP, say).
func BaseHost(extra ...model.Link) model.Host {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	h := model.Host{
		Links: append([]model.Link{
			{Name: "eth0", Index: 2, Kind: "veth", Up: true, MTU: 1500, MAC: "02:00:00:00:00:01", Addrs: []netip.Prefix{pfx("198.51.100.1/25")}},
			{Name: "eth1", Index: 3, Kind: "veth", Up: true, MTU: 1500, MAC: "02:00:00:00:00:02", Addrs: []netip.Prefix{pfx("172.16.5.10/24")},
				Brd: map[netip.Prefix]netip.Addr{pfx("172.16.5.10/24"): addr("172.16.5.255")}},
			{Name: "lo", Index: 1, Kind: "device", Up: true, MTU: 65536, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}},
		}, extra...),
		Routes: []model.Route{
			{Dst: pfx("0.0.0.0/0"), Gw: addr("198.51.100.126"), Dev: "eth0", Proto: 3},
			{Dst: pfx("198.51.100.0/25"), Dev: "eth0", Src: addr("198.51.100.1"), Proto: 2, Scope: 253},
			{Dst: pfx("172.16.5.0/24"), Dev: "eth1", Src: addr("172.16.5.10"), Proto: 2, Scope: 253},
			{Dst: pfx("172.17.0.0/16"), Gw: addr("172.16.5.1"), Dev: "eth1", Proto: 4},
		},
		BridgeNFCallIPTables: true,
	}
	Canonical(&h)
	return h
}
