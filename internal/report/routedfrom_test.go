package report

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestRoutesRoutedFrom: a nat network with routed_from prints the return
// route for the hosts in each prefix, through the address on the
// interface that holds it (eth0 for 10.10.0.0/24, fd10:10::/64), or the
// default route's (eth1) for a prefix no interface holds; a --peer outside
// routed_from is refused.
func TestRoutesRoutedFrom(t *testing.T) {
	h := host
	h.Links = append([]model.Link(nil), host.Links...)
	h.Links[0].Addrs = append(h.Links[0].Addrs, netip.MustParsePrefix("fd10:10::1/64"))
	n := model.Network{Name: "lan", Mode: model.NAT, Bridge: "gnat0",
		IPv4: netip.MustParsePrefix("10.91.0.1/24"), IPv6: netip.MustParsePrefix("fd91::1/64"),
		RoutedFrom: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("fd10:10::/64"), netip.MustParsePrefix("172.20.0.0/16")}}
	cases := []struct {
		peer, os, want string
	}{
		{"", "linux", "# on the hosts in 10.10.0.0/24 (routed_from):\nip route add 10.91.0.0/24 via 10.10.0.1\n" +
			"# on the hosts in fd10:10::/64 (routed_from):\nip -6 route add fd91::/64 via fd10:10::1\n" +
			"# on the hosts in 172.20.0.0/16 (routed_from):\nip route add 10.91.0.0/24 via 198.51.100.1"},
		{"10.10.0.7", "windows", "REM on the hosts in 10.10.0.0/24 (routed_from):\nroute -p add 10.91.0.0 mask 255.255.255.0 10.10.0.1"},
	}
	for _, c := range cases {
		var peer netip.Addr
		if c.peer != "" {
			peer = netip.MustParseAddr(c.peer)
		}
		got, err := Routes(n, h, netip.Addr{}, peer, c.os)
		if err != nil || strings.Join(got, "\n") != c.want {
			t.Errorf("peer %q %s: got\n%s (%v)\nwant\n%s", c.peer, c.os, strings.Join(got, "\n"), err, c.want)
		}
	}
	_, err := Routes(n, h, netip.Addr{}, netip.MustParseAddr("198.51.100.7"), "linux")
	if err == nil || !strings.Contains(err.Error(), "in none of routed_from") {
		t.Errorf("a peer outside routed_from: %v", err)
	}
}
