package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// bgpRoutes are the kernel's routes the speaker owns, as "dst via gw dev".
func bgpRoutes(t *testing.T, k *fake.Kernel) []string {
	t.Helper()
	rs, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if ours(r) {
			out = append(out, r.Dst.String()+" via "+r.Gw.String()+" dev "+r.Dev)
		}
	}
	slices.Sort(out)
	return out
}

// run decides and writes as a pass does, and returns the writes.
func run(t *testing.T, k *fake.Kernel, dests [][]candidate, gone map[netip.Addr]string, keep map[netip.Prefix]bool) ([]Learned, []plan.Action) {
	t.Helper()
	routes, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	pol := Policy{Import: model.DefaultImport, Protect: []netip.Prefix{pfx("10.71.0.0/24")}}
	learned, want := decide(dests, pol, routes, gone)
	acts := reconcile(want, routes, func(r model.Route) bool { return keep[r.Dst] })
	for _, a := range acts {
		if err := k.Do(a); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	return learned, acts
}

func ops(acts []plan.Action) []string {
	var s []string
	for _, a := range acts {
		s = append(s, a.String())
	}
	return s
}

// TestInstallDecisions runs the install decisions over the fake kernel:
// BaseHost's LAN is 172.16.5.0/24 on eth1; peers A (.2), B (.3) and C (.4).
func TestInstallDecisions(t *testing.T) {
	k := &fake.Kernel{Host: fake.BaseHost()}
	pre := []plan.Action{
		// a previous speaker's route, and someone's static one with BGP's metric
		{Op: plan.OpRouteReplace, Route: model.Route{Dst: pfx("10.50.0.0/24"), Gw: addr("172.16.5.7"), Dev: "eth1", Proto: model.ProtoBGP, Metric: model.BGPMetric}},
		{Op: plan.OpRouteAdd, Route: model.Route{Dst: pfx("10.60.0.0/24"), Gw: addr("172.16.5.9"), Dev: "eth1", Proto: 4, Metric: model.BGPMetric}},
		// FRR's zebra on the same host: protocol bgp too, its metric 20
		{Op: plan.OpRouteAdd, Route: model.Route{Dst: pfx("10.70.0.0/24"), Gw: addr("172.16.5.8"), Dev: "eth1", Proto: model.ProtoBGP, Metric: 20}},
	}
	for _, a := range pre {
		if err := k.Do(a); err != nil {
			t.Fatal(err)
		}
	}
	A, B, C := addr("172.16.5.2"), addr("172.16.5.3"), addr("172.16.5.4")
	path := func(p string, peer netip.Addr, stale bool) candidate {
		return candidate{Prefix: pfx(p), NextHop: peer, Peer: peer, Stale: stale}
	}
	dests := [][]candidate{
		{path("10.40.0.0/24", A, false)},
		{path("10.60.0.0/24", A, false)},
		{path("10.41.0.0/24", B, true), path("10.41.0.0/24", A, false)},
		{path("10.42.0.0/24", B, true)},
		{path("10.43.0.0/24", C, true)},
		{path("0.0.0.0/0", A, false)},
		{path("10.71.0.0/24", C, false)},
	}
	gone := map[netip.Addr]string{B: "B went silent"}
	learned, acts := run(t, k, dests, gone, map[netip.Prefix]bool{pfx("10.50.0.0/24"): true})

	want := []string{
		"10.40.0.0/24 via 172.16.5.2 dev eth1",
		"10.41.0.0/24 via 172.16.5.2 dev eth1",
		"10.43.0.0/24 via 172.16.5.4 dev eth1",
		"10.50.0.0/24 via 172.16.5.7 dev eth1", // kept until the takeover ends
	}
	if got := bgpRoutes(t, k); !slices.Equal(got, want) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(acts) != 3 {
		t.Errorf("writes = %q, want the 3 replaces", ops(acts))
	}
	why := map[string]Learned{}
	for _, l := range learned {
		why[l.Prefix.String()] = l
	}
	for p, want := range map[string]struct {
		has     string
		refused bool
	}{
		"10.60.0.0/24": {"in the way", false},
		"10.42.0.0/24": {"B went silent", false},
		"0.0.0.0/0":    {"default route", true},
		"10.71.0.0/24": {"this host's network", true},
	} {
		if l := why[p]; !strings.Contains(l.Why, want.has) || l.Refused != want.refused || l.Installed {
			t.Errorf("%s: %+v, want not installed, why saying %q, refused %v", p, l, want.has, want.refused)
		}
	}
	if l := why["10.42.0.0/24"]; !l.Stale || l.Peer != B {
		t.Errorf("10.42.0.0/24 = %+v, want B's stale path", l)
	}
	if l := why["10.41.0.0/24"]; l.Peer != A || l.Stale || l.Why != "" {
		t.Errorf("10.41.0.0/24 = %+v, want A's path (B's stale one passed over)", l)
	}
	if l := why["10.43.0.0/24"]; l.Peer != C || !l.Stale || l.Why != "" {
		t.Errorf("10.43.0.0/24 = %+v, want C's stale path, kept (C restarts)", l)
	}
	if r := routeTo(t, k, "10.60.0.0/24"); r.Proto != 4 || r.Gw != addr("172.16.5.9") {
		t.Errorf("the static route was touched: %+v", r)
	}

	// Nothing changed: nothing written.
	if _, acts := run(t, k, dests, gone, map[netip.Prefix]bool{pfx("10.50.0.0/24"): true}); len(acts) != 0 {
		t.Errorf("a second pass wrote %q", ops(acts))
	}

	// The best path for 10.40 moves to B; C's paths are withdrawn; the
	// takeover ended; someone deleted 10.41's route.
	if err := k.Do(plan.Action{Op: plan.OpRouteDel, Route: model.Route{Dst: pfx("10.41.0.0/24"), Metric: model.BGPMetric}}); err != nil {
		t.Fatal(err)
	}
	dests = [][]candidate{
		{path("10.40.0.0/24", B, false), path("10.40.0.0/24", A, false)},
		{path("10.41.0.0/24", A, false)},
	}
	_, acts = run(t, k, dests, nil, nil)
	want = []string{
		"10.40.0.0/24 via 172.16.5.3 dev eth1",
		"10.41.0.0/24 via 172.16.5.2 dev eth1",
	}
	if got := bgpRoutes(t, k); !slices.Equal(got, want) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantOps := []string{
		"ip route replace 10.40.0.0/24 via 172.16.5.3 dev eth1 proto 186 metric 186",
		"ip route replace 10.41.0.0/24 via 172.16.5.2 dev eth1 proto 186 metric 186",
		"ip route del 10.43.0.0/24 via 172.16.5.4 dev eth1 proto 186 metric 186",
		"ip route del 10.50.0.0/24 via 172.16.5.7 dev eth1 proto 186 metric 186",
	}
	if got := ops(acts); !slices.Equal(got, wantOps) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantOps, "\n"))
	}
	if r := routeTo(t, k, "10.60.0.0/24"); r.Proto != 4 {
		t.Errorf("the static route was touched: %+v", r)
	}
	if r := routeTo(t, k, "10.70.0.0/24"); r.Proto != model.ProtoBGP || r.Metric != 20 || r.Gw != addr("172.16.5.8") {
		t.Errorf("FRR's route was touched: %+v", r)
	}

	// The LAN's address goes: no next hop is reachable, every route goes.
	if err := k.Do(plan.Action{Op: plan.OpAddrDel, Link: "eth1", Addr: pfx("172.16.5.10/24")}); err != nil {
		t.Fatal(err)
	}
	learned, _ = run(t, k, dests, nil, nil)
	if got := bgpRoutes(t, k); len(got) != 0 {
		t.Errorf("installed with no next hop reachable: %q", got)
	}
	for _, l := range learned {
		if !strings.Contains(l.Why, "not directly reachable") {
			t.Errorf("%s: why = %q", l.Prefix, l.Why)
		}
	}
}

func routeTo(t *testing.T, k *fake.Kernel, dst string) model.Route {
	t.Helper()
	rs, _ := k.Routes()
	for _, r := range rs {
		if r.Dst == pfx(dst) {
			return r
		}
	}
	t.Fatalf("no route to %s", dst)
	return model.Route{}
}
