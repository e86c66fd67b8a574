package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// TestScopedExport: a nat network with routed_from announces its subnet
// to the peers inside routed_from and to no other; a routed network's
// subnet goes to every peer. A (AS 65001) peers with B and C over eBGP;
// routed_from holds B's address alone, then C's alone (a running
// speaker's new policy is applied to what the peers already have). A
// guest's host route inside the nat subnet (a stretched network's /32)
// has the subnet's audience.
func TestScopedExport(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB, kC := hostNS(t), hostNS(t), hostNS(t)
	nets := []model.Network{
		{Name: "lan", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.91.0.1/24"), RoutedFrom: []netip.Prefix{pfx("127.0.0.2/32")}},
		{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv4: pfx("10.92.0.1/24")},
		{Name: "plain", Mode: model.NAT, Bridge: "gnat1", IPv4: pfx("10.93.0.1/24")},
	}
	a := New(kA, testLog(t, "A"))
	if err := a.Scope(model.Scoped(nets)); err != nil {
		t.Fatal(err)
	}
	if err := a.Configure(context.Background(), conf(port, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(false)
	host := pfx("10.91.0.5/32")
	if err := a.Announce(append(model.Announced(nets), host)); err != nil {
		t.Fatal(err)
	}
	b := start(t, kB, conf(port, 2, 1), "B")
	defer b.Stop(false)
	c := start(t, kC, conf(port, 3, 1), "C")
	defer c.Stop(false)
	waitFor(t, "A's sessions established", 30*time.Second, func() (bool, string) { return established(a) })
	if got, want := fmt.Sprint(a.Status().Announced), "[10.91.0.0/24 10.91.0.5/32 10.92.0.0/24]"; got != want {
		t.Errorf("A announces %s, want %s (plain nat's subnet is masqueraded, never announced)", got, want)
	}
	waitFor(t, "B, in routed_from, installs both subnets and the host route", 10*time.Second, tableIs(t, kB,
		"10.91.0.0/24 via 127.0.0.1 dev v0 metric 186", "10.91.0.5/32 via 127.0.0.1 dev v0 metric 186", "10.92.0.0/24 via 127.0.0.1 dev v0 metric 186"))
	waitFor(t, "C, outside routed_from, installs the routed one alone", 10*time.Second, tableIs(t, kC,
		"10.92.0.0/24 via 127.0.0.1 dev v0 metric 186"))
	// Settled: C still has no route to the nat subnet after B has both.
	if got := bgpTable(t, kC); len(got) != 1 {
		t.Errorf("C's table %q: the nat subnet or its host route leaked past routed_from", got)
	}

	nets[0].RoutedFrom = []netip.Prefix{pfx("127.0.0.3/32")}
	if err := a.Scope(model.Scoped(nets)); err != nil {
		t.Fatal(err)
	}
	if err := a.Announce(append(model.Announced(nets), host)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B, out of routed_from now, loses the nat subnet", 10*time.Second, tableIs(t, kB,
		"10.92.0.0/24 via 127.0.0.1 dev v0 metric 186"))
	waitFor(t, "C, in routed_from now, gains it and the host route", 10*time.Second, tableIs(t, kC,
		"10.91.0.0/24 via 127.0.0.1 dev v0 metric 186", "10.91.0.5/32 via 127.0.0.1 dev v0 metric 186", "10.92.0.0/24 via 127.0.0.1 dev v0 metric 186"))
}
