package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The IPv6 services of `guestnet serve` against real clients: the
// kernel's own SLAAC, dhcpcd and dhclient -6, dig.
// The networks are IPv6-only, with the default guest_to_host (services):
// the firewall's IPv6 input rules let RS, DHCPv6 and DNS in, and apply
// puts the IPv6 address on the bridge.

const v6Spec = `
networks:
  six:
    mode: routed
    bridge: gn6
    ipv6: fd42:61::1/64
    dhcp6:
      range: [fd42:61::100-fd42:61::1ff]
      lease: %s
      hosts:
        - {duid: "00:03:00:01:02:00:00:00:61:10", ip: "fd42:61::10", name: fixed}
    dns: {domain: six.test}
  iso:
    mode: isolated
    bridge: gn6i
    ipv6: fd42:62::1/64
`

// v6Guest is a guest namespace on a veth attached to network, IPv6 on
// (accept_ra 1, autoconf 1: a host's defaults), its link-local address
// without DAD so that its first RS leaves at once.
func (l *Lab) v6Guest(host, network, name, hostIf, mac string) string {
	g := l.NS(name)
	l.must("ip", "-n", g, "link", "add", "eth0", "type", "veth", "peer", "name", hostIf, "netns", host)
	if mac != "" {
		l.must("ip", "-n", g, "link", "set", "eth0", "address", mac)
	}
	for _, s := range []string{"accept_ra=1", "autoconf=1", "accept_dad=0", "router_solicitation_interval=1", "router_solicitation_delay=0"} {
		l.In(g, "sysctl", "-qw", "net.ipv6.conf.eth0."+s)
	}
	l.must("ip", "-n", host, "link", "set", hostIf, "up")
	l.Guestnet(host, "attach", network, hostIf)
	return g
}

// addrs6 are the global (non-link-local) IPv6 addresses of eth0 in ns.
func (l *Lab) addrs6(ns string) []string {
	out, _ := l.tryIn(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
	var as []string
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet6" && i+1 < len(f) {
			as = append(as, strings.Split(f[i+1], "/")[0])
		}
	}
	return as
}

func (l *Lab) defaultRoute6(ns string) string {
	out, _ := l.tryIn(ns, "ip", "-6", "route", "show", "default")
	return strings.TrimSpace(out)
}

// linkLocal6 is the link-local address of dev in ns.
func (l *Lab) linkLocal6(ns, dev string) string {
	out, _ := l.tryIn(ns, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link")
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet6" && i+1 < len(f) {
			return strings.Split(f[i+1], "/")[0]
		}
	}
	return ""
}

// waitTrue polls ok every 50 ms for up to d and says how long it took.
func waitTrue(d time.Duration, ok func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if ok() {
			return time.Since(start), true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), ok()
}

func TestIPv6SLAAC(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	d := l.Serve_(host, l.Spec(fmt.Sprintf(v6Spec, "1h")))

	g := l.v6Guest(host, "six", "slaac", "vs1", "02:00:00:00:61:01")
	gi := l.v6Guest(host, "iso", "isol", "vi1", "02:00:00:00:62:01")
	l.must("ip", "-n", g, "link", "set", "eth0", "up")
	l.must("ip", "-n", gi, "link", "set", "eth0", "up")
	// The bridges' link-local addresses, the RAs' source: a bridge has one
	// once a port is up, after its DAD.
	var brLL string
	if _, ok := waitTrue(5*time.Second, func() bool {
		brLL = l.linkLocal6(host, "gn6")
		return brLL != "" && l.linkLocal6(host, "gn6i") != ""
	}); !ok {
		t.Fatalf("the bridges have no link-local address")
	}
	took, ok := waitTrue(15*time.Second, func() bool {
		return len(l.addrs6(g)) > 0 && strings.Contains(l.defaultRoute6(g), brLL)
	})
	t.Logf("first start: %v, default route %q, after %v", l.addrs6(g), l.defaultRoute6(g), took.Round(time.Millisecond))
	if !ok {
		t.Fatalf("the guest got no SLAAC address and default route via %s:\naddrs %v\nroute %q\n%s",
			brLL, l.addrs6(g), l.defaultRoute6(g), l.In(g, "ip", "-6", "addr"))
	}
	// Now the RS alone: down (the kernel drops the SLAAC address and the
	// route) and up (it sends an RS at once).
	l.must("ip", "-n", g, "link", "set", "eth0", "down")
	if len(l.addrs6(g)) != 0 || l.defaultRoute6(g) != "" {
		t.Fatalf("the guest kept %v / %q over a link down", l.addrs6(g), l.defaultRoute6(g))
	}
	l.must("ip", "-n", g, "link", "set", "eth0", "up")
	took, ok = waitTrue(10*time.Second, func() bool {
		return len(l.addrs6(g)) > 0 && strings.Contains(l.defaultRoute6(g), brLL)
	})
	t.Logf("after an RS: %v, default route %q, after %v", l.addrs6(g), l.defaultRoute6(g), took.Round(time.Millisecond))
	if !ok || took > 2*time.Second {
		t.Errorf("the answer to the RS took %v (got it: %v); a booting guest must not wait for the periodic RA", took, ok)
	}
	a := netip.MustParseAddr(l.addrs6(g)[0])
	if !netip.MustParsePrefix("fd42:61::/64").Contains(a) {
		t.Errorf("SLAAC address %v is not in fd42:61::/64", a)
	}

	took, ok = waitTrue(10*time.Second, func() bool { return len(l.addrs6(gi)) > 0 })
	if !ok {
		t.Fatalf("the isolated guest got no SLAAC address")
	}
	time.Sleep(300 * time.Millisecond)
	if r := l.defaultRoute6(gi); r != "" {
		t.Errorf("isolated guest has a default route %q; its RA must have router lifetime 0", r)
	}
	t.Logf("isolated guest: %v after %v, no default route", l.addrs6(gi), took.Round(time.Millisecond))

	st := l.Guestnet(host, "status")
	if !slices.ContainsFunc(strings.Split(st, "\n"), func(line string) bool {
		return strings.Contains(line, "ra + dhcp6") && strings.Contains(line, "running")
	}) {
		t.Errorf("guestnet status does not show ra + dhcp6 running:\n%s", st)
	}

	// The daemon stops: its last RA says router lifetime 0, and the guest
	// drops the default route at once (not after the 30 minutes the route
	// had left).
	d.Stop()
	took, ok = waitTrue(3*time.Second, func() bool { return l.defaultRoute6(g) == "" })
	if !ok {
		t.Errorf("the guest still has %q 3 s after the daemon stopped; the final RA must end it", l.defaultRoute6(g))
	} else {
		t.Logf("daemon stopped: the guest dropped its default route after %v, kept %v", took.Round(time.Millisecond), l.addrs6(g))
	}
}

// hook6 is dhclient -6's script: it sets the address it was given and
// logs each event ($reason and address) to log, nothing else (the stock
// script would rewrite this machine's /etc/resolv.conf).
func (l *Lab) hook6(log string) string {
	p := filepath.Join(l.t.TempDir(), "dhcp6-hook")
	os.WriteFile(p, []byte(`#!/bin/sh
echo "$reason $new_ip6_address $old_ip6_address" >> `+log+`
case "$reason" in
BOUND6|RENEW6|REBIND6|REBOOT6)
  [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ] && ip -6 addr del "$old_ip6_address/128" dev $interface
  ip -6 addr replace "$new_ip6_address/128" dev $interface valid_lft ${new_max_life:-forever} preferred_lft ${new_preferred_life:-forever}
  ;;
EXPIRE6|RELEASE6|STOP6)
  ip -6 addr del "$old_ip6_address/128" dev $interface
  ;;
esac
exit 0
`), 0o755)
	return p
}

// startBG starts a client in a guest namespace, in a process group of its
// own (dhcpcd forks its privilege-separation helpers), its output in a
// file; the test ends the group (by its PID) when it is over.
func (l *Lab) startBG(ns string, args ...string) (out string) {
	l.t.Helper()
	c := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	f, err := os.Create(filepath.Join(l.t.TempDir(), "out"))
	if err != nil {
		l.t.Fatal(err)
	}
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		l.t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	l.t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Wait()
		f.Close()
		if l.t.Failed() {
			b, _ := os.ReadFile(f.Name())
			l.t.Logf("%s:\n%s", strings.Join(args, " "), lastLines(string(b), 30))
		}
	})
	return f.Name()
}

// inRange6 reports whether ns's eth0 has an address of the dhcp6 range.
func (l *Lab) inRange6(ns string) string {
	r := struct{ from, to netip.Addr }{netip.MustParseAddr("fd42:61::100"), netip.MustParseAddr("fd42:61::1ff")}
	for _, s := range l.addrs6(ns) {
		a := netip.MustParseAddr(s)
		if a.Compare(r.from) >= 0 && a.Compare(r.to) <= 0 {
			return s
		}
	}
	return ""
}

type lease6View struct {
	Network, MAC, DUID, IP, Hostname, State string
	Expiry                                  time.Time
}

func (l *Lab) leases6(host string) map[string]lease6View {
	var ls []lease6View
	if err := json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &ls); err != nil {
		l.t.Fatal(err)
	}
	out := map[string]lease6View{}
	for _, x := range ls {
		if x.DUID != "" {
			out[x.IP] = x
		}
	}
	return out
}

func TestIPv6DHCPv6Clients(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host := l.NS("host")
	spec := l.Spec(fmt.Sprintf(v6Spec, "1m"))
	d := l.Serve_(host, spec)
	tmp := t.TempDir()

	// dhclient -6, DUID-LLT (its default), renewing in the background.
	gc := l.v6Guest(host, "six", "dhc", "vd1", "02:00:00:00:61:02")
	l.must("ip", "-n", gc, "link", "set", "eth0", "up")
	clog := filepath.Join(tmp, "dhclient.log")
	l.startBG(gc, "dhclient", "-6", "-d", "-sf", l.hook6(clog), "-lf", filepath.Join(tmp, "dhc.leases"),
		"-pf", filepath.Join(tmp, "dhc.pid"), "eth0")

	// dhclient -6 -D LL: DUID-LL of its MAC, the static host's DUID.
	gf := l.v6Guest(host, "six", "fixed", "vd2", "02:00:00:00:61:10")
	l.must("ip", "-n", gf, "link", "set", "eth0", "up")
	l.startBG(gf, "dhclient", "-6", "-d", "-D", "LL", "-sf", l.hook6(filepath.Join(tmp, "fixed.log")),
		"-lf", filepath.Join(tmp, "fixed.leases"), "-pf", filepath.Join(tmp, "fixed.pid"), "eth0")

	// dhcpcd -6 with its own config, its database and run folders in the
	// test's temp dir (bind-mounted in the mount namespace ip netns exec
	// makes), sending its name by FQDN.
	gd := l.v6Guest(host, "six", "dcd", "vd3", "02:00:00:00:61:03")
	l.must("ip", "-n", gd, "link", "set", "eth0", "up")
	dconf := filepath.Join(tmp, "dhcpcd.conf")
	os.WriteFile(dconf, []byte("hostname dcdguest\nfqdn both\nipv6only\nia_na\nnohook resolv.conf\noption rapid_commit\n"), 0o644)
	db, run := filepath.Join(tmp, "db"), filepath.Join(tmp, "run")
	os.MkdirAll(db, 0o755)
	os.MkdirAll(run, 0o755)
	dout := l.startBG(gd, "sh", "-c", fmt.Sprintf("mount --bind %s /var/lib/dhcpcd && mount --bind %s /run/dhcpcd && exec dhcpcd -6 -B -d -f %s --nohook resolv.conf -c /bin/true eth0",
		db, run, dconf))

	var got map[string]string
	if _, ok := waitTrue(20*time.Second, func() bool {
		got = map[string]string{"dhclient": l.inRange6(gc), "dhcpcd": l.inRange6(gd)}
		// DHCPv6 gives addresses, not routes: the guest reaches the
		// gateway by the RA's on-link prefix.
		return got["dhclient"] != "" && got["dhcpcd"] != "" && slices.Contains(l.addrs6(gf), "fd42:61::10") &&
			l.defaultRoute6(gc) != ""
	}); !ok {
		t.Fatalf("DHCPv6 addresses: dhclient %q, dhcpcd %q, static %v; want two of fd42:61::100-1ff and fd42:61::10",
			got["dhclient"], got["dhcpcd"], l.addrs6(gf))
	}
	if got["dhclient"] == got["dhcpcd"] {
		t.Errorf("dhclient and dhcpcd share %s", got["dhclient"])
	}
	t.Logf("dhclient -6: %s, dhcpcd -6: %s, static host by DUID: fd42:61::10", got["dhclient"], got["dhcpcd"])
	// dhcpcd -d says where each DHCPv6 answer came from: the bridge's
	// link-local address, never another.
	brLL := l.linkLocal6(host, "gn6")
	var from []string
	for _, line := range strings.Split(readFile(dout), "\n") {
		if _, src, ok := strings.Cut(line, "6 received from "); ok { // ADVERTISE6, REPLY6
			from = append(from, strings.Fields(src)[0])
		}
	}
	if len(from) == 0 || slices.ContainsFunc(from, func(s string) bool { return s != brLL }) {
		t.Errorf("dhcpcd's answers came from %v, want only the bridge's link-local %s:\n%s", from, brLL, lastLines(readFile(dout), 30))
	} else {
		t.Logf("dhcpcd's %d DHCPv6 answers came from %s, the bridge's link-local address", len(from), brLL)
	}
	ls := l.leases6(host)
	for _, a := range []string{got["dhclient"], got["dhcpcd"], "fd42:61::10"} {
		if ls[a].State != "bound" {
			t.Errorf("guestnet leases: %s is %+v, want bound", a, ls[a])
		}
	}
	if ls["fd42:61::10"].MAC != "02:00:00:00:61:10" {
		t.Errorf("static host's lease: MAC %q, want the DUID-LL's 02:00:00:00:61:10", ls["fd42:61::10"].MAC)
	}

	// A guest resolves another's AAAA (static host, and dhcpcd's FQDN)
	// and PTR through the gateway's IPv6 address.
	for _, c := range []struct {
		q    []string
		want string
	}{
		{[]string{"AAAA", "fixed.six.test"}, "fd42:61::10"},
		{[]string{"AAAA", "dcdguest.six.test"}, got["dhcpcd"]},
		{[]string{"-x", "fd42:61::10"}, "fixed.six.test."},
		{[]string{"-x", got["dhcpcd"]}, "dcdguest.six.test."},
	} {
		out := l.In(gc, append([]string{"dig", "+short", "+time=2", "+tries=1", "@fd42:61::1"}, c.q...)...)
		if strings.TrimSpace(out) != c.want {
			t.Errorf("dig %v from a guest: %q, want %s", c.q, strings.TrimSpace(out), c.want)
		} else {
			t.Logf("ok  dig @fd42:61::1 %-40s -> %s", strings.Join(c.q, " "), c.want)
		}
	}

	// kill -9, start again: no lease is lost (each was on disk before
	// its Reply), and the clients' renewals (at T1: 0.5 of the preferred
	// lifetime, 5/8 of the 1m lease) keep their addresses.
	d.Kill()
	before := ls
	restarted := time.Now()
	l.Serve_(host, spec)
	after := l.leases6(host)
	for a, x := range before {
		if after[a].DUID != x.DUID {
			t.Errorf("lease %s of %s lost across kill -9: now %+v", a, x.DUID, after[a])
		}
	}
	renewed := func(a string) bool {
		x, ok := l.leases6(host)[a]
		return ok && x.State == "bound" && x.Expiry.After(restarted.Add(time.Minute-time.Second))
	}
	// The server stores a renewal before its Reply leaves: wait for
	// dhclient's hook too, which runs once the Reply is in.
	took, ok := waitTrue(45*time.Second, func() bool {
		return renewed(got["dhclient"]) && renewed(got["dhcpcd"]) && renewed("fd42:61::10") &&
			strings.Contains(readFile(clog), "RENEW6 "+got["dhclient"])
	})
	if !ok {
		t.Fatalf("not every lease was renewed with the restarted daemon within 45 s:\n%s\ndhclient's events:\n%s",
			l.Guestnet(host, "leases"), readFile(clog))
	}
	if now := l.inRange6(gc); now != got["dhclient"] {
		t.Errorf("dhclient's address after the renewal: %q, want %s", now, got["dhclient"])
	}
	if now := l.inRange6(gd); now != got["dhcpcd"] {
		t.Errorf("dhcpcd's address after the renewal: %q, want %s", now, got["dhcpcd"])
	}
	if !strings.Contains(readFile(clog), "RENEW6 "+got["dhclient"]) {
		t.Errorf("dhclient logged no RENEW6 of %s:\n%s", got["dhclient"], readFile(clog))
	}
	t.Logf("kill -9 and restart: %d leases kept, all renewed %v after the restart, same addresses", len(after), took.Round(time.Second))
}

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }
