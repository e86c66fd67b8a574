package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/plan"
)

// b6Listen opens an unconnected UDP socket in ns on addr:port; unconnected so
// that an ICMPv6 error for its own datagram does not close it.
func b6Listen(l *Lab, ns string, addrport string) *net.UDPConn {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addrport)))
		return
	}); err != nil {
		l.t.Fatalf("listen udp %s in %s: %v", addrport, ns, err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// b6Got reads from c until a datagram with payload want arrives from from,
// or a short timeout.
func b6Got(c *net.UDPConn, from netip.AddrPort, want string) bool {
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	for {
		k, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) == from && string(buf[:k]) == want {
			return true
		}
	}
}

// b6Send sends payload from c to addrport, a few times (the first may wait
// for neighbour discovery).
func b6Send(l *Lab, c *net.UDPConn, addrport, payload string) {
	l.t.Helper()
	for range 3 {
		if _, err := c.WriteToUDPAddrPort([]byte(payload), netip.MustParseAddrPort(addrport)); err != nil {
			l.t.Logf("send %s: %v", addrport, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIPv6SpoofedReplyFromAnotherNetwork: a guest of one network (an
// unrestricted port: attached without --ip, no lease) sends IPv6 with an
// internet host's source address, as a reply to a flow a guest of another
// network has open with that host. IPv6 has no rp_filter, and the other
// network's to-chain accepts ct state established before it asks where the
// packet came from: the spoofed reply must still not get through, neither
// to a routed guest nor, through the NAT66 mapping on the uplink's address,
// to a nat guest.
func TestIPv6SpoofedReplyFromAnotherNetwork(t *testing.T) {
	l := newLab(t)
	host, inet := v6Host(l)
	// The spoofing guest's network has anti-spoofing off: with it on, the
	// bridge drops the foreign source before the firewall sees it
	// (TestAntiSpoofing6); this test is about the firewall's own layer.
	spec := strings.Replace(fw6Spec, "    ipv6: fd42:98::1/64\n", "    ipv6: fd42:98::1/64\n    anti_spoofing: false\n", 1)
	l.Guestnet(host, "apply", l.Spec(spec))
	g1 := guest6(l, host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1", "fd42:99::10/64", "fd42:99::1")
	g3 := guest6(l, host, "other", "g3", "vg3", "10.98.0.10/24", "10.98.0.1", "fd42:98::10/64", "fd42:98::1")
	g4 := l.NS("g4")
	l.Veth(g4, "eth0", "", host, "vg4", "")
	l.Guestnet(host, "attach", "dmz", "vg4")
	l.must("ip", "-n", g4, "addr", "add", "2001:db8:71::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", g4, "-6", "route", "add", "default", "via", "2001:db8:71::1")
	l.must("ip", "-n", inet, "-6", "route", "add", "2001:db8:71::/64", "via", "2001:db8:ff:1::1")
	// The attacker g3 owns the far host's address on its lo, so its
	// socket can send from it (out of its default route, to the host).
	l.must("ip", "-n", g3, "addr", "add", "2001:db8:ff::2/128", "dev", "lo", "nodad")
	far := netip.MustParseAddrPort("[2001:db8:ff::2]:9000")
	b6Listen(l, inet, far.String()) // the far end takes the guests' datagrams silently
	spoof := b6Listen(l, g3, far.String())

	// The victims open their flows to the far host.
	routed := b6Listen(l, g4, "[2001:db8:71::10]:7000")
	b6Send(l, routed, far.String(), "out")
	natted := b6Listen(l, g1, "[fd42:99::10]:7001")
	b6Send(l, natted, far.String(), "out")
	quiet := b6Listen(l, g4, "[2001:db8:71::10]:7002") // no flow: the control

	l.t.Logf("conntrack in the host:\n%s", l.In(host, "conntrack", "-L", "-f", "ipv6"))
	try := func(dst string, c *net.UDPConn, payload string) func() bool {
		return func() bool { b6Send(l, spoof, dst, payload); return b6Got(c, far, payload) }
	}
	l.matrix("spoofed IPv6 reply | want | got", []check{
		{"other network's guest as 2001:db8:ff::2 -> routed guest, no flow", false, try("[2001:db8:71::10]:7002", quiet, "a")},
		{"other network's guest as 2001:db8:ff::2 -> routed guest's open flow", false, try("[2001:db8:71::10]:7000", routed, "b")},
		{"other network's guest as 2001:db8:ff::2 -> nat guest's flow (uplink address)", false, try("[2001:db8:ff:1::1]:7001", natted, "c")},
		{"the far host itself -> routed guest's open flow (a real reply)", true, func() bool {
			c := b6Listen(l, inet, "[2001:db8:ff::2]:9001")
			b6Send(l, routed, "[2001:db8:ff::2]:9001", "out")
			b6Send(l, c, "[2001:db8:71::10]:7000", "d")
			return b6Got(routed, netip.MustParseAddrPort("[2001:db8:ff::2]:9001"), "d")
		}},
	})
	// Proof the block is the order of guestnet's rules: with the replies
	// accepted first again (by hand), the spoofed reply gets in.
	l.In(host, "nft", "insert", "rule", "inet", "guestnet", "to-dmz", "ct", "state", "established,related", "accept")
	l.expect("same spoof into the routed flow, replies accepted first by hand", true, try("[2001:db8:71::10]:7000", routed, "e")())
}

// TestRepliesFromAnOpenNetwork: an open network has no to-chain, so other
// networks' guests may open connections into it; its replies come back
// through their to-chains, which now reject other guest bridges before
// they accept replies (TestIPv6SpoofedReplyFromAnotherNetwork): the open
// network's bridge is named there, and its guests still cannot open
// connections the other way.
func TestRepliesFromAnOpenNetwork(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+"  lab:\n    mode: open\n    bridge: gopen0\n    ipv4: 10.99.2.1/24\n"))
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "lab", "g2", "vg2", "10.99.2.10/24", "10.99.2.1")
	l.Serve(g1, "10.99.0.10:8080")
	l.Serve(g2, "10.99.2.10:8080")
	l.matrix("open network | want | got", []check{
		{"nat guest -> open network's guest (tcp: the reply comes back)", true, func() bool { _, err := l.dialQuick(g1, "10.99.2.10:8080"); return err == nil }},
		{"open network's guest -> nat guest", false, func() bool { _, err := l.dialQuick(g2, "10.99.0.10:8080"); return err == nil }},
	})
}

// b6FailSpec: every IPv6 thing apply does on the host at once: bridge
// addresses of each mode, IPv6 forwarding, accept_ra raised on an uplink
// that has its default route by RA, NAT66, DHCPv6's input rule.
const b6FailSpec = `
networks:
  dual:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
  six:
    mode: routed
    bridge: grt0
    ipv6: 2001:db8:71::1/64
  iso:
    mode: isolated
    bridge: giso0
    ipv6: fd42:98::1/80
    dhcp6: {range: ["fd42:98::100-fd42:98::1ff"]}
`

// TestIPv6FailureAtEachStep: apply and destroy of IPv6 networks, with the
// kernel failing at each write in turn, leave the host as it was: the
// bridges' IPv6 addresses, net.ipv6.conf.all.forwarding, the uplink's
// accept_ra and the ruleset (the snapshot holds all of them).
func TestIPv6FailureAtEachStep(t *testing.T) {
	l := newLab(t)
	host, _ := v6Host(l)
	// up0's default route came by RA (proto ra, accept_ra 1): apply raises
	// accept_ra to 2 before it turns forwarding on.
	l.must("ip", "-n", host, "-6", "route", "replace", "default", "via", "2001:db8:ff:1::2", "dev", "up0", "proto", "ra")
	l.In(host, "sysctl", "-w", "net.ipv6.conf.up0.accept_ra=1")
	s, err := specLoad(l.Spec(b6FailSpec))
	if err != nil {
		t.Fatal(err)
	}
	run := func(verb string, mk func(*engine.Engine) (plan.Plan, error), do func(*engine.Engine) error) {
		t.Helper()
		before := l.snapshot(host)
		steps := -1
		for n := 1; steps < 0 || n <= steps; n++ {
			e, err := engine.Open(host, l.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			p, err := mk(e)
			if err != nil {
				t.Fatal(err)
			}
			steps = len(p.Actions)
			e.Kernel = &engine.FailAt{Kernel: e.Kernel, N: n}
			err = do(e)
			e.Close()
			var se *apply.StepError
			if !errors.As(err, &se) || se.Step != n || !errors.Is(err, engine.ErrInjected) {
				t.Fatalf("%s, failure at step %d: got %v", verb, n, err)
			}
			if after := l.snapshot(host); after != before {
				t.Fatalf("%s, failure at step %d/%d (%s) changed the host:\n%s", verb, n, steps, se.Action, diffLines(before, after))
			}
		}
		t.Logf("%s: a failure at each of %d steps left the host as it was", verb, steps)
	}
	ctx := context.Background()
	run("apply", func(e *engine.Engine) (plan.Plan, error) { return e.Plan(ctx, s) },
		func(e *engine.Engine) error { _, err := e.Converge(ctx, s); return err })
	l.Guestnet(host, "apply", l.Spec(b6FailSpec))
	if v := strings.TrimSpace(l.In(host, "sysctl", "-n", "net.ipv6.conf.up0.accept_ra")); v != "2" {
		t.Errorf("after apply, up0 accept_ra = %s, want 2 (its default route is by RA)", v)
	}
	all := []string{"dual", "six", "iso"}
	run("destroy", func(e *engine.Engine) (plan.Plan, error) {
		p, _, err := e.PlanDestroy(ctx, all)
		return p, err
	}, func(e *engine.Engine) error { _, _, err := e.Destroy(ctx, all); return err })
}

// TestIPv6GuestBridgeAcceptRARepaired: a guest bridge whose accept_ra is 1
// (made by a guestnet from before bridges were made with accept_ra 0, or
// set back by someone) is seen and set to 0 by apply. On an isolated IPv6
// network IPv6 forwarding stays off, so with accept_ra 1 a guest's router
// advertisement (radvd in the guest) would give the host a default route
// through that guest.
func TestIPv6GuestBridgeAcceptRARepaired(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec("networks:\n  lab:\n    mode: isolated\n    bridge: giso0\n    ipv6: fd42:98::1/64\n")
	l.Guestnet(host, "apply", spec)
	if v := l.h6Sysctl(host, "net.ipv6.conf.all.forwarding"); v != "0" {
		t.Fatalf("IPv6 forwarding is %s with only an isolated network: the case needs it off", v)
	}
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.giso0.accept_ra=1")
	out, _, code := l.Run(host, "plan", spec)
	if code != 2 || !strings.Contains(out, "net.ipv6.conf.giso0.accept_ra=0") {
		t.Errorf("plan with giso0's accept_ra at 1: exit %d, want 2 and the sysctl back to 0:\n%s", code, out)
	}
	l.Guestnet(host, "apply", spec)
	if v := l.h6Sysctl(host, "net.ipv6.conf.giso0.accept_ra"); v != "0" {
		t.Errorf("after apply, giso0 accept_ra = %s, want 0", v)
	}
	if _, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply: exit %d, want 0", code)
	}
	g := l.h6Guest(host, "lab", "g", "vg1", nil, nil)
	l.In(g, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	if !h6Poll(5*time.Second, func() bool {
		a := l.In(g, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
		return strings.Contains(a, "fe80::") && !strings.Contains(a, "tentative")
	}) {
		t.Fatal("the guest has no usable link-local address")
	}
	l.h6Radvd(g, 30, "eth0")
	time.Sleep(9 * time.Second) // two or three RAs (every 3-4 s)
	if r := l.In(host, "ip", "-6", "route", "show", "default"); strings.Contains(r, "giso0") {
		t.Errorf("the host took a default route from a guest's RA:\n%s", r)
	}
}

// TestIPv6SpoofedReplyToTheHost: the host has a UDP flow of its own with a
// far host (as the DNS forwarder of guestnet serve has with an upstream);
// a guest sends it datagrams with the far host's address (IPv6 has no
// rp_filter). input-NET accepts ct state established before anything
// else, so they reached the host's socket, also from a guest of an
// IPv4-only network, whose IPv6 the host otherwise refuses. Only a guest's
// own addresses (its prefixes, link-local) may answer the host's flows.
func TestIPv6SpoofedReplyToTheHost(t *testing.T) {
	l := newLab(t)
	host, inet := v6Host(l)
	l.Guestnet(host, "apply", l.Spec(fw6Spec))
	g3 := guest6(l, host, "other", "g3", "vg3", "10.98.0.10/24", "10.98.0.1", "fd42:98::10/64", "fd42:98::1")
	g6 := l.Guest(host, "four", "g6", "vg6", "10.97.0.10/24", "10.97.0.1") // IPv4-only network
	// The IPv4-only guest routes IPv6 to the host by hand (nothing tells
	// it a router): via the bridge's link-local address.
	ll := bridgeLinkLocal(l, host, "gfour0")
	if ll == "" || bridgeLinkLocal(l, g6, "eth0") == "" {
		t.Fatal("gfour0 or the IPv4-only guest has no link-local address")
	}
	l.must("ip", "-n", g6, "-6", "route", "add", "default", "via", ll, "dev", "eth0")
	// The host refuses its neighbour solicitations: it writes the
	// bridge's MAC in by hand.
	mac := strings.Fields(l.In(host, "cat", "/sys/class/net/gfour0/address"))[0]
	l.must("ip", "-n", g6, "-6", "neigh", "replace", ll, "lladdr", mac, "dev", "eth0", "nud", "permanent")
	far := netip.MustParseAddrPort("[2001:db8:ff::2]:9000")
	b6Listen(l, inet, far.String())
	for _, g := range []string{g3, g6} {
		l.must("ip", "-n", g, "addr", "add", "2001:db8:ff::2/128", "dev", "lo", "nodad")
	}
	s3, s6 := b6Listen(l, g3, far.String()), b6Listen(l, g6, far.String())
	own := b6Listen(l, host, "[2001:db8:ff:1::1]:7100")
	b6Send(l, own, far.String(), "out")
	try := func(from *net.UDPConn, payload string) func() bool {
		return func() bool { b6Send(l, from, "[2001:db8:ff:1::1]:7100", payload); return b6Got(own, far, payload) }
	}
	l.matrix("spoofed reply to the host | want | got", []check{
		{"guest as 2001:db8:ff::2 -> the host's own flow", false, try(s3, "a")},
		{"IPv4-only network's guest as 2001:db8:ff::2 -> the host's own flow", false, try(s6, "b")},
		{"the far host itself -> the host's own flow (a real reply)", true, func() bool {
			c := b6Listen(l, inet, "[2001:db8:ff::2]:9001")
			b6Send(l, own, "[2001:db8:ff::2]:9001", "out")
			b6Send(l, c, "[2001:db8:ff:1::1]:7100", "c")
			return b6Got(own, netip.MustParseAddrPort("[2001:db8:ff::2]:9001"), "c")
		}},
	})
}

// TestIPv6ModeChangeKeepsInboundFlows: a network switched from routed to
// nat refuses new connections from the internet, but a flow the internet
// opened while it was routed lives on in conntrack, and to-NET's "ct state
// established,related accept" keeps letting it in: the internet still
// reaches a nat guest. IPv4 is the same. A fix is for apply to delete the
// conntrack entries of a network whose mode changes (netlink's conntrack
// delete with a filter on the prefix): not done here.
func TestIPv6ModeChangeKeepsInboundFlows(t *testing.T) {
	t.Skip("known: conntrack entries of flows a routed network accepted survive its switch to nat; apply flushes no conntrack (see the report of break6a)")
	l := newLab(t)
	host, inet := v6Host(l)
	base := "networks:\n  dmz:\n    mode: %s\n    bridge: grt0\n    ipv6: 2001:db8:71::1/64\n"
	spec := l.Spec(fmt.Sprintf(base, "routed"))
	l.Guestnet(host, "apply", spec)
	l.must("ip", "-n", inet, "-6", "route", "add", "2001:db8:71::/64", "via", "2001:db8:ff:1::1")
	g := l.NS("g")
	l.Veth(g, "eth0", "", host, "vg1", "")
	l.Guestnet(host, "attach", "dmz", "vg1")
	l.must("ip", "-n", g, "addr", "add", "2001:db8:71::10/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", g, "-6", "route", "add", "default", "via", "2001:db8:71::1")
	guest := b6Listen(l, g, "[2001:db8:71::10]:7000")
	old := b6Listen(l, inet, "[2001:db8:ff::2]:9000")
	fresh := b6Listen(l, inet, "[2001:db8:ff::2]:9001")
	from := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("2001:db8:ff::2"), p) }
	// The internet opens a flow while the network is routed; the guest
	// answers, so conntrack holds it as established.
	ok := false
	for i := 0; i < 5 && !ok; i++ { // the first datagrams may wait for neighbour discovery
		b6Send(l, old, "[2001:db8:71::10]:7000", "hello")
		ok = b6Got(guest, from(9000), "hello")
	}
	if !ok {
		t.Fatal("the internet does not reach the routed guest: the case needs it to")
	}
	b6Send(l, guest, "[2001:db8:ff::2]:9000", "hi")
	os.WriteFile(spec, []byte(fmt.Sprintf(base, "nat")), 0o644)
	l.Guestnet(host, "apply", spec)
	l.matrix("after routed -> nat | want | got", []check{
		{"internet, a new flow -> the now nat guest", false, func() bool { b6Send(l, fresh, "[2001:db8:71::10]:7000", "a"); return b6Got(guest, from(9001), "a") }},
		{"internet, the flow opened while routed -> the now nat guest", false, func() bool { b6Send(l, old, "[2001:db8:71::10]:7000", "b"); return b6Got(guest, from(9000), "b") }},
	})
}
