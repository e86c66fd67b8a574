package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The IPv6 BGP lab: a LAN with IPv6 addresses only (fd00:10::/64), two
// guestnet hosts on it, each serving an IPv6-only routed network, and a
// BIRD router; every session is eBGP over IPv6 and carries IPv6 unicast:
//
//	g1 fd42:71::10 --vg1-- [h1 fd00:10::1  AS 65001] --lan0--+
//	g2 fd42:72::10 --vg2-- [h2 fd00:10::2  AS 65002] --lan0--+-- br0 [lan]
//	                  [rtr fd00:10::fe AS 65100, BIRD] --lan0--+
//
// No host has a typed route: the guests reach each other through what BGP
// installed. BIRD announces fd00:30::/64 (installed by both hosts), ::/0
// (refused: import does not list it) and fd00:31::/64 with its link-local
// address as next hop (installed through it, on the session's
// interface).
func TestBGP6(t *testing.T) {
	l := newLab(t)
	lan := l.NS("lan")
	l.must("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
	l.must("ip", "-n", lan, "link", "set", "br0", "up")
	port := 0
	onLAN := func(ns, addr string) {
		port++
		p := fmt.Sprintf("p%d", port)
		l.Veth(ns, "lan0", "", lan, p, "")
		l.must("ip", "-n", lan, "link", "set", p, "master", "br0")
		l.must("ip", "-n", ns, "addr", "add", addr, "dev", "lan0", "nodad")
	}
	type host struct {
		n                int
		ns, addr, subnet string
		guest, guestIP   string
		spec             string
		d                *Daemon
	}
	var hosts []*host
	for n := 1; n <= 2; n++ {
		h := &host{n: n, ns: l.NS(fmt.Sprintf("h%d", n)), addr: fmt.Sprintf("fd00:10::%d", n),
			subnet: fmt.Sprintf("fd42:7%d::/64", n), guestIP: fmt.Sprintf("fd42:7%d::10", n)}
		onLAN(h.ns, h.addr+"/64")
		hosts = append(hosts, h)
	}
	rtr := l.NS("rtr")
	onLAN(rtr, "fd00:10::fe/64")
	bgp6WaitLinkLocal(t, l, rtr)
	ll := bgp6LinkLocal(t, l, rtr) // the next hop BIRD names for fd00:31::/64

	b := l.BIRD(rtr, bgp6BIRD(hosts[0].addr, hosts[1].addr, ll))
	dir := t.TempDir()
	for _, h := range hosts {
		other := hosts[2-h.n]
		h.spec = filepath.Join(dir, fmt.Sprintf("h%d.yaml", h.n))
		spec := h.spec
		conf := fmt.Sprintf(`bgp:
  asn: %d
  router_id: 10.255.0.%d   # every peer is IPv6: the identifier is written
  peers:
    - {address: "%s", asn: %d}
    - {address: "fd00:10::fe", asn: 65100}
networks:
  rt: {mode: routed, bridge: grt0, ipv6: "fd42:7%d::1/64"}
`, 65000+h.n, h.n, other.addr, 65000+other.n, h.n)
		if err := os.WriteFile(spec, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		h.d = l.Serve_(h.ns, spec)
		h.guest = bgp6Guest(l, h.ns, fmt.Sprintf("g%d", h.n), fmt.Sprintf("vg%d", h.n), h.guestIP+"/64", fmt.Sprintf("fd42:7%d::1", h.n))
	}

	// Each host installs the other's prefix via its LAN address, and
	// BIRD's, protocol bgp, metric 186.
	took := waitUntil(t, "both hosts have the other's IPv6 prefix and BIRD's by bgp", 60*time.Second, func() bool {
		for _, h := range hosts {
			other := hosts[2-h.n]
			have := bgpRoutes6(l, h.ns)
			if !hasAll(have, route6Via(other.subnet, other.addr, "lan0"), route6Via("fd00:30::/64", "fd00:10::fe", "lan0")) {
				return false
			}
		}
		return true
	})
	t.Logf("IPv6 routes exchanged in %v", took.Round(time.Millisecond))

	// BIRD received each host's prefix with the host's own address on the
	// session as next hop (next-hop-self).
	for _, h := range hosts {
		out := b.C("show", "route", "for", h.guestIP, "all")
		if !strings.Contains(out, h.subnet) || !strings.Contains(out, "BGP.next_hop: "+h.addr) {
			t.Errorf("BIRD's route to %s: want %s with BGP.next_hop %s:\n%s", h.guestIP, h.subnet, h.addr, out)
		}
	}

	// The guests reach each other, in both directions, through the
	// routes BGP installed (no route typed anywhere), and the far guest
	// sees the near guest's own address (routed, not masqueraded).
	for _, h := range hosts {
		other := hosts[2-h.n]
		out, err := exec.Command("ip", "netns", "exec", h.guest, "busybox", "ping", "-6", "-c", "3", "-W", "2", other.guestIP).CombinedOutput()
		if err != nil {
			t.Errorf("g%d pings g%d (%s): %v\n%s\nh%d routes: %v\nh%d nft: %s", h.n, other.n, other.guestIP, err, out,
				h.n, bgpRoutes6(l, h.ns), h.n, bgp6Nft(h.ns))
		} else {
			t.Logf("g%d -> g%d: %s", h.n, other.n, strings.ReplaceAll(lastLines(string(out), 2), "\n", "; "))
		}
	}

	// What BIRD sent that guestnet must refuse or install otherwise, and
	// how guestnet bgp shows it.
	h1 := hosts[0]
	var st bgpStatus
	waitUntil(t, "h1 lists BIRD's four paths and h2's", 30*time.Second, func() bool {
		st = l.BGPStatus(h1.ns)
		return len(st.Learned) >= 4
	})
	if d, ok := learnedOf(st, "::/0"); !ok || d.Installed || !d.Refused || !strings.Contains(d.Why, "::/0") {
		t.Errorf("::/0 from BIRD: %+v, want refused (import does not list ::/0)", d)
	}
	if p, ok := learnedOf(st, "fd42:72::/64"); !ok || !p.Installed || p.NextHop != "fd00:10::2" || p.Peer != "fd00:10::2" {
		t.Errorf("h2's prefix at h1: %+v, want installed via fd00:10::2", p)
	}
	if !slices.Contains(st.Announced, "fd42:71::/64") {
		t.Errorf("h1 announces %v, want fd42:71::/64", st.Announced)
	}
	if p, ok := learnedOf(st, "fd00:31::/64"); !ok || !p.Installed || p.NextHop != ll+"%lan0" {
		t.Errorf("fd00:31::/64 (BIRD's link-local next hop %s): %+v, want installed via %s%%lan0", ll, p, ll)
	}
	have := bgpRoutes6(l, h1.ns)
	if !slices.Contains(have, route6Via("fd00:31::/64", ll, "lan0")) {
		t.Errorf("h1's bgp routes %v lack fd00:31::/64 via %s dev lan0", have, ll)
	}
	if !hasNone(have, "default", "::/0") {
		t.Errorf("h1 installed a default route: %v", have)
	}
	text := l.Guestnet(h1.ns, "bgp")
	for _, w := range []string{"fd00:10::2", "fd00:10::fe", "established", "fd42:72::/64 via fd00:10::2 from fd00:10::2",
		"::/0 via fd00:10::fe from fd00:10::fe: a default route: installed only when import lists ::/0"} {
		if !strings.Contains(text, w) {
			t.Errorf("guestnet bgp lacks %q:\n%s", w, text)
		}
	}
	if t.Failed() {
		t.Logf("guestnet bgp on h1:\n%s", text)
	}

	// A network removed from h2's config is withdrawn: h1 and BIRD drop
	// it. (Reload: guestnet apply of serve's own config.)
	spec2 := filepath.Join(dir, "h2.yaml")
	conf, _ := os.ReadFile(spec2)
	os.WriteFile(spec2, []byte(strings.Replace(string(conf), `ipv6: "fd42:72::1/64"}`, `ipv6: "fd42:72::1/64", announce: false}`, 1)), 0o644)
	l.Guestnet(hosts[1].ns, "apply", spec2)
	waitUntil(t, "h1 removes h2's withdrawn prefix", 30*time.Second, func() bool {
		return hasNone(bgpRoutes6(l, h1.ns), "fd42:72::/64")
	})
	if out := b.C("show", "route", "for", hosts[1].guestIP); strings.Contains(out, "fd42:72::/64") {
		t.Errorf("BIRD still has h2's withdrawn prefix:\n%s", out)
	}

	// h1's serve restarts: its IPv6 routes stay in the kernel meanwhile
	// (graceful restart), the next speaker takes them over and keeps
	// those learned again.
	kept := []string{route6Via("fd00:30::/64", "fd00:10::fe", "lan0"), route6Via("fd00:31::/64", ll, "lan0")}
	h1.d.Stop()
	if have := bgpRoutes6(l, h1.ns); !hasAll(have, kept...) {
		t.Errorf("after serve stopped, h1's bgp routes are %v, want %v kept", have, kept)
	}
	h1.d = l.Serve_(h1.ns, h1.spec)
	waitUntil(t, "the restarted speaker takes over h1's IPv6 routes", 30*time.Second, func() bool {
		return strings.Contains(h1.d.log.String(), "takeover done")
	})
	if !strings.Contains(h1.d.log.String(), `taking over the routes of a previous speaker" service=bgp routes=2`) {
		t.Errorf("the restarted speaker did not take over the two IPv6 routes:\n%s", lastLines(h1.d.log.String(), 20))
	}
	if have := bgpRoutes6(l, h1.ns); !hasAll(have, kept...) {
		t.Errorf("after the takeover, h1's bgp routes are %v, want %v", have, kept)
	}

	// The bgp section leaves h1's config: the speaker stops and its IPv6
	// routes go with it.
	conf, _ = os.ReadFile(h1.spec)
	os.WriteFile(h1.spec, []byte(string(conf)[strings.Index(string(conf), "networks:"):]), 0o644)
	l.Guestnet(h1.ns, "apply", h1.spec)
	waitUntil(t, "h1's IPv6 bgp routes are removed with the bgp section", 10*time.Second, func() bool {
		return len(bgpRoutes6(l, h1.ns)) == 0
	})
}

// bgp6BIRD is the LAN router's config: eBGP over IPv6 with both hosts,
// import all (into BIRD's table only: no kernel protocol), exporting
// its static routes, fd00:31::/64 with its link-local address ll as the
// next hop.
func bgp6BIRD(h1, h2, ll string) string {
	return fmt.Sprintf(`log stderr all;
router id 10.255.0.254;
protocol device { scan time 1; }
protocol static own6 {
  ipv6;
  route fd00:30::/64 blackhole;
  route fd00:31::/64 blackhole;
  route ::/0 blackhole;
}
template bgp host {
  local fd00:10::fe as 65100;
  hold time 9; connect retry time 2; error wait time 1, 5;
  ipv6 { import all; export filter {
    if net = fd00:31::/64 then bgp_next_hop = %s;
    if source = RTS_STATIC then accept; reject; };
  };
}
protocol bgp h1 from host { neighbor %s as 65001; }
protocol bgp h2 from host { neighbor %s as 65002; }
`, ll, h1, h2)
}

// bgp6Guest makes a guest namespace with an IPv6 address (nodad) and a
// default route via gw, on a veth whose host end is attached to network.
func bgp6Guest(l *Lab, host, name, hostIf, addr, gw string) string {
	l.t.Helper()
	g := l.NS(name)
	l.Veth(g, "eth0", "", host, hostIf, "")
	l.must("ip", "-n", g, "addr", "add", addr, "dev", "eth0", "nodad")
	l.must("ip", "-n", g, "-6", "route", "add", "default", "via", gw)
	l.Guestnet(host, "attach", "rt", hostIf)
	return g
}

// bgpRoutes6 is ns's IPv6 protocol bgp routes as "DST via GW dev DEV"
// (and " metric M" unless 186), sorted.
func bgpRoutes6(l *Lab, ns string) []string {
	l.t.Helper()
	out, err := exec.Command("ip", "-j", "-6", "-n", ns, "route", "show", "proto", "bgp").Output()
	if err != nil {
		l.t.Fatalf("ip -6 route show proto bgp: %v", err)
	}
	var rs []kroute
	if err := json.Unmarshal(out, &rs); err != nil {
		l.t.Fatalf("ip -j -6 route: %v\n%s", err, out)
	}
	var s []string
	for _, r := range rs {
		x := route6Via(r.Dst, r.Gateway, r.Dev)
		if r.Metric != 186 { // not the speaker's: shown, never wanted
			x += fmt.Sprintf(" metric %d", r.Metric)
		}
		s = append(s, x)
	}
	slices.Sort(s)
	return s
}

// route6Via is the wanted form of a bgp route (metric 186) in bgpRoutes6.
func route6Via(dst, gw, dev string) string { return fmt.Sprintf("%s via %s dev %s", dst, gw, dev) }

// bgp6LinkLocal is ns's link-local address on lan0.
func bgp6LinkLocal(t *testing.T, l *Lab, ns string) string {
	t.Helper()
	out := l.must("ip", "-n", ns, "-6", "-br", "addr", "show", "dev", "lan0", "scope", "link")
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "fe80:") {
			return strings.Split(f, "/")[0]
		}
	}
	t.Fatalf("no link-local address on lan0 in %s: %s", ns, out)
	return ""
}

// bgp6WaitLinkLocal waits until ns's link-local address on lan0 has left
// the tentative state (duplicate address detection).
func bgp6WaitLinkLocal(t *testing.T, l *Lab, ns string) {
	t.Helper()
	waitUntil(t, "lan0's link-local address leaves DAD in "+ns, 10*time.Second, func() bool {
		out := l.must("ip", "-n", ns, "-6", "addr", "show", "dev", "lan0", "scope", "link")
		return strings.Contains(out, "fe80:") && !strings.Contains(out, "tentative")
	})
}

// bgp6Nft is ns's ruleset, for a failure's message.
func bgp6Nft(ns string) string {
	out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	return lastLines(string(out), 60)
}
