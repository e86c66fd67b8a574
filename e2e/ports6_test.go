package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestPorts6NotAttached: a port another tool puts in a guestnet bridge
// (`ip link set vgr master gnat0`, as libvirt does with vnetN), not
// guestnet attach, gets the IPv6 checks while guestnet serve runs: the
// daemon puts it in set guests6_learned within moments of the link event,
// before its guest's first frame; radvd in its guest does not reach the
// neighbour, a spoofed source is dropped, its own addresses pass; after it
// leaves the bridge it is gone from the daemon's sets. Without the daemon,
// status flags such a port and doctor warns.
func TestPorts6NotAttached(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	daemon := l.Serve_(host, l.Spec(spoof6Spec))
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

	// gn, the neighbour, attached as usual; it receives at fd42:99::40.
	gN := l.guest6(host, "gn", "vgn", "02:00:00:00:06:0f", nil)
	l.must("ip", "-n", gN, "addr", "add", "fd42:99::40/64", "dev", "eth0", "nodad")
	sink := l.udp6Sink(gN, "[fd42:99::40]:7000")

	// gr: a veth put in the bridge by hand; timed from `ip link set master`
	// to the port in the daemon's set.
	gR := l.NS("gr")
	l.must("ip", "-n", gR, "link", "add", "eth0", "type", "veth", "peer", "name", "vgr", "netns", host)
	l.must("ip", "-n", gR, "link", "set", "eth0", "address", "02:00:00:00:06:0e")
	l.In(gR, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	learned := func(set string) string { return l.In(host, "nft", "list", "set", "bridge", "guestnet", set) }
	start := time.Now()
	l.must("ip", "-n", host, "link", "set", "vgr", "master", "gnat0", "up")
	waitForLong(t, "vgr in set guests6_learned", func() bool { return strings.Contains(learned("guests6_learned"), `"vgr"`) })
	t.Logf("ip link set vgr master gnat0 -> vgr in guests6_learned: %v (polled with nft list, a few ms each)", time.Since(start).Round(time.Millisecond))
	if p := learned("prefixes6_learned"); !strings.Contains(p, `"vgr" . fd42:99::/64`) || !strings.Contains(p, `"vgr" . fe80::/10`) {
		t.Errorf("prefixes6_learned lacks vgr's prefixes:\n%s", p)
	}
	if strings.Contains(learned("guests6_learned"), `"vgn"`) {
		t.Error("the attached port vgn is in guests6_learned too")
	}
	l.must("ip", "-n", gR, "link", "set", "eth0", "up")
	l.radvd(gR, "eth0", "fd66:6::/64")
	lladdrR := l.linkLocal(gR)

	// Sources: gr's own address in the prefix passes; one outside it is
	// dropped.
	l.must("ip", "-n", gR, "neigh", "replace", "fd42:99::40", "lladdr", "02:00:00:00:06:0f", "dev", "eth0", "nud", "permanent")
	for _, a := range []string{"fd42:99::66/64", "fd99::5/64"} {
		l.must("ip", "-n", gR, "addr", "add", a, "dev", "eth0", "nodad")
	}
	send := func(src string) func() bool {
		return func() bool {
			a := netip.MustParseAddr(src)
			l.udp6Send(gR, a)
			return sink.got(a.String())
		}
	}
	l.matrix("IPv6 from a port put in the bridge by hand (serve runs) | want | got", []check{
		{"gr, from fd42:99::66 (its own, in the prefix)", true, send("fd42:99::66")},
		{"gr, from fd99::5 (outside the prefix)", false, send("fd99::5")},
	})
	time.Sleep(5 * time.Second) // radvd's first RAs
	addrsN, routesN := l.In(gN, "ip", "-6", "addr", "show", "dev", "eth0"), l.In(gN, "ip", "-6", "route", "show")
	l.expect("gr's radvd RA -> gn (prefix fd66:6::/64)", false, strings.Contains(addrsN, "fd66:6:"))
	l.expect("gr's radvd RA -> gn (default route via gr)", false, strings.Contains(routesN, lladdrR.String()))
	if r := learned("router6"); !strings.Contains(r, `"vgr"`) {
		t.Errorf("no RA drop recorded for vgr in set router6:\n%s", r)
	}
	if d := learned("dropped6"); !strings.Contains(d, `"vgr" . 02:00:00:00:06:0e . fd99::5`) {
		t.Errorf("no drop of fd99::5 recorded for vgr in set dropped6:\n%s", d)
	}

	// vgr leaves the bridge: out of the daemon's sets.
	start = time.Now()
	l.must("ip", "-n", host, "link", "set", "vgr", "nomaster")
	waitForLong(t, "vgr gone from guests6_learned and prefixes6_learned", func() bool {
		return !strings.Contains(learned("guests6_learned"), `"vgr"`) && !strings.Contains(learned("prefixes6_learned"), `"vgr"`)
	})
	t.Logf("ip link set vgr nomaster -> vgr gone from the learned sets: %v", time.Since(start).Round(time.Millisecond))

	// Without the daemon a port put in the bridge by hand gets no IPv6
	// check: status flags it, and doctor warns.
	daemon.Stop()
	l.must("ip", "-n", host, "link", "set", "vgr", "master", "gnat0")
	if st := l.Guestnet(host, "status"); !strings.Contains(st, "IPv6 UNCHECKED") {
		t.Errorf("status does not flag vgr, in gnat0 without guestnet serve:\n%s", st)
	}
	out, errs, _ := l.Run(host, "doctor")
	if !strings.Contains(out+errs, "vgr") || !strings.Contains(out+errs, "no IPv6 anti-spoofing") {
		t.Errorf("doctor does not warn about vgr:\n%s%s", out, errs)
	} else {
		t.Logf("doctor without serve:\n%s", out)
	}
}
