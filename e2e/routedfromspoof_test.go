package e2e

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
)

// TestRoutedFromSpoof (break17): routed_from trusts a source address, so
// it must trust it only on the interface the host routes that address
// through. An outsider on another LAN (10.95.0.10, fd95::10) that sends
// with a routed_from source (10.94.0.99, fd94::99) must not reach the
// guest: IPv6 has no rp_filter, and IPv4's is off or loose on many hosts
// (here: off, the namespace's default). UDP, because a blind one-way
// datagram is all such a sender needs (the reply goes to the real owner of
// the address). Control: the real peer's datagrams arrive, over both
// families, so the listener and the routes work.
func TestRoutedFromSpoof(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	peer, out := l.NS("peer"), l.NS("outsider")
	l.Veth(host, "lan0", "10.94.0.1/24", peer, "eth0", "10.94.0.10/24")
	l.Veth(host, "lan1", "10.95.0.1/24", out, "eth0", "10.95.0.10/24")
	l.must("ip", "-n", host, "addr", "add", "fd94::1/64", "dev", "lan0", "nodad")
	l.must("ip", "-n", peer, "addr", "add", "fd94::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", host, "addr", "add", "fd95::1/64", "dev", "lan1", "nodad")
	l.must("ip", "-n", out, "addr", "add", "fd95::10/64", "dev", "eth0", "nodad")
	// The outsider owns the spoofed addresses itself, so its kernel sends
	// from them; the host routes them to lan0 (the peer's LAN), not to it.
	l.must("ip", "-n", out, "addr", "add", "10.94.0.99/32", "dev", "lo")
	l.must("ip", "-n", out, "addr", "add", "fd94::99/128", "dev", "lo", "nodad")
	for _, r := range [][]string{
		{peer, "10.91.0.0/24", "10.94.0.1"}, {peer, "fd91::/64", "fd94::1"},
		{out, "10.91.0.0/24", "10.95.0.1"}, {out, "fd91::/64", "fd95::1"},
	} {
		l.must("ip", "-n", r[0], "route", "add", r[1], "via", r[2])
	}
	l.Guestnet(host, "apply", l.Spec(routedFromSpec))
	g := l.Guest(host, "default", "g", "vg1", "10.91.0.10/24", "10.91.0.1")
	l.must("ip", "-n", g, "addr", "add", "fd91::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", g, "-6", "route", "add", "default", "via", "fd91::1")
	waitUntil(t, "gnat0's and the guest's IPv6 addresses leave DAD", 10*time.Second, func() bool {
		a := l.In(host, "ip", "-6", "addr", "show", "dev", "gnat0") + l.In(g, "ip", "-6", "addr", "show", "dev", "eth0")
		return strings.Contains(a, "fd91::1/64") && strings.Contains(a, "fe80:") && !strings.Contains(a, "tentative")
	})
	t.Logf("host rp_filter: all=%s lan1=%s", strings.TrimSpace(l.In(host, "sysctl", "-n", "net.ipv4.conf.all.rp_filter")), strings.TrimSpace(l.In(host, "sysctl", "-n", "net.ipv4.conf.lan1.rp_filter")))

	rx4 := listenUDP(t, g, "10.91.0.10:5353")
	rx6 := listenUDP(t, g, "[fd91::10]:5353")
	// A few tries each: the first datagram may wait on neighbour discovery.
	arrives := func(from, src string, dst string, rx *net.UDPConn) bool {
		for i := 0; i < 5; i++ {
			sendUDP(t, from, src, dst, "hello from "+src)
			if got := recvUDP(rx, 400*time.Millisecond); got == "hello from "+src {
				return true
			}
		}
		return false
	}
	l.matrix("routed_from [10.94.0.0/24, fd94::/64] | allowed | happened", []check{
		{"peer 10.94.0.10 -> guest (udp)", true, func() bool { return arrives(peer, "10.94.0.10", "10.91.0.10:5353", rx4) }},
		{"peer fd94::10 -> guest (udp)", true, func() bool { return arrives(peer, "fd94::10", "[fd91::10]:5353", rx6) }},
		{"outsider as 10.94.0.99 (on lan1) -> guest (udp)", false, func() bool { return arrives(out, "10.94.0.99", "10.91.0.10:5353", rx4) }},
		{"outsider as fd94::99 (on lan1) -> guest (udp)", false, func() bool { return arrives(out, "fd94::99", "[fd91::10]:5353", rx6) }},
	})
}

// listenUDP opens a UDP socket in ns (it stays in ns once made).
func listenUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return
	}); err != nil {
		t.Fatalf("listen on udp %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUDP sends one datagram from src (an address of ns) to dst.
func sendUDP(t *testing.T, ns, src, dst, msg string) {
	t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Do(func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)),
			net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	}); err != nil {
		t.Fatalf("send udp %s -> %s in %s: %v", src, dst, ns, err)
	}
}

// recvUDP returns the next datagram's text, or "" when none comes in time.
func recvUDP(c *net.UDPConn, wait time.Duration) string {
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}
