package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
)

// dhcpReplies lists the DHCP server replies that reach eth0 of a
// namespace as "TYPE for MAC to DST" (a frameCapture underneath).
type dhcpReplies struct{ c *frameCapture }

func (l *Lab) captureDHCP(ns string) *dhcpReplies { return &dhcpReplies{l.captureFrames(ns)} }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *dhcpReplies) list() []string {
	var out []string
	for _, s := range r.c.list() {
		out = append(out, fmt.Sprintf("%s for %s to %s", s.typ, s.chaddr, s.ipDst))
	}
	return out
}

const twoDHCPSpec = `
networks:
  a:
    mode: nat
    bridge: gna
    ipv4: 10.99.0.1/24
    dhcp: {range: [10.99.0.100-10.99.0.199]}
  b:
    mode: nat
    bridge: gnb
    ipv4: 10.98.0.1/24
    dhcp: {range: [10.98.0.100-10.98.0.199]}
  c:
    mode: nat
    bridge: gnc
    ipv4: 10.97.0.1/24
`

// TestDHCPOneSocket: one socket (0.0.0.0:67 with IP_PKTINFO) serves every
// network. Real udhcpc clients on two networks at once each get an
// address of their own network, and each guest sees the server's replies
// for itself only (to its MAC: TestDHCPUnicastReplies): a reply leaves by the bridge
// its request came in on, and only there. A client on a bridge without
// DHCP and one on the uplink get nothing; their requests are counted.
func TestDHCPOneSocket(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	addr := fmt.Sprintf("127.0.0.1:%d", 19000+(os.Getpid()+500)%1000)
	l.Serve_(host, l.Spec(twoDHCPSpec), "--metrics", addr)
	macA, macB := "02:00:00:00:0a:01", "02:00:00:00:0b:01"
	ga := l.dhcpGuest(host, "a", "ga", "vga", macA)
	gb := l.dhcpGuest(host, "b", "gb", "vgb", macB)
	gc := l.dhcpGuest(host, "c", "gc", "vgc", "02:00:00:00:0c:01")
	if n := strings.Count(l.In(host, "ss", "-Hulan", "sport", "=", ":67"), "\n"); n != 1 {
		t.Errorf("UDP sockets on port 67 in the host: %d, want 1:\n%s", n, l.In(host, "ss", "-ulanp", "sport", "=", ":67"))
	}
	capA, capB := l.captureDHCP(ga), l.captureDHCP(gb)
	hook := l.clientScript()
	udhcpc := []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook}
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i, g := range []string{ga, gb, gc, inet} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := udhcpc
			if g == inet {
				args = []string{"busybox", "udhcpc", "-i", "a0", "-n", "-q", "-t", "3", "-T", "1", "-s", hook}
			} else if g == gc {
				args = []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", hook}
			}
			outs[i], _ = l.tryIn(g, args...)
		}()
	}
	wg.Wait()
	a, _ := netip.ParseAddr(l.addrOf(ga))
	b, _ := netip.ParseAddr(l.addrOf(gb))
	if !netip.MustParsePrefix("10.99.0.0/24").Contains(a) || !netip.MustParsePrefix("10.98.0.0/24").Contains(b) {
		t.Errorf("addresses: a %s, b %s; want 10.99.0.x and 10.98.0.x\nudhcpc a: %s\nudhcpc b: %s", a, b, outs[0], outs[1])
	}
	if c := l.addrOf(gc); c != "" {
		t.Errorf("a guest on gnc (no dhcp:) got %s", c)
	}
	if up, _ := l.tryIn(inet, "ip", "-4", "-o", "addr", "show", "dev", "a0"); !strings.Contains(up, "198.51.100.126/25") || strings.Count(up, "inet ") != 1 {
		t.Errorf("the uplink's peer asked for a lease and its address changed: %s", up)
	}
	capA.c.close() // each reads what is queued, then stops
	capB.c.close()
	for _, c := range []struct {
		name, mine, other string
		cap               *dhcpReplies
	}{{"a", macA, macB, capA}, {"b", macB, macA, capB}} {
		seen := c.cap.list()
		var own int
		for _, s := range seen {
			if strings.Contains(s, "for "+c.other) {
				t.Errorf("the guest on %s saw a reply for the other network's client: %s", c.name, s)
			}
			if strings.Contains(s, "for "+c.mine) {
				own++
			}
		}
		// control: the capture does see replies (OFFER and ACK)
		if own < 2 {
			t.Errorf("the guest on %s saw %d replies for itself, want OFFER and ACK: %q", c.name, own, seen)
		}
	}
	body := metricsWith(t, addr, "guestnet_dhcp_foreign_interface_total")
	var foreign int
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "guestnet_dhcp_foreign_interface_total ") {
			fmt.Sscan(strings.TrimPrefix(line, "guestnet_dhcp_foreign_interface_total "), &foreign)
		}
	}
	// gnc's client and the uplink's peer each sent 3 DISCOVERs: all reach
	// the socket (the firewall lets DHCP to the host in), none is answered.
	if foreign < 6 {
		t.Errorf("guestnet_dhcp_foreign_interface_total = %d, want the 6 DISCOVERs of gnc and the uplink\nudhcpc on gnc: %s\nudhcpc on the uplink: %s", foreign, outs[2], outs[3])
	}
	t.Logf("requests ignored on interfaces without DHCP: %d; replies seen by a: %q, by b: %q", foreign, capA.list(), capB.list())
}
