package e2e

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
)

// b6Listen opens an unconnected UDP socket in ns on addr:port; unconnected so
// that an ICMPv6 error for its own datagram does not close it.
func b6Listen(l *Lab, ns string, addrport string) *net.UDPConn {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addrport)))
		return
	}); err != nil {
		l.t.Fatalf("listen udp %s in %s: %v", addrport, ns, err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// b6Got reads from c until a datagram with payload want arrives from from,
// or a short timeout.
func b6Got(c *net.UDPConn, from netip.AddrPort, want string) bool {
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	for {
		k, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) == from && string(buf[:k]) == want {
			return true
		}
	}
}

// b6Send sends payload from c to addrport, a few times (the first may wait
// for neighbour discovery).
func b6Send(l *Lab, c *net.UDPConn, addrport, payload string) {
	l.t.Helper()
	for range 3 {
		if _, err := c.WriteToUDPAddrPort([]byte(payload), netip.MustParseAddrPort(addrport)); err != nil {
			l.t.Logf("send %s: %v", addrport, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIPv6SpoofedReplyFromAnotherNetwork: a guest of one network (an
// unrestricted port: attached without --ip, no lease) sends IPv6 with an
// internet host's source address, as a reply to a flow a guest of another
// network has open with that host. IPv6 has no rp_filter, and the other
// network's to-chain accepts ct state established before it asks where the
// packet came from: the spoofed reply must still not get through, neither
// to a routed guest nor, through the NAT66 mapping on the uplink's address,
// to a nat guest.
func TestIPv6SpoofedReplyFromAnotherNetwork(t *testing.T) {
	l := newLab(t)
	host, inet := v6Host(l)
	l.Guestnet(host, "apply", l.Spec(fw6Spec))
	g1 := guest6(l, host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1", "fd42:99::10/64", "fd42:99::1")
	g3 := guest6(l, host, "other", "g3", "vg3", "10.98.0.10/24", "10.98.0.1", "fd42:98::10/64", "fd42:98::1")
	g4 := l.NS("g4")
	l.Veth(g4, "eth0", "", host, "vg4", "")
	l.Guestnet(host, "attach", "dmz", "vg4")
	l.must("ip", "-n", g4, "addr", "add", "2001:db8:71::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", g4, "-6", "route", "add", "default", "via", "2001:db8:71::1")
	l.must("ip", "-n", inet, "-6", "route", "add", "2001:db8:71::/64", "via", "2001:db8:ff:1::1")
	// The attacker g3 owns the far host's address on its lo, so its
	// socket can send from it (out of its default route, to the host).
	l.must("ip", "-n", g3, "addr", "add", "2001:db8:ff::2/128", "dev", "lo", "nodad")
	far := netip.MustParseAddrPort("[2001:db8:ff::2]:9000")
	b6Listen(l, inet, far.String()) // the far end takes the guests' datagrams silently
	spoof := b6Listen(l, g3, far.String())

	// The victims open their flows to the far host.
	routed := b6Listen(l, g4, "[2001:db8:71::10]:7000")
	b6Send(l, routed, far.String(), "out")
	natted := b6Listen(l, g1, "[fd42:99::10]:7001")
	b6Send(l, natted, far.String(), "out")
	quiet := b6Listen(l, g4, "[2001:db8:71::10]:7002") // no flow: the control

	l.t.Logf("conntrack in the host:\n%s", l.In(host, "conntrack", "-L", "-f", "ipv6"))
	try := func(dst string, c *net.UDPConn, payload string) func() bool {
		return func() bool { b6Send(l, spoof, dst, payload); return b6Got(c, far, payload) }
	}
	l.matrix("spoofed IPv6 reply | want | got", []check{
		{"other network's guest as 2001:db8:ff::2 -> routed guest, no flow", false, try("[2001:db8:71::10]:7002", quiet, "a")},
		{"other network's guest as 2001:db8:ff::2 -> routed guest's open flow", false, try("[2001:db8:71::10]:7000", routed, "b")},
		{"other network's guest as 2001:db8:ff::2 -> nat guest's flow (uplink address)", false, try("[2001:db8:ff:1::1]:7001", natted, "c")},
		{"the far host itself -> routed guest's open flow (a real reply)", true, func() bool {
			c := b6Listen(l, inet, "[2001:db8:ff::2]:9001")
			b6Send(l, routed, "[2001:db8:ff::2]:9001", "out")
			b6Send(l, c, "[2001:db8:71::10]:7000", "d")
			return b6Got(routed, netip.MustParseAddrPort("[2001:db8:ff::2]:9001"), "d")
		}},
	})
	// Proof the block is the order of guestnet's rules: with the replies
	// accepted first again (by hand), the spoofed reply gets in.
	l.In(host, "nft", "insert", "rule", "inet", "guestnet", "to-dmz", "ct", "state", "established,related", "accept")
	l.expect("same spoof into the routed flow, replies accepted first by hand", true, try("[2001:db8:71::10]:7000", routed, "e")())
}

// TestRepliesFromAnOpenNetwork: an open network has no to-chain, so other
// networks' guests may open connections into it; its replies come back
// through their to-chains, which now reject other guest bridges before
// they accept replies (TestIPv6SpoofedReplyFromAnotherNetwork): the open
// network's bridge is named there, and its guests still cannot open
// connections the other way.
func TestRepliesFromAnOpenNetwork(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+"  lab:\n    mode: open\n    bridge: gopen0\n    ipv4: 10.99.2.1/24\n"))
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "lab", "g2", "vg2", "10.99.2.10/24", "10.99.2.1")
	l.Serve(g1, "10.99.0.10:8080")
	l.Serve(g2, "10.99.2.10:8080")
	l.matrix("open network | want | got", []check{
		{"nat guest -> open network's guest (tcp: the reply comes back)", true, func() bool { _, err := l.dialQuick(g1, "10.99.2.10:8080"); return err == nil }},
		{"open network's guest -> nat guest", false, func() bool { _, err := l.dialQuick(g2, "10.99.0.10:8080"); return err == nil }},
	})
}
