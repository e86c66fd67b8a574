package e2e

import (
	"strings"
	"testing"
	"time"
)

// routedFromSpec is the write-up's network: NAT toward the internet, routed
// for the LAN's hosts in 10.94.0.0/24 (and fd94::/64), which reach the
// guests by their own addresses through a static route to the host.
const routedFromSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.91.0.1/24
    ipv6: fd91::1/64
    routed_from: [10.94.0.0/24, "fd94::/64"]
`

// plainNATSpec is the same network without routed_from: the control.
const plainNATSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.91.0.1/24
    ipv6: fd91::1/64
`

// TestRoutedFrom builds the write-up's scenario in namespaces: a host with
// a nat network, a pretend internet on its uplink, a LAN peer in
// routed_from (10.94.0.10, fd94::10) and a host outside it (10.95.0.10,
// fd95::10), each with a route to the guests' subnet via the host, as is
// the internet's router. The peer reaches the guest by the guest's own
// address and the guest sees the peer's; the guest reaches the peer
// unmasqueraded and the internet masqueraded; the internet and the
// outsider cannot reach the guest.
//
// Controls: before routed_from (plain nat) the peer is refused and sees
// the guest masqueraded; with guestnet's table removed the internet and
// the outsider do reach the guest, so the blocks are guestnet's and not a
// missing route.
func TestRoutedFrom(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	peer, out := l.NS("peer"), l.NS("outsider")
	l.Veth(host, "lan0", "10.94.0.1/24", peer, "eth0", "10.94.0.10/24")
	l.Veth(host, "lan1", "10.95.0.1/24", out, "eth0", "10.95.0.10/24")
	l.must("ip", "-n", host, "addr", "add", "fd94::1/64", "dev", "lan0", "nodad")
	l.must("ip", "-n", peer, "addr", "add", "fd94::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", host, "addr", "add", "fd95::1/64", "dev", "lan1", "nodad")
	l.must("ip", "-n", out, "addr", "add", "fd95::10/64", "dev", "eth0", "nodad")
	// The return routes: the peer's are what guestnet routes prints (checked
	// below); the outsider and the internet's router add theirs anyway.
	for _, r := range [][]string{
		{peer, "10.91.0.0/24", "10.94.0.1"}, {peer, "fd91::/64", "fd94::1"},
		{out, "10.91.0.0/24", "10.95.0.1"}, {out, "fd91::/64", "fd95::1"},
		{inet, "10.91.0.0/24", "198.51.100.1"},
	} {
		l.must("ip", "-n", r[0], "route", "add", r[1], "via", r[2])
	}

	l.Guestnet(host, "apply", l.Spec(plainNATSpec))
	g := l.Guest(host, "default", "g", "vg1", "10.91.0.10/24", "10.91.0.1")
	l.must("ip", "-n", g, "addr", "add", "fd91::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", g, "-6", "route", "add", "default", "via", "fd91::1")
	// IPv6 waits for the bridge's and the guest's addresses to leave
	// duplicate address detection (the bridge's gateway address answers
	// neighbour solicitations only then).
	waitUntil(t, "gnat0's and the guest's IPv6 addresses leave DAD", 10*time.Second, func() bool {
		a := l.In(host, "ip", "-6", "addr", "show", "dev", "gnat0") + l.In(g, "ip", "-6", "addr", "show", "dev", "eth0")
		return strings.Contains(a, "fd91::1/64") && strings.Contains(a, "fe80:") && !strings.Contains(a, "tentative")
	})
	l.Serve(g, "10.91.0.10:8080")
	l.Serve(g, "[fd91::10]:8080")
	l.Serve(peer, "10.94.0.10:8080")
	l.Serve(inet, "203.0.113.10:8080")

	// Control: plain nat refuses the peer and masquerades toward it.
	_, err := l.Dial(peer, "10.91.0.10:8080")
	l.expect("plain nat: peer 10.94.0.10 -> guest (tcp)", false, err == nil)
	if src, err := l.Dial(g, "10.94.0.10:8080"); err != nil || src != "10.94.0.1" {
		t.Errorf("plain nat: the peer saw the guest as %q (%v), want the host's 10.94.0.1 (masquerade)", src, err)
	}

	spec := l.Spec(routedFromSpec)
	// Adding routed_from refills the network's to- and nat-chains only.
	if o, _, code := l.Run(host, "plan", spec); code != 2 || !strings.Contains(o, "2 chains refilled") {
		t.Errorf("plan of routed_from over plain nat: exit %d, want 2 and a delta of 2 chains refilled:\n%s", code, o)
	} else {
		t.Logf("plan:\n%s", o)
	}
	l.Guestnet(host, "apply", spec)
	if o, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply: exit %d (the rules read back differ)\n%s", code, o)
	}
	// The routes the peer was given are the ones guestnet routes prints.
	wantRoutes := "# on the hosts in 10.94.0.0/24 (routed_from):\nip route add 10.91.0.0/24 via 10.94.0.1\n" +
		"# on the hosts in fd94::/64 (routed_from):\nip -6 route add fd91::/64 via fd94::1\n"
	if got := l.Guestnet(host, "routes", "default"); got != wantRoutes {
		t.Errorf("guestnet routes default:\n%s\nwant:\n%s", got, wantRoutes)
	}
	seen := map[string]string{}
	dial := func(key, ns, addr string) func() bool {
		return func() bool {
			src, err := l.Dial(ns, addr)
			seen[key] = src
			return err == nil
		}
	}
	l.matrix("routed_from [10.94.0.0/24, fd94::/64] | allowed | happened", []check{
		{"peer 10.94.0.10 -> guest 10.91.0.10 (tcp)", true, dial("peer4", peer, "10.91.0.10:8080")},
		{"peer fd94::10 -> guest fd91::10 (tcp)", true, dial("peer6", peer, "[fd91::10]:8080")},
		{"peer 10.94.0.10 -> guest (ping)", true, func() bool { return l.Ping(peer, "10.91.0.10") }},
		{"guest -> peer 10.94.0.10 (tcp, new connection)", true, dial("topeer", g, "10.94.0.10:8080")},
		{"guest -> internet 203.0.113.10 (tcp)", true, dial("inet", g, "203.0.113.10:8080")},
		{"internet 198.51.100.126 -> guest (tcp)", false, dial("", inet, "10.91.0.10:8080")},
		{"internet -> guest (ping)", false, func() bool { return l.Ping(inet, "10.91.0.10") }},
		{"outsider 10.95.0.10 -> guest (tcp)", false, dial("", out, "10.91.0.10:8080")},
		{"outsider fd95::10 -> guest fd91::10 (tcp)", false, dial("", out, "[fd91::10]:8080")},
	})
	for key, want := range map[string]string{
		"peer4":  "10.94.0.10",   // the guest sees the peer's real address
		"peer6":  "fd94::10",     // and over IPv6
		"topeer": "10.91.0.10",   // the peer sees the guest's own address
		"inet":   "198.51.100.1", // the internet sees the uplink (masquerade)
	} {
		if seen[key] != want {
			t.Errorf("%s: the far end saw %q, want %s", key, seen[key], want)
		}
	}
	rules := l.In(host, "nft", "list", "chain", "inet", "guestnet", "nat-default")
	if !strings.Contains(rules, "ip daddr 10.94.0.0/24 accept") || !strings.Contains(rules, "ip6 daddr fd94::/64 accept") {
		t.Errorf("nat-default in the kernel lacks the routed_from accepts:\n%s", rules)
	}

	// trace, over this host as observed, agrees with the packets.
	for _, c := range []struct {
		from, to string
		code     int
		says     string
	}{
		{"10.94.0.10", "10.91.0.10", 0, "chain to-default: ip saddr 10.94.0.0/24 fib saddr . iif oif != 0 accept"},
		{"10.91.0.10", "10.94.0.10", 0, "not masqueraded (routed_from): the far end sees 10.91.0.10"},
		{"10.95.0.10", "10.91.0.10", 1, "routed_from [10.94.0.0/24 fd94::/64]"},
		{"10.91.0.10", "203.0.113.10", 0, "source 10.91.0.10 becomes 198.51.100.1"},
	} {
		o, _, code := l.Run(host, "trace", c.from, c.to, "tcp/8080")
		if code != c.code || !strings.Contains(o, c.says) {
			t.Errorf("trace %s -> %s: exit %d (want %d), want it to say %q:\n%s", c.from, c.to, code, c.code, c.says, o)
		}
	}

	// doctor knows the mode: it sees nothing wrong from here, and says
	// what it cannot see (the peers' return route).
	doc, _, _ := l.Run(host, "doctor")
	if !strings.Contains(doc, "the hosts in routed_from 10.94.0.0/24") || !strings.Contains(doc, "ip route add 10.91.0.0/24 via 10.94.0.1") ||
		strings.Contains(doc, "still masqueraded") {
		t.Errorf("guestnet doctor on the routed_from network:\n%s", doc)
	}

	// Control: without guestnet's table the same routes let the internet
	// and the outsider in, so the refusals above were guestnet's rules.
	l.In(host, "nft", "delete", "table", "inet", "guestnet")
	_, err = l.Dial(inet, "10.91.0.10:8080")
	l.expect("control, no guestnet table: internet -> guest (tcp)", true, err == nil)
	_, err = l.Dial(out, "10.91.0.10:8080")
	l.expect("control, no guestnet table: outsider 10.95.0.10 -> guest (tcp)", true, err == nil)
	_, err = l.Dial(out, "[fd91::10]:8080")
	l.expect("control, no guestnet table: outsider fd95::10 -> guest (tcp)", true, err == nil)
}

// TestBGPRoutedFrom: with guestnet serve and a bgp section, a nat
// network's subnet is announced to the peers inside its routed_from and to
// no other (its routed network rt goes to every peer, as before). h1 has
// nat network lan with routed_from [h2's address]: h2 installs the route
// and reaches lan's guest by the guest's own address (the guest sees
// h2's), h3 learns nothing of lan. A reload that moves routed_from to h3
// withdraws the route from h2 and gives it to h3.
func TestBGPRoutedFrom(t *testing.T) {
	b := newBGPLab(t, 3)
	h1, h2, h3 := b.Hosts[0], b.Hosts[1], b.Hosts[2]
	nat := func(peer string) []string {
		return []string{"lan: {mode: nat, bridge: gnat0, ipv4: 10.91.0.1/24, routed_from: [" + peer + "/32]}"}
	}
	for _, h := range b.Hosts {
		hc := hostConfig{Peers: b.Mesh(h)}
		if h == h1 {
			hc.Extra = nat(h2.Addr)
		}
		h.Start(hc)
	}
	t.Logf("mesh converged %v after the last serve started", b.WaitMesh(60*time.Second).Round(time.Millisecond))
	natRoute := routeVia("10.91.0.0/24", h1.Addr)
	waitUntil(t, "h2, in routed_from, installs lan's subnet", 15*time.Second, func() bool { return hasAll(b.BGPRoutes(h2.NS), natRoute) })
	if got := b.BGPRoutes(h3.NS); !hasNone(got, "10.91.0.0/24") {
		t.Errorf("h3, outside routed_from, learned lan's subnet: %q", got)
	}
	g := b.Guest(h1.NS, "lan", "gn", "vgn", "10.91.0.10/24", "10.91.0.1")
	b.Serve(g, "10.91.0.10:8080")
	src, err := b.Dial(h2.NS, "10.91.0.10:8080")
	b.expect("h2 10.10.0.2 -> lan's guest 10.91.0.10 over the BGP route (tcp)", true, err == nil)
	if err == nil && src != h2.Addr {
		t.Errorf("lan's guest saw %q, want h2's own address %s", src, h2.Addr)
	}
	_, err = b.Dial(h3.NS, "10.91.0.10:8080")
	b.expect("h3 (no route: not announced to it) -> lan's guest (tcp)", false, err == nil)

	h1.Reload(hostConfig{Peers: b.Mesh(h1), Extra: nat(h3.Addr)})
	waitUntil(t, "routed_from moved: h3 installs lan's subnet, h2 drops it", 15*time.Second, func() bool {
		return hasAll(b.BGPRoutes(h3.NS), natRoute) && hasNone(b.BGPRoutes(h2.NS), "10.91.0.0/24")
	})
	src, err = b.Dial(h3.NS, "10.91.0.10:8080")
	b.expect("h3 10.10.0.3 -> lan's guest after the reload (tcp)", true, err == nil)
	if err == nil && src != h3.Addr {
		t.Errorf("lan's guest saw %q, want h3's own address %s", src, h3.Addr)
	}
	for _, h := range []*bgpHost{h2, h3} {
		if got := b.BGPRoutes(h.NS); !hasAll(got, routeVia(h1.Subnet, h1.Addr)) {
			t.Errorf("h%d lost h1's routed subnet: %q", h.N, got)
		}
	}
}
