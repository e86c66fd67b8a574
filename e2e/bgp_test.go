package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The proof of issue 14: routes announced, not typed. The lab is drawn in
// bgplab_test.go; the peers we did not write (BIRD 2, FRR) are started in
// bgppeers_test.go.

// meshUp starts the three hosts of b, each peering with the other two
// (and with extra), and waits until every host has the others' subnets.
func meshUp(t *testing.T, b *bgpLab, c hostConfig, extra ...bgpPeer) {
	t.Helper()
	for _, h := range b.Hosts {
		hc := c
		hc.Peers = append(b.Mesh(h), extra...)
		h.Start(hc)
	}
	t.Logf("mesh converged %v after the last serve started", b.WaitMesh(60*time.Second).Round(time.Millisecond))
}

// guestMatrix checks that every guest reaches every other guest by its
// own address.
func guestMatrix(b *bgpLab) {
	var rows []check
	for _, from := range b.Hosts {
		for _, to := range b.Hosts {
			if from != to {
				rows = append(rows, check{fmt.Sprintf("g%d %s -> g%d %s", from.N, from.GuestIP, to.N, to.GuestIP), true,
					func() bool { return b.Ping(from.Guest, to.GuestIP) }})
			}
		}
	}
	b.matrix("guest to guest | want | got", rows)
}

func TestBGPMesh(t *testing.T) {
	b := newBGPLab(t, 3)
	meshUp(t, b, hostConfig{})
	for _, h := range b.Hosts {
		table := b.In(h.NS, "ip", "-4", "route")
		for _, o := range b.Hosts {
			want := fmt.Sprintf("%s via %s dev lan0 proto bgp metric 186", o.Subnet, o.Addr)
			if o != h && !strings.Contains(table, want) {
				t.Errorf("h%d: ip route lacks %q:\n%s", h.N, want, table)
			}
		}
		// Nothing else was learned: each host's only bgp routes are the
		// two others' subnets (its own is never installed).
		if got := b.BGPRoutes(h.NS); len(got) != 2 {
			t.Errorf("h%d: want the 2 other subnets by bgp, got %q", h.N, got)
		}
		t.Logf("h%d ip route:\n%s", h.N, table)
	}
	guestMatrix(b)
}

// TestBGPMeshIBGP is the same mesh with every host in one AS (iBGP, as
// issue 16 will use it): a locally originated path carries this host's
// address as next hop to iBGP peers as well, so nothing else is needed.
func TestBGPMeshIBGP(t *testing.T) {
	b := newBGPLab(t, 3)
	for _, h := range b.Hosts {
		h.ASN = 65000
	}
	meshUp(t, b, hostConfig{})
	for _, h := range b.Hosts {
		if got := b.BGPRoutes(h.NS); len(got) != 2 {
			t.Errorf("h%d: want the 2 other subnets by bgp, got %q", h.N, got)
		}
	}
	guestMatrix(b)
}

func TestBGPWithBIRDAndFRR(t *testing.T) {
	b := newBGPLab(t, 3)
	// The LAN's router runs BIRD; its client sits behind it on 10.20.0.0/24,
	// a subnet only BIRD announces.
	rtr, client := b.NS("rtr"), b.NS("client")
	b.OnLAN(rtr, "10.10.0.254/24")
	b.Veth(rtr, "cl0", "10.20.0.1/24", client, "eth0", "10.20.0.2/24")
	b.must("ip", "-n", client, "route", "add", "default", "via", "10.20.0.1")
	b.In(rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	fr := b.NS("frr")
	b.OnLAN(fr, "10.10.0.253/24")
	bd := b.BIRD(rtr, birdRouter("10.10.0.254", 65100, b.Hosts))
	f := b.FRR(fr, frrPeer("10.10.0.253", 65200, b.Hosts))

	meshUp(t, b, hostConfig{}, bgpPeer{"10.10.0.254", 65100}, bgpPeer{"10.10.0.253", 65200})
	waitUntil(t, "every host has BIRD's client subnet", 30*time.Second, func() bool {
		for _, h := range b.Hosts {
			if !slices.Contains(b.BGPRoutes(h.NS), routeVia("10.20.0.0/24", "10.10.0.254")) {
				return false
			}
		}
		return true
	})
	waitUntil(t, "BIRD and FRR have every guest subnet from its host", 30*time.Second, func() bool {
		best := f.Best()
		for _, h := range b.Hosts {
			if best[h.Subnet] != h.Addr || !strings.Contains(bd.C("show", "route", h.Subnet, "primary"), "via "+h.Addr+" on lan0") {
				return false
			}
		}
		return true
	})
	t.Logf("birdc show route:\n%s", bd.C("show", "route"))
	t.Logf("vtysh show bgp ipv4 unicast:\n%s", f.Vtysh("show bgp ipv4 unicast"))
	for _, h := range b.Hosts {
		// Each installed its best path in its own kernel: BIRD by its
		// kernel protocol, FRR by zebra.
		for _, peer := range []struct{ ns, proto string }{{rtr, "bird"}, {fr, "bgp"}} {
			if !slices.ContainsFunc(b.Routes(peer.ns, peer.proto), func(r kroute) bool { return r.Dst == h.Subnet && r.Gateway == h.Addr }) {
				t.Errorf("%s: no %s route to %s via %s:\n%s", peer.ns, peer.proto, h.Subnet, h.Addr, b.In(peer.ns, "ip", "route"))
			}
		}
	}
	var rows []check
	for _, h := range b.Hosts {
		rows = append(rows,
			check{fmt.Sprintf("client 10.20.0.2 (behind BIRD) -> g%d %s", h.N, h.GuestIP), true, func() bool { return b.Ping(client, h.GuestIP) }},
			check{fmt.Sprintf("FRR 10.10.0.253 -> g%d %s", h.N, h.GuestIP), true, func() bool { return b.Ping(fr, h.GuestIP) }},
		)
	}
	b.matrix("peer to guest | want | got", rows)
	guestMatrix(b)
}

func TestBGPHostilePeer(t *testing.T) {
	b := newBGPLab(t, 1)
	h := b.Hosts[0]
	rtr := b.NS("rtr")
	b.OnLAN(rtr, "10.10.0.254/24")
	bd := b.BIRD(rtr, hostileBIRD("10.10.0.254", 65100, b.Hosts))
	h.Start(hostConfig{Peers: []bgpPeer{{"10.10.0.254", 65100}}, Import: []string{"10.0.0.0/8", "172.16.0.0/12"}})

	took := waitUntil(t, "the legitimate prefix installed", 30*time.Second, func() bool {
		return slices.Contains(b.BGPRoutes(h.NS), routeVia("10.30.0.0/24", "10.10.0.254"))
	})
	t.Logf("10.30.0.0/24 installed %v after serve started", took.Round(time.Millisecond))
	// BIRD did send every hostile prefix (else the check below proves
	// nothing).
	sent := bd.C("show", "route", "export", "h1")
	for _, p := range hostilePrefixes {
		if !strings.Contains(sent, p.prefix+" ") {
			t.Fatalf("BIRD does not export %s to h1:\n%s", p.prefix, sent)
		}
	}
	// The daemon has them all learned before the table is judged.
	st := waitLearned(t, b.Lab, h.NS, len(hostilePrefixes)+1)
	table := b.Routes(h.NS, "")
	for _, p := range hostilePrefixes {
		for _, r := range table {
			if r.Dst == p.prefix && r.Protocol != "kernel" || p.prefix == "0.0.0.0/0" && r.Dst == "default" {
				t.Errorf("%s installed (%s): must not be, %s", p.prefix, r, p.why)
			}
		}
		l, ok := learnedOf(st, p.prefix)
		switch {
		case !ok:
			t.Errorf("guestnet bgp does not list %s as learned", p.prefix)
		case l.Installed || l.Why == "" || l.Refused != p.policy:
			t.Errorf("guestnet bgp: %s installed=%v refused=%v why=%q: want not installed, refused by the policy %v, with a reason (%s)",
				p.prefix, l.Installed, l.Refused, l.Why, p.policy, p.why)
		default:
			t.Logf("refused %-16s why: %s", p.prefix, l.Why)
		}
	}
	if l, ok := learnedOf(st, "10.30.0.0/24"); !ok || !l.Installed {
		t.Errorf("guestnet bgp: 10.30.0.0/24 %+v: want installed", l)
	}
	t.Logf("h1 ip route:\n%s", b.In(h.NS, "ip", "-4", "route"))
	checkHostileReported(t, b.Lab, h.NS)
}

func TestBGPLinkDown(t *testing.T) {
	b := newBGPLab(t, 3)
	const hold = 3 * time.Second
	meshUp(t, b, hostConfig{Hold: "3s"})
	h2 := b.Hosts[1]
	others := []*bgpHost{b.Hosts[0], b.Hosts[2]}
	b.must("ip", "-n", h2.NS, "link", "set", "lan0", "down")
	gone := waitUntil(t, "h1 and h3 withdraw h2's subnet", hold+5*time.Second, func() bool {
		for _, o := range others {
			if !hasNone(b.BGPRoutes(o.NS), h2.Subnet) {
				return false
			}
		}
		return true
	})
	t.Logf("h2's lan0 down: h1 and h3 dropped %s after %v (hold %v)", h2.Subnet, gone.Round(time.Millisecond), hold)
	// The hold timer runs from the last keepalive (every hold/3), so the
	// session dies at most hold after the link; 1 s covers polling and a
	// loaded machine.
	if gone > hold+time.Second {
		t.Errorf("h2's routes withdrawn after %v: want within the hold time %v (+1 s)", gone, hold)
	}
	for i, o := range others {
		if peer := others[1-i]; !slices.Contains(b.BGPRoutes(o.NS), routeVia(peer.Subnet, peer.Addr)) {
			t.Errorf("h%d lost h%d's subnet too: %q", o.N, peer.N, b.BGPRoutes(o.NS))
		}
	}
	b.must("ip", "-n", h2.NS, "link", "set", "lan0", "up")
	back := b.WaitMesh(30 * time.Second)
	t.Logf("h2's lan0 up again: every host has every subnet back after %v", back.Round(time.Millisecond))
	guestMatrix(b)
}

func TestBGPGracefulRestart(t *testing.T) {
	b := newBGPLab(t, 3)
	h1, h2, h3 := b.Hosts[0], b.Hosts[1], b.Hosts[2]
	const rt2 = "rt2: {mode: routed, bridge: grt1, ipv4: 10.82.0.1/24}"
	for _, h := range b.Hosts {
		c := hostConfig{Peers: b.Mesh(h)}
		if h == h2 {
			c.Extra = []string{rt2}
		}
		h.Start(c)
	}
	b.WaitMesh(60 * time.Second)
	waitUntil(t, "h1 and h3 have h2's second network", 30*time.Second, func() bool {
		return slices.Contains(b.BGPRoutes(h1.NS), routeVia("10.82.0.0/24", h2.Addr)) &&
			slices.Contains(b.BGPRoutes(h3.NS), routeVia("10.82.0.0/24", h2.Addr))
	})
	before := map[string][]string{}
	for _, h := range b.Hosts {
		before[h.NS] = b.BGPRoutes(h.NS)
	}

	// g1 pings g2 (across h2) and g3 pings g1 (not across h2) five times a
	// second while h2's serve is killed and started again, on a config
	// that no longer has rt2.
	const interval, span = 200 * time.Millisecond, 20 * time.Second
	across := b.PingLoop(h1.Guest, h2.GuestIP, interval, span)
	aside := b.PingLoop(h3.Guest, h1.GuestIP, interval, span)
	time.Sleep(2 * time.Second)
	h2.D.Kill()
	killed := time.Now()
	time.Sleep(2 * time.Second) // down for a while: longer than a keepalive, shorter than the hold time
	for _, o := range []*bgpHost{h1, h3} {
		if got := b.BGPRoutes(o.NS); !hasAll(got, routeVia(h2.Subnet, h2.Addr), routeVia("10.82.0.0/24", h2.Addr)) {
			t.Errorf("h%d dropped h2's routes while h2 restarts (graceful restart keeps them): %q", o.N, got)
		}
		for _, p := range []string{h2.Subnet, "10.82.0.0/24"} {
			if l, ok := learnedOf(b.BGPStatus(o.NS), p); !ok || !l.Stale || !l.Installed {
				t.Errorf("h%d: guestnet bgp shows %s as %+v while h2 restarts: want installed and stale", o.N, p, l)
			}
		}
	}
	h2.write(hostConfig{Peers: b.Mesh(h2)})
	began := time.Now()
	h2.Restart()
	ready := time.Since(began)
	cleared := waitUntil(t, "h1 and h3 drop 10.82.0.0/24 (stale, not announced again)", 30*time.Second, func() bool {
		return hasNone(b.BGPRoutes(h1.NS), "10.82.0.0/24") && hasNone(b.BGPRoutes(h3.NS), "10.82.0.0/24")
	}) + ready
	t.Logf("serve on h2 killed, started again %v later (its API answered %v after that); the stale 10.82.0.0/24 was gone from h1 and h3 %v after the start",
		began.Sub(killed).Round(time.Millisecond), ready.Round(time.Millisecond), cleared.Round(time.Millisecond))
	for name, p := range map[string]*pingLoop{"g1 -> g2 (across h2)": across, "g3 -> g1": aside} {
		sent, got, out := p.Wait()
		t.Logf("%s: %d echoes sent, %d answered, %d lost", name, sent, got, sent-got)
		if sent < int(span/interval)/2 || sent-got > 1 {
			t.Errorf("%s: %d sent, %d lost through the restart: want at most 1 lost\n%s", name, sent, sent-got, out)
		}
	}
	// Nothing stale is left: each table is what it was, minus rt2.
	for _, h := range b.Hosts {
		want := slices.DeleteFunc(slices.Clone(before[h.NS]), func(r string) bool { return strings.HasPrefix(r, "10.82.0.0/24 ") })
		if got := b.BGPRoutes(h.NS); !slices.Equal(got, want) {
			t.Errorf("h%d after the restart: bgp routes %q, want %q", h.N, got, want)
		}
	}
	checkNoStale(t, b.Lab, h1.NS, h3.NS)
}

func TestBGPNetworkRemoved(t *testing.T) {
	b := newBGPLab(t, 3)
	h1 := b.Hosts[0]
	const rt2 = "rt2: {mode: routed, bridge: grt1, ipv4: 10.81.0.1/24}"
	for _, h := range b.Hosts {
		c := hostConfig{Peers: b.Mesh(h)}
		if h == h1 {
			c.Extra = []string{rt2}
		}
		h.Start(c)
	}
	b.WaitMesh(60 * time.Second)
	peersHave := func(want bool, prefix string) func() bool {
		return func() bool {
			for _, o := range b.Hosts[1:] {
				if slices.Contains(b.BGPRoutes(o.NS), routeVia(prefix, h1.Addr)) != want {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, "h2 and h3 have 10.81.0.0/24", 30*time.Second, peersHave(true, "10.81.0.0/24"))

	// guestnet destroy while serve runs: the daemon destroys rt2 and its
	// announcement goes; `guestnet apply` of the config brings both back.
	b.Guestnet(h1.NS, "destroy", "rt2")
	took := waitUntil(t, "10.81.0.0/24 gone from h2 and h3 after destroy", 5*time.Second, peersHave(false, "10.81.0.0/24"))
	t.Logf("guestnet destroy rt2 on h1: gone from h2 and h3 %v after destroy returned", took.Round(time.Millisecond))
	h1.Reload(hostConfig{Peers: b.Mesh(h1), Extra: []string{rt2}})
	took = waitUntil(t, "10.81.0.0/24 back on h2 and h3 after apply", 5*time.Second, peersHave(true, "10.81.0.0/24"))
	t.Logf("guestnet apply brings rt2 back: on h2 and h3 %v after apply returned", took.Round(time.Millisecond))

	// rt2 leaves h1's config; `guestnet apply` of it has serve reload.
	start := time.Now()
	h1.Reload(hostConfig{Peers: b.Mesh(h1)})
	took = waitUntil(t, "10.81.0.0/24 gone from h2 and h3", 5*time.Second, peersHave(false, "10.81.0.0/24"))
	t.Logf("rt2 removed from h1's config: gone from h2 and h3 %v after the reload returned (%v after it began)",
		took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if _, err := b.tryIn(h1.NS, "ip", "link", "show", "grt1"); err == nil {
		t.Errorf("grt1 is still on h1 after rt2 left the config")
	}

	// announce: false withdraws a network that stays; SIGHUP reloads too.
	quiet := "rt: {mode: routed, bridge: grt0, ipv4: 10.71.0.1/24, announce: false}"
	h1.write(hostConfig{Peers: b.Mesh(h1), RtLine: quiet})
	h1.D.cmd.Process.Signal(syscall.SIGHUP)
	took = waitUntil(t, "10.71.0.0/24 gone from h2 and h3 (announce: false)", 5*time.Second, peersHave(false, h1.Subnet))
	t.Logf("announce: false on rt, SIGHUP: gone from h2 and h3 after %v", took.Round(time.Millisecond))
	if b.Ping(b.Hosts[1].Guest, h1.GuestIP) {
		t.Errorf("g2 still reaches g1 with rt not announced (no route should lead there)")
	}
	if !strings.Contains(b.In(h1.NS, "ip", "-4", "addr", "show", "grt0"), "10.71.0.1/24") {
		t.Errorf("grt0 lost its address: announce: false must only withdraw")
	}
	h1.write(hostConfig{Peers: b.Mesh(h1)})
	h1.D.cmd.Process.Signal(syscall.SIGHUP)
	took = waitUntil(t, "10.71.0.0/24 back on h2 and h3", 5*time.Second, peersHave(true, h1.Subnet))
	t.Logf("announce back on, SIGHUP: on h2 and h3 again after %v", took.Round(time.Millisecond))
	guestMatrix(b)
}

func TestBGPSeedStaticRoute(t *testing.T) {
	b := newBGPLab(t, 2)
	h1, h2 := b.Hosts[0], b.Hosts[1]
	for _, h := range b.Hosts {
		h.Start(hostConfig{NoBGP: true})
	}
	// Before BGP: the peer host reaches g1 only by the route guestnet
	// routes tells a person to type.
	if b.Ping(h2.NS, h1.GuestIP) {
		t.Fatalf("h2 reaches g1 before any route: the lab is wrong")
	}
	typed := strings.TrimSpace(b.Guestnet(h1.NS, "routes", "rt", "--peer", h2.Addr))
	if typed != "ip route add 10.71.0.0/24 via 10.10.0.1" {
		t.Fatalf("guestnet routes printed %q", typed)
	}
	b.In(h2.NS, "sh", "-c", typed)
	if !b.Ping(h2.NS, h1.GuestIP) {
		t.Fatalf("h2 does not reach g1 with the typed route")
	}

	for _, h := range b.Hosts {
		h.Reload(hostConfig{Peers: b.Mesh(h)})
	}
	waitUntil(t, "h2 learns 10.71.0.0/24 by bgp", 60*time.Second, func() bool {
		return slices.Contains(b.BGPRoutes(h2.NS), routeVia(h1.Subnet, h1.Addr))
	})
	// The speaker leaves the typed route alone (metric 0 wins meanwhile).
	if !slices.ContainsFunc(b.Routes(h2.NS, "boot"), func(r kroute) bool { return r.Dst == h1.Subnet }) {
		t.Errorf("the typed route is gone from h2: the speaker must not touch routes it did not make:\n%s", b.In(h2.NS, "ip", "route"))
	}
	b.must("ip", "-n", h2.NS, "route", "del", h1.Subnet, "via", h1.Addr, "proto", "boot")
	table := b.In(h2.NS, "ip", "-4", "route", "show", h1.Subnet)
	if strings.TrimSpace(table) != fmt.Sprintf("%s via %s dev lan0 proto bgp metric 186", h1.Subnet, h1.Addr) {
		t.Errorf("h2's route to %s after the typed one went: %q, want only the bgp one", h1.Subnet, table)
	}
	if !b.Ping(h2.NS, h1.GuestIP) {
		t.Errorf("h2 does not reach g1 by the bgp route")
	}
	if !b.Ping(h2.Guest, h1.GuestIP) || !b.Ping(h1.Guest, h2.GuestIP) {
		t.Errorf("g1 and g2 do not reach each other")
	}
	t.Logf("h2 ip route:\n%s", b.In(h2.NS, "ip", "-4", "route"))
}
