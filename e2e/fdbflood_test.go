package e2e

import (
	"crypto/rand"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/netns"
)

// macFlood sends n broadcast frames out of eth0 of ns, each from a random
// locally administered source MAC: the bridge learns an entry per frame,
// and the kernel sends a notification for each.
func (l *Lab) macFlood(ns string, n int) {
	l.t.Helper()
	h, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer h.Close()
	err = h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		f := make([]byte, 60)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		f[12], f[13] = 0x88, 0xb5 // local experimental ethertype
		for range n {
			rand.Read(f[6:12])
			f[6] = 0x02
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		l.t.Fatalf("MAC flood from %s: %v", ns, err)
	}
}

// TestAntiSpoofingFDBFlood is the breaker's fdbflood.sh: an unrestricted
// guest floods the bridge with 50,000 random source MACs, which overflowed
// the daemon's subscription to forwarding-database notifications and
// ended it for good. After it, a MAC that moves from port va to port vb and leases there must be
// bound to vb (the daemon still follows the bridge), not to va where its
// stale cache entry said it was; the daemon logs the lost subscription,
// and a move after that is followed too (it subscribed again).
func TestAntiSpoofingFDBFlood(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	d := l.Serve_(host, l.Spec(stealSpec))
	a := l.dhcpGuest(host, "default", "a", "va", "")
	b := l.dhcpGuest(host, "default", "b", "vb", "")
	f := l.dhcpGuest(host, "default", "f", "vfl", "") // unrestricted: never leases

	br := hwaddr(t, strings.Fields(l.In(host, "cat", "/sys/class/net/gnat0/address"))[0])
	server := netip.MustParseAddr("10.99.0.1")
	udhcpc := func(g string) {
		t.Helper()
		if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", l.clientScript()); err != nil {
			t.Fatalf("DHCP from %s: %v\n%s", g, err, out)
		}
	}
	// move leases mac on va, releases it there, then leases it on vb.
	move := func(mac string) {
		t.Helper()
		for _, g := range []string{a, b} {
			l.must("ip", "-n", g, "link", "set", "eth0", "down")
			l.must("ip", "-n", g, "link", "set", "eth0", "address", mac)
		}
		l.must("ip", "-n", a, "link", "set", "eth0", "up")
		udhcpc(a)
		ip := netip.MustParseAddr(l.addrOf(a))
		hw := hwaddr(t, mac)
		l.rawSend(a, frame{hw, br, ip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, hw, dhcpv4.WithClientIP(ip.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server.AsSlice()))), 0})
		l.must("ip", "-n", a, "link", "set", "eth0", "down") // sends nothing more from mac
		waitFor(t, mac+" released", func() bool { _, has := l.lease(host, "default", mac); return !has })
		l.must("ip", "-n", b, "link", "set", "eth0", "up")
		udhcpc(b)
	}
	boundTo := func(mac string) []string {
		var ports []string
		for port, g := range l.guards(host) {
			if slices.Contains(g.MACs, mac) {
				ports = append(ports, port)
			}
		}
		slices.Sort(ports)
		return ports
	}
	const m1, m2 = "02:00:00:00:5e:01", "02:00:00:00:5e:02"
	move(m1)
	waitFor(t, m1+" bound to vb before the flood", func() bool { return slices.Equal(boundTo(m1), []string{"vb"}) })

	start := time.Now()
	l.macFlood(f, 50000)
	t.Logf("50,000 frames from random source MACs in %v; the bridge learned %d entries",
		time.Since(start).Round(time.Millisecond), strings.Count(l.In(host, "bridge", "fdb", "show", "br", "gnat0"), "\n"))
	time.Sleep(2 * time.Second)

	move(m2)
	if p := l.fdbPort(host, "gnat0", m2); p != "vb" {
		t.Fatalf("the bridge has %s on %q, want vb: the move did not happen", m2, p)
	}
	waitFor(t, m2+" bound to vb after the flood", func() bool { return slices.Equal(boundTo(m2), []string{"vb"}) })
	// The daemon's buffer holds the flood's notifications; the flood
	// port's 50,000 entries going at once (its link down: the kernel
	// deletes them in one loop) overflow it. The daemon says so and
	// subscribes again; a move after that is followed.
	l.must("ip", "-n", host, "link", "set", "vfl", "down")
	const lostLine = "lost the bridges' forwarding-database notifications"
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.log.String(), lostLine); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("in 30 s, the daemon did not say it lost its subscription to the bridges' forwarding databases")
		}
	}
	time.Sleep(time.Second)
	const m3 = "02:00:00:00:5e:03"
	move(m3)
	waitFor(t, m3+" bound to vb after the daemon subscribed again", func() bool { return slices.Equal(boundTo(m3), []string{"vb"}) })
}
