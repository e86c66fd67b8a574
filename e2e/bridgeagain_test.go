package e2e

import (
	"strings"
	"testing"
)

// TestDHCPOnBridgeMadeAgain: a bridge deleted under the daemon is made
// again by drift repair with a new interface index; the one DHCP socket
// must answer on the new index (the old one maps to nothing), the guest
// keeps its address, and a new guest's offer is checked with ARP on the
// new bridge (the on-demand ARP socket of the old one is closed).
func TestDHCPOnBridgeMadeAgain(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Serve_(host, l.Spec(dhcpSpec))
	hook := l.clientScript()
	g1 := l.dhcpGuest(host, "default", "g1", "vg1", "")
	if out, err := l.tryIn(g1, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
		t.Fatalf("udhcpc before: %v\n%s", err, out)
	}
	before := l.addrOf(g1)
	idx := func() string {
		out, _ := l.tryIn(host, "cat", "/sys/class/net/gnat0/ifindex")
		return strings.TrimSpace(out)
	}
	oldIdx := idx()
	l.In(host, "ip", "link", "del", "gnat0")
	waitFor(t, "gnat0 made again with vg1 in it", func() bool {
		out, err := l.tryIn(host, "ip", "-o", "link", "show", "master", "gnat0")
		return err == nil && len(out) > 0
	})
	if newIdx := idx(); newIdx == oldIdx {
		t.Fatalf("gnat0 kept ifindex %s: the test proves nothing", oldIdx)
	}
	// A renewal from the address it holds (INIT-REBOOT: udhcpc -r asks
	// for it), then a new guest.
	if out, err := l.tryIn(g1, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-r", before, "-s", hook); err != nil {
		t.Fatalf("udhcpc on the bridge made again: %v\n%s", err, out)
	}
	if after := l.addrOf(g1); after != before {
		t.Errorf("the guest had %s, and %s after its bridge was made again", before, after)
	}
	g2 := l.dhcpGuest(host, "default", "g2", "vg2", "")
	if out, err := l.tryIn(g2, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
		t.Fatalf("a new guest on the bridge made again: %v\n%s", err, out)
	}
	if a := l.addrOf(g2); a == "" || a == before {
		t.Errorf("the new guest got %q (the first holds %s)", a, before)
	}
	t.Logf("gnat0 ifindex %s -> %s; g1 kept %s, g2 got %s", oldIdx, idx(), before, l.addrOf(g2))
}
