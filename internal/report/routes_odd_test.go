package report

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestRoutesOddPeers: --peer and --via as a careless operator gives them.
// Each either prints a route a peer host can use, or says why not: never
// a route through loopback, through the host's own address as seen from
// itself, through a link-local address without an interface, or an empty
// answer.
func TestRoutesOddPeers(t *testing.T) {
	h := host
	h.Links = append([]model.Link(nil), host.Links...)
	h.Links[0].Addrs = append(h.Links[0].Addrs, netip.MustParsePrefix("fd10:10::1/64"))
	h.Links[1].Addrs = append(h.Links[1].Addrs, netip.MustParsePrefix("2001:db8:ff::1/64"))
	h.Links = append(h.Links, model.Link{Name: "lo", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}})
	h.Routes = append(h.Routes, model.Route{Dst: netip.MustParsePrefix("::/0"), Dev: "eth1"})
	dual := lab
	dual.IPv6 = netip.MustParsePrefix("fd42:1::1/64")
	nat6 := model.Network{Name: "n6", Mode: model.NAT, Bridge: "gn6", IPv6: netip.MustParsePrefix("fd42:6::1/64")}
	cases := []struct {
		n          model.Network
		via, peer  string
		want, fail string // one of them
	}{
		// v4-mapped addresses are the IPv4 address they map.
		{n: dual, peer: "::ffff:10.10.0.7", want: "ip route add 10.99.1.0/24 via 10.10.0.1\nip -6 route add fd42:1::/64 via fd10:10::1"},
		{n: dual, via: "::ffff:10.10.0.9", want: "ip route add 10.99.1.0/24 via 10.10.0.9\nip -6 route add fd42:1::/64 via 2001:db8:ff::1"},
		// A zone names the interface that faces a link-local peer.
		{n: dual, peer: "fe80::2%eth0", want: "ip route add 10.99.1.0/24 via 10.10.0.1\nip -6 route add fd42:1::/64 via fd10:10::1"},
		{n: dual, peer: "fe80::2", fail: "--peer fe80::2 is link-local and names no interface: write fe80::2%IFACE"},
		{n: dual, peer: "fe80::2%eth9", fail: "--peer fe80::2%eth9: no interface eth9"},
		{n: dual, peer: "::1", fail: "--peer ::1 is a loopback address"},
		{n: dual, peer: "127.0.0.1", fail: "--peer 127.0.0.1 is a loopback address"},
		{n: dual, peer: "::", fail: "--peer :: is not an address of a host"},
		{n: dual, peer: "2001:db8:ff::1", fail: "--peer 2001:db8:ff::1 is this host's own address (on eth1)"},
		{n: dual, peer: "fd42:1::5", fail: "--peer fd42:1::5 is inside network lab's own prefix fd42:1::/64"},
		{n: dual, via: "fe80::1", fail: "--via fe80::1 is link-local"},
		{n: dual, via: "::1", fail: "--via ::1 is a loopback address"},
		{n: dual, via: "fd42:1::1", fail: "--via fd42:1::1 is inside network lab's own prefix fd42:1::/64"},
		{n: nat6, fail: "routes n6: nothing to route: network n6 is nat and has only IPv6, which leaves masqueraded (NAT66)"},
	}
	for _, c := range cases {
		var via, peer netip.Addr
		if c.via != "" {
			via = netip.MustParseAddr(c.via)
		}
		if c.peer != "" {
			peer = netip.MustParseAddr(c.peer)
		}
		got, err := Routes(c.n, h, via, peer, "linux")
		switch {
		case c.fail == "" && (err != nil || strings.Join(got, "\n") != c.want):
			t.Errorf("%s via %q peer %q: got %q %v, want %q", c.n.Name, c.via, c.peer, got, err, c.want)
		case c.fail != "" && (err == nil || !strings.Contains(err.Error(), c.fail)):
			t.Errorf("%s via %q peer %q: got %q %v, want the error %q", c.n.Name, c.via, c.peer, got, err, c.fail)
		}
	}
}
