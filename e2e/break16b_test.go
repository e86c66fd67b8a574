package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestStretchedSameHostName: an operator gives two hosts the same
// leases.host (a copied spec). Both would believe they own the same
// blocks. The second host gives no address and its status says why; the
// first keeps serving. Then serve on the first is killed (-9) and started
// again: it takes its own name over at once (its instance is kept in its
// state folder) and a new guest gets an address without waiting for its
// liveness key to lapse.
func TestStretchedSameHostName(t *testing.T) {
	b := newBGPLab(t, 2)
	etcdNS := b.NS("etcd")
	b.OnLAN(etcdNS, "10.10.0.201/24")
	b.Proc("etcd", etcdNS, "etcd", "--name", "e1", "--data-dir", t.TempDir()+"/etcd",
		"--listen-client-urls", "http://10.10.0.201:2379", "--advertise-client-urls", "http://10.10.0.201:2379",
		"--listen-peer-urls", "http://10.10.0.201:2380", "--initial-advertise-peer-urls", "http://10.10.0.201:2380",
		"--initial-cluster", "e1=http://10.10.0.201:2380")
	waitUntil(t, "etcd to listen", 20*time.Second, func() bool {
		c, err := dialIn(etcdNS, "10.10.0.201:2379", time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	hook := b.clientScript()
	h1, h2 := b.Hosts[0], b.Hosts[1]
	same := func(h, other *bgpHost) string {
		return strings.Replace(stretchDHCPSpec(h, other), "  block: 16\n", "  block: 16\n  host: rack1\n", 1)
	}
	lease := func(h *bgpHost, n int, tries string) (string, string) {
		g := b.dhcpGuest(h.NS, "stretch", fmt.Sprintf("g%d%d", h.N, n), fmt.Sprintf("vg%d%d", h.N, n), fmt.Sprintf("52:54:00:60:%02d:%02d", h.N, n))
		out, _ := b.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", tries, "-T", "1", "-s", hook)
		return b.addrOf(g), out
	}
	spec1 := b.Spec(same(h1, h2))
	h1.D = b.Serve_(h1.NS, spec1)
	a1, out := lease(h1, 1, "8")
	if a1 == "" {
		t.Fatalf("guest behind %s got no address:\n%s", h1.Addr, out)
	}
	h2.D = b.Serve_(h2.NS, b.Spec(same(h2, h1)))
	if a, _ := lease(h2, 1, "4"); a != "" {
		t.Errorf("the second host named rack1 gave %s (the first gave %s from the same blocks)", a, a1)
	}
	status := b.Guestnet(h2.NS, "status")
	if doc, _, _ := b.Run(h2.NS, "doctor"); !strings.Contains(doc, "held in etcd by another guestnet") {
		t.Errorf("doctor on the second host named rack1 does not name the clash:\n%s", doc)
	}
	if !strings.Contains(status, "held in etcd by another guestnet") {
		t.Errorf("status of the second host named rack1 does not say why it gives no address:\n%s", status)
	}
	h1.D.Kill()
	start := time.Now()
	h1.D = b.Serve_(h1.NS, spec1)
	a2, out := lease(h1, 2, "8")
	if a2 == "" || a2 == a1 {
		t.Fatalf("after kill -9 and restart, a new guest behind %s got %q (the first has %s):\n%s", h1.Addr, a2, a1, out)
	}
	t.Logf("first host: %s, then %s %v after its restart; the second host refused (status names the clash)", a1, a2, time.Since(start).Round(100*time.Millisecond))
	leases := b.Guestnet(h1.NS, "leases")
	if !strings.Contains(leases, a1) || !strings.Contains(leases, a2) {
		t.Errorf("leases after the restart lack %s or %s:\n%s", a1, a2, leases)
	}
}
