package e2e

import (
	"net/netip"
	"slices"
	"testing"
)

// TestAntiSpoofingPortReuse is the breaker's sequence (libvirt reuses
// vnetN names, so it happens without an attacker): VM P gets a lease on
// vnet0; its TAP is deleted; VM Q gets a new link named vnet0; P comes back
// on vnet1. The new vnet0 must not inherit P's binding (Q may not send as
// P, and is not locked to P's MAC), and P's DHCP on vnet1 must be answered
// and bind vnet1.
func TestAntiSpoofingPortReuse(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Serve_(host, l.Spec(stealSpec))
	const pMAC, qMAC = "02:00:00:00:0a:0a", "02:00:00:00:0b:0b"
	udhcpc := func(ns string) (string, error) {
		return l.tryIn(ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", l.clientScript())
	}
	p := l.dhcpGuest(host, "default", "p", "vnet0", pMAC)
	if out, err := udhcpc(p); err != nil {
		t.Fatalf("P's first lease: %v\n%s", err, out)
	}
	pip := netip.MustParseAddr(l.addrOf(p))
	waitFor(t, "vnet0 bound to P's lease", func() bool {
		g := l.guards(host)["vnet0"]
		return g.State == "bound" && slices.Contains(g.MACs, pMAC)
	})

	l.In(host, "ip", "link", "del", "vnet0") // VM P stops: its TAP goes
	q := l.dhcpGuest(host, "default", "q", "vnet0", qMAC)
	if out, err := udhcpc(q); err != nil {
		t.Errorf("Q on the new vnet0 got no lease: %v\n%s", err, out)
	}
	p2 := l.dhcpGuest(host, "default", "p2", "vnet1", pMAC) // P starts again, on vnet1
	out, err := udhcpc(p2)
	if err != nil {
		t.Errorf("P's DHCP on vnet1 was not answered: %v\n%s", err, out)
	}
	if got := l.addrOf(p2); got != pip.String() {
		t.Errorf("P on vnet1 has address %q, want its lease %s", got, pip)
	}
	waitFor(t, "vnet1 bound to P's lease", func() bool {
		g := l.guards(host)["vnet1"]
		return g.State == "bound" && slices.Contains(g.MACs, pMAC) && slices.Contains(g.IPs, pip)
	})
	g := l.guards(host)["vnet0"]
	if slices.Contains(g.MACs, pMAC) || slices.Contains(g.IPs, pip) {
		t.Errorf("the new vnet0 (VM Q) inherited P's binding: %+v", g.PortBinding)
	}
	if g.State == "bound" && !slices.Contains(g.MACs, qMAC) {
		t.Errorf("the new vnet0 is bound, but not to Q's MAC: %+v", g.PortBinding)
	}
	if !l.Ping(p2, "10.99.0.1") {
		t.Error("P on vnet1 cannot ping the gateway")
	}
	if !l.Ping(q, "10.99.0.1") {
		t.Error("Q on the new vnet0 cannot ping the gateway")
	}
}
