package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The host side of IPv6 (issue 15): the bridge's address, IPv6
// forwarding, the return route of routed networks, and an uplink that
// learns its default route from router advertisements keeping it.

// h6Addr adds an IPv6 address without duplicate address detection (the
// test is not about DAD, which takes a second or two per address).
func (l *Lab) h6Addr(ns, dev, addr string) {
	l.t.Helper()
	l.must("ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad")
}

// h6Guest makes a guest namespace attached to network, with static
// addresses (IPv6 ones without DAD) and a default route per gateway.
func (l *Lab) h6Guest(host, network, name, hostIf string, addrs, gws []string) string {
	l.t.Helper()
	g := l.NS(name)
	l.Veth(g, "eth0", "", host, hostIf, "")
	for _, a := range addrs {
		if strings.Contains(a, ":") {
			l.h6Addr(g, "eth0", a)
		} else {
			l.must("ip", "-n", g, "addr", "add", a, "dev", "eth0")
		}
	}
	for _, gw := range gws {
		l.must("ip", "-n", g, "route", "add", "default", "via", gw)
	}
	l.Guestnet(host, "attach", network, hostIf)
	return g
}

// h6Ping reports whether one of two ICMPv6 echoes from ns to addr is
// answered: the first echo to a guest not yet in the host's neighbour
// table was lost at times (1 of 3 runs) while neighbour discovery ran.
func (l *Lab) h6Ping(ns, addr string) bool {
	return exec.Command("ip", "netns", "exec", ns, "busybox", "ping", "-c", "2", "-W", "2", addr).Run() == nil
}

// h6Sysctl reads a sysctl of a test namespace.
func (l *Lab) h6Sysctl(ns, key string) string {
	l.t.Helper()
	return strings.TrimSpace(l.In(ns, "sysctl", "-n", key))
}

// h6Poll is waitTrue without the time it took.
func h6Poll(d time.Duration, cond func() bool) bool {
	_, ok := waitTrue(d, cond)
	return ok
}

func TestIPv6Routed(t *testing.T) { testIPv6Routed(t, "routed") }
func TestIPv6Open(t *testing.T)   { testIPv6Routed(t, "open") }

// testIPv6Routed: a routed IPv6-only network and a dual-stack routed one
// (or both open: routed without firewall rules).
// Guests have static addresses in the prefixes and default routes via
// the bridges' addresses; a peer on the LAN that adds exactly the routes
// `guestnet routes` prints reaches them, and each side sees the other's
// own address (no NAT). Destroy takes the addresses away and IPv6
// forwarding off again.
func testIPv6Routed(t *testing.T, mode string) {
	l := newLab(t)
	host, peer := l.NS("host"), l.NS("peer")
	l.Veth(host, "up0", "10.10.0.1/24", peer, "eth0", "10.10.0.2/24")
	l.h6Addr(host, "up0", "fd10:10::1/64")
	l.h6Addr(peer, "eth0", "fd10:10::2/64")
	spec := l.Spec(`
networks:
  dmz:
    mode: ` + mode + `
    bridge: grt6
    ipv6: 2001:db8:71::1/64
  dual:
    mode: ` + mode + `
    bridge: grt0
    ipv4: 10.99.1.1/24
    ipv6: fd42:1::1/64
`)
	l.Guestnet(host, "apply", spec)
	if got := l.h6Sysctl(host, "net.ipv6.conf.all.forwarding"); got != "1" {
		t.Errorf("IPv6 forwarding after apply: %s, want 1", got)
	}
	a := l.In(host, "ip", "-6", "-o", "addr", "show", "dev", "grt6", "scope", "global")
	if !strings.Contains(a, "inet6 2001:db8:71::1/64") || strings.Contains(a, "tentative") {
		t.Errorf("grt6's IPv6 address (present, not tentative):\n%s", a)
	}

	g6 := l.h6Guest(host, "dmz", "g6", "vg6", []string{"2001:db8:71::10/64"}, []string{"2001:db8:71::1"})
	gd := l.h6Guest(host, "dual", "gd", "vgd", []string{"10.99.1.10/24", "fd42:1::10/64"}, []string{"10.99.1.1", "fd42:1::1"})
	l.Serve(g6, "[2001:db8:71::10]:8080")
	l.Serve(gd, "[fd42:1::10]:8080")
	l.Serve(peer, "[fd10:10::2]:8080")

	// The bridge keeps its link-local address (the guests' router for
	// RA): once it has one, a plan has nothing to do.
	if !h6Poll(5*time.Second, func() bool {
		return strings.Contains(l.In(host, "ip", "-6", "addr", "show", "dev", "grt6", "scope", "link"), "fe80::")
	}) {
		t.Errorf("grt6 has no link-local address:\n%s", l.In(host, "ip", "-6", "addr", "show", "dev", "grt6"))
	}
	if out, errs, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply (link-local addresses present): exit %d\n%s%s", code, out, errs)
	}

	l.expect("peer without return route -> IPv6-only guest (ping)", false, l.Ping(peer, "2001:db8:71::10"))
	var typed []string
	for _, c := range []struct{ network, want string }{
		{"dmz", "ip -6 route add 2001:db8:71::/64 via fd10:10::1"},
		{"dual", "ip route add 10.99.1.0/24 via 10.10.0.1\nip -6 route add fd42:1::/64 via fd10:10::1"},
	} {
		got := strings.TrimSpace(l.Guestnet(host, "routes", c.network, "--peer", "fd10:10::2"))
		if got != c.want {
			t.Fatalf("guestnet routes %s printed %q, want %q", c.network, got, c.want)
		}
		typed = append(typed, strings.Split(got, "\n")...)
	}
	for _, r := range typed {
		l.In(peer, "sh", "-c", r)
	}

	l.expect("guest -> its router, the bridge's IPv6 address (ping)", true, l.h6Ping(g6, "2001:db8:71::1"))
	l.expect("peer -> IPv6-only guest (ping)", true, l.h6Ping(peer, "2001:db8:71::10"))
	l.expect("peer -> dual-stack guest over IPv6 (ping)", true, l.h6Ping(peer, "fd42:1::10"))
	l.expect("peer -> dual-stack guest over IPv4 (ping)", true, l.Ping(peer, "10.99.1.10"))
	for _, c := range []struct{ from, to, want string }{
		{peer, "[2001:db8:71::10]:8080", "fd10:10::2"},
		{peer, "[fd42:1::10]:8080", "fd10:10::2"},
		{g6, "[fd10:10::2]:8080", "2001:db8:71::10"},
		{gd, "[fd10:10::2]:8080", "fd42:1::10"},
	} {
		src, err := l.Dial(c.from, c.to)
		l.expect(c.from+" -> "+c.to+" (tcp)", true, err == nil)
		if err == nil && src != c.want {
			t.Errorf("%s saw %q, want %q (routed: no NAT)", c.to, src, c.want)
		}
	}

	// Drift: the IPv6 address deleted by hand comes back with apply.
	l.must("ip", "-n", host, "-6", "addr", "del", "2001:db8:71::1/64", "dev", "grt6")
	out, _, code := l.Run(host, "plan", spec)
	if code == 0 || !strings.Contains(out, "ip addr add 2001:db8:71::1/64 dev grt6 nodad") {
		t.Errorf("plan after the address was deleted: exit %d\n%s", code, out)
	}
	l.Guestnet(host, "apply", spec)
	l.expect("peer -> IPv6-only guest after repair (ping)", true, l.h6Ping(peer, "2001:db8:71::10"))

	l.Guestnet(host, "destroy", spec)
	if a := l.In(host, "ip", "-6", "-o", "addr", "show", "scope", "global"); strings.Contains(a, "2001:db8:71::1") || strings.Contains(a, "fd42:1::1") {
		t.Errorf("destroy left IPv6 addresses:\n%s", a)
	}
	if got := l.h6Sysctl(host, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Errorf("IPv6 forwarding after destroy: %s, want 0 as before", got)
	}
}

// h6Radvd runs Debian's radvd in namespace ns with its own config, pid and
// log files, advertising on each interface of ifs a default route with a
// router lifetime of lifetime seconds and the prefix 2001:db8:1::/64. It
// is stopped (by its PID) when the test ends.
func (l *Lab) h6Radvd(ns string, lifetime int, ifs ...string) {
	l.t.Helper()
	dir := l.t.TempDir()
	var cfg strings.Builder
	for _, ifname := range ifs {
		fmt.Fprintf(&cfg, `interface %s {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 4;
	AdvDefaultLifetime %d;
	prefix 2001:db8:1::/64 { AdvOnLink on; AdvAutonomous on; };
};
`, ifname, lifetime)
	}
	conf := filepath.Join(dir, "radvd.conf")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		l.t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "radvd.log"))
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "radvd", "--nodaemon", "-C", conf,
		"-p", filepath.Join(dir, "radvd.pid"), "-m", "stderr")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("radvd: %v", err)
	}
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if l.t.Failed() {
			b, _ := os.ReadFile(log.Name())
			l.t.Logf("radvd's log:\n%s", b)
		}
	})
}

// h6DefaultRA is ns's IPv6 default route learned from router
// advertisements ("" when there is none).
func (l *Lab) h6DefaultRA(ns string) string {
	l.t.Helper()
	return strings.TrimSpace(l.In(ns, "ip", "-6", "route", "show", "default", "proto", "ra"))
}

// TestIPv6AcceptRAKeepsDefaultRoute: an uplink that learns its IPv6
// default route from router advertisements (radvd on the far end, in
// another namespace) keeps it after guestnet turns IPv6 forwarding on for
// a nat network with ipv6, and after the RAs that come later, because
// guestnet raised its accept_ra to 2 first. The control host beside it,
// whose forwarding is turned on by hand with accept_ra left at 1, loses
// the route (at once: the kernel purges RA default routers of such
// interfaces when forwarding goes on) and the RAs after do not bring it
// back. Destroy puts accept_ra and forwarding back.
func TestIPv6AcceptRAKeepsDefaultRoute(t *testing.T) {
	const lifetime = 8 // seconds; radvd advertises every 3-4 s
	l := newLab(t)
	host, ctl, rtr := l.NS("uplink"), l.NS("control"), l.NS("rtr")
	l.Veth(rtr, "eth0", "", host, "up0", "")
	l.Veth(rtr, "eth1", "", ctl, "up0", "")
	l.In(rtr, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	for _, ns := range []string{host, ctl} {
		if got := l.h6Sysctl(ns, "net.ipv6.conf.up0.accept_ra"); got != "1" {
			t.Fatalf("%s: accept_ra of a new interface is %s, want the default 1", ns, got)
		}
	}
	// radvd needs the link-local addresses out of DAD first.
	if !h6Poll(5*time.Second, func() bool {
		a := l.In(rtr, "ip", "-6", "addr", "show", "scope", "link")
		return strings.Count(a, "fe80::") == 2 && !strings.Contains(a, "tentative")
	}) {
		t.Fatalf("rtr's link-local addresses:\n%s", l.In(rtr, "ip", "-6", "addr"))
	}
	l.h6Radvd(rtr, lifetime, "eth0", "eth1")
	for _, ns := range []string{host, ctl} {
		if !h6Poll(15*time.Second, func() bool { return l.h6DefaultRA(ns) != "" }) {
			t.Fatalf("%s learned no default route from radvd:\n%s", ns, l.In(ns, "ip", "-6", "route"))
		}
	}
	t.Logf("uplink learned: %s", l.h6DefaultRA(host))

	spec := l.Spec(`
networks:
  default:
    mode: nat
    bridge: gnat6
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
`)
	plan, _, _ := l.Run(host, "plan", spec)
	if !strings.Contains(plan, "sysctl -w net.ipv6.conf.up0.accept_ra=2\n       (up0 learns its default route from router advertisements") {
		t.Errorf("plan does not raise up0's accept_ra:\n%s", plan)
	}
	l.Guestnet(host, "apply", spec)
	l.In(ctl, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1") // the control: forwarding, accept_ra 1
	for _, c := range []struct{ ns, key, want string }{
		{host, "net.ipv6.conf.all.forwarding", "1"},
		{host, "net.ipv6.conf.up0.accept_ra", "2"},
		{ctl, "net.ipv6.conf.all.forwarding", "1"},
		{ctl, "net.ipv6.conf.up0.accept_ra", "1"},
	} {
		if got := l.h6Sysctl(c.ns, c.key); got != c.want {
			t.Errorf("%s: %s = %s, want %s", c.ns, c.key, got, c.want)
		}
	}
	if l.h6DefaultRA(host) == "" {
		t.Errorf("the uplink lost its default route as forwarding went on")
	}

	// The control loses its route at once: turning forwarding on purges
	// the default routers learned by RA of every interface whose
	// accept_ra is below 2 (rt6_purge_dflt_routers), and later RAs are
	// ignored. Past a router lifetime and a few RAs, it is still gone,
	// while the uplink's was renewed by the RAs since.
	start := time.Now()
	gone := h6Poll(2*time.Second, func() bool { return l.h6DefaultRA(ctl) == "" })
	t.Logf("control (forwarding on by hand, accept_ra 1): default route gone %v, %v after forwarding went on", gone, time.Since(start).Round(100*time.Millisecond))
	if !gone {
		t.Errorf("control: with forwarding on and accept_ra 1 the RA default route should go, still there: %s", l.h6DefaultRA(ctl))
	}
	time.Sleep(time.Duration(lifetime+1)*time.Second - time.Since(start))
	if r := l.h6DefaultRA(ctl); r != "" {
		t.Errorf("control: an RA brought the default route back although forwarding is on and accept_ra 1: %s", r)
	}
	r := l.h6DefaultRA(host)
	if r == "" {
		t.Fatalf("uplink: the default route expired although accept_ra is 2:\n%s", l.In(host, "ip", "-6", "route"))
	}
	if exp := h6Expires(r); exp < 0 || exp > lifetime {
		t.Errorf("uplink's default route %q: want it renewed by the latest RA (expires within %d s)", r, lifetime)
	}
	t.Logf("uplink after %v: %s", time.Since(start).Round(100*time.Millisecond), r)

	status := l.Guestnet(host, "status")
	if !strings.Contains(status, "ipv6 forwarding: on") || !strings.Contains(status, "router advertisements on up0: accept_ra 2 (raised by guestnet") {
		t.Errorf("status:\n%s", status)
	}

	l.Guestnet(host, "destroy", spec)
	if got := l.h6Sysctl(host, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Errorf("after destroy: IPv6 forwarding %s, want 0", got)
	}
	if got := l.h6Sysctl(host, "net.ipv6.conf.up0.accept_ra"); got != "1" {
		t.Errorf("after destroy: up0 accept_ra %s, want 1 back", got)
	}
	if l.h6DefaultRA(host) == "" {
		t.Errorf("after destroy: the uplink lost its default route")
	}
}

// h6Expires reads "expires Nsec" of an `ip -6 route` line (-1: none).
func h6Expires(route string) int {
	f := strings.Fields(route)
	for i, w := range f {
		if w == "expires" && i+1 < len(f) {
			n, err := strconv.Atoi(strings.TrimSuffix(f[i+1], "sec"))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// TestIPv6DriftRepairedByDaemon: under `guestnet serve`, the bridge's IPv6
// address deleted by hand and IPv6 forwarding turned off come back by
// themselves (the daemon hears IPv6 address and netconf events), and the
// peer reaches the guest again.
func TestIPv6DriftRepairedByDaemon(t *testing.T) {
	l := newLab(t)
	host, peer := l.NS("host"), l.NS("peer")
	l.Veth(host, "up0", "", peer, "eth0", "")
	l.h6Addr(host, "up0", "fd10:10::1/64")
	l.h6Addr(peer, "eth0", "fd10:10::2/64")
	spec := l.Spec(`
networks:
  dmz:
    mode: open
    bridge: grt6
    ipv6: 2001:db8:71::1/64
`)
	l.Serve_(host, spec)
	g := l.h6Guest(host, "dmz", "g6", "vg6", []string{"2001:db8:71::10/64"}, []string{"2001:db8:71::1"})
	l.In(peer, "ip", "-6", "route", "add", "2001:db8:71::/64", "via", "fd10:10::1")
	l.expect("peer -> guest before any drift (ping)", true, l.h6Ping(peer, "2001:db8:71::10"))
	var rows []string
	for _, c := range []struct {
		name   string
		cmd    []string
		healed func() bool
	}{
		{"ip -6 addr del 2001:db8:71::1/64 dev grt6", []string{"ip", "-6", "addr", "del", "2001:db8:71::1/64", "dev", "grt6"},
			func() bool {
				return strings.Contains(l.In(host, "ip", "-6", "addr", "show", "dev", "grt6"), "2001:db8:71::1/64")
			}},
		{"sysctl net.ipv6.conf.all.forwarding=0", []string{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"},
			func() bool { return l.h6Sysctl(host, "net.ipv6.conf.all.forwarding") == "1" }},
	} {
		start := time.Now()
		l.In(host, c.cmd...)
		if !h6Poll(5*time.Second, c.healed) {
			t.Errorf("%s: not repaired within 5 s", c.name)
			continue
		}
		back := time.Since(start)
		rows = append(rows, fmt.Sprintf("| %-44s | %8.1f ms |", c.name, float64(back.Microseconds())/1000))
		l.expect("peer -> guest after "+c.name+" (ping)", true, l.h6Ping(peer, "2001:db8:71::10"))
		l.expect("guest -> peer after "+c.name+" (ping)", true, l.h6Ping(g, "fd10:10::2"))
	}
	t.Logf("IPv6 drift repaired by the daemon:\n| drift | repaired after |\n|---|---|\n%s", strings.Join(rows, "\n"))
}

// TestIPv6DisabledSaysSo: on a namespace whose new interfaces get IPv6
// disabled, applying a network with ipv6 fails, changes nothing, and
// names the sysctl.
func TestIPv6DisabledSaysSo(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
	before := l.In(host, "ip", "-o", "link") + l.In(host, "ip", "-o", "addr")
	out, errs, code := l.Run(host, "apply", l.Spec(`
networks:
  iso6:
    mode: isolated
    bridge: giso6
    ipv6: fd42:9::1/64
`))
	if code == 0 || !strings.Contains(errs, "IPv6 is disabled on giso6 (net.ipv6.conf.giso6.disable_ipv6=1") {
		t.Errorf("apply with IPv6 disabled: exit %d\n%s%s", code, out, errs)
	}
	if after := l.In(host, "ip", "-o", "link") + l.In(host, "ip", "-o", "addr"); after != before {
		t.Errorf("the failed apply left changes:\n%s\nwant\n%s", after, before)
	}
}

// TestIPv6GuestRAIgnoredByHost: a guest that sends router advertisements
// (radvd in the guest) on an IPv4-only open network (no rules; IPv6
// forwarding stays off, so the bridge would process RAs) gives the host
// neither a default route through the guest nor a SLAAC address: guestnet
// makes its guest bridges with accept_ra 0. The control: a bridge made by
// hand beside it, with the kernel's default accept_ra 1, takes both.
func TestIPv6GuestRAIgnoredByHost(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Guestnet(host, "apply", l.Spec(`
networks:
  free:
    mode: open
    bridge: gopen0
    ipv4: 10.99.2.1/24
`))
	if got := l.h6Sysctl(host, "net.ipv6.conf.gopen0.accept_ra"); got != "0" {
		t.Errorf("gopen0 accept_ra = %s, want 0", got)
	}
	g := l.h6Guest(host, "free", "g", "vg1", []string{"10.99.2.10/24"}, nil)
	// The control bridge, with a guest of its own.
	l.must("ip", "-n", host, "link", "add", "ctl0", "type", "bridge")
	l.must("ip", "-n", host, "link", "set", "ctl0", "up")
	c := l.NS("c")
	l.Veth(c, "eth0", "", host, "vc1", "")
	l.must("ip", "-n", host, "link", "set", "vc1", "master", "ctl0")
	for _, ns := range []string{g, c} {
		l.In(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		if !h6Poll(5*time.Second, func() bool {
			a := l.In(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
			return strings.Contains(a, "fe80::") && !strings.Contains(a, "tentative")
		}) {
			t.Fatalf("%s: no usable link-local address", ns)
		}
		l.h6Radvd(ns, 30, "eth0")
	}
	if !h6Poll(15*time.Second, func() bool {
		return strings.Contains(l.In(host, "ip", "-6", "route", "show", "default", "dev", "ctl0"), "proto ra") ||
			strings.Contains(l.In(host, "ip", "-6", "route", "show", "default"), "ctl0")
	}) {
		t.Fatalf("control: the hand-made bridge learned no default route from its guest's RAs:\n%s", l.In(host, "ip", "-6", "route"))
	}
	time.Sleep(5 * time.Second) // at least one more RA from each guest
	routes := l.In(host, "ip", "-6", "route")
	t.Logf("host's IPv6 routes with both guests advertising:\n%s", routes)
	if strings.Contains(routes, "dev gopen0 proto ra") || strings.Contains(l.In(host, "ip", "-6", "route", "show", "default"), "gopen0") {
		t.Errorf("the host took a guest's RA on gopen0:\n%s", routes)
	}
	if a := l.In(host, "ip", "-6", "addr", "show", "dev", "gopen0", "scope", "global"); strings.Contains(a, "inet6") {
		t.Errorf("gopen0 got a SLAAC address from a guest:\n%s", a)
	}
}
