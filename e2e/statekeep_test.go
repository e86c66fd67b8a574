package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/state"
)

// TestDriftStateFileRemoved: the breaker removed state.json while the
// daemon served, then deleted the bridge. The daemon made the bridge again
// without its guest ports, dropped the attach --ip/--mac bindings (the
// ports became unrestricted) and wrote state.json back without them,
// saying nothing. Now it writes the state it knew back, with a warning,
// and the bridge comes back with its ports and bindings.
func TestDriftStateFileRemoved(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	d := l.Serve_(host, l.Spec(dhcpSpec))
	const mac = "02:00:00:00:0c:01"
	ip := netip.MustParseAddr("10.99.0.50")
	g := l.NS("g")
	l.Veth(g, "eth0", "10.99.0.50/24", host, "vg", "")
	l.must("ip", "-n", g, "link", "set", "eth0", "address", mac)
	l.Guestnet(host, "attach", "default", "vg", "--mac", mac, "--ip", ip.String())
	l.dhcpGuest(host, "default", "h", "vh", "") // a second port, unbound
	bound := func() bool {
		pg := l.guards(host)["vg"]
		return pg.State == "bound" && slices.Contains(pg.MACs, mac) && slices.Contains(pg.IPs, ip)
	}
	waitFor(t, "vg bound by attach", bound)

	path := state.Path(l.StateDir, host)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l.In(host, "ip", "link", "del", "gnat0")
	waitFor(t, "gnat0 made again with vg and vh in it", func() bool {
		out, _ := l.tryIn(host, "ip", "-o", "link", "show", "master", "gnat0")
		return strings.Contains(out, "vg@") && strings.Contains(out, "vh@")
	})
	if !bound() {
		t.Errorf("vg lost its attach binding: %+v", l.guards(host)["vg"])
	}
	st, err := state.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n := st.Networks["default"]
	if !slices.Contains(n.Ports, "vg") || !slices.Contains(n.Ports, "vh") || n.Binds["vg"].MAC != mac {
		t.Errorf("state.json after the repair: ports %v, binds %v", n.Ports, n.Binds)
	}
	if !strings.Contains(d.log.String(), "the state file was removed while serving") {
		t.Errorf("the daemon did not say it wrote the state file back:\n%s", lastLines(d.log.String(), 20))
	}
	if !l.Ping(g, "10.99.0.1") {
		t.Error("the guest on vg cannot ping the gateway after the repair")
	}

	// Overwritten with garbage (breaker 2: repair and reload then failed
	// on it for good): moved aside and written back the same way.
	if err := os.WriteFile(path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.In(host, "ip", "link", "del", "gnat0")
	waitFor(t, "gnat0 made again with vg and vh in it, after the state file was overwritten", func() bool {
		out, _ := l.tryIn(host, "ip", "-o", "link", "show", "master", "gnat0")
		return strings.Contains(out, "vg@") && strings.Contains(out, "vh@")
	})
	if st, err := state.Load(path); err != nil || !slices.Contains(st.Networks["default"].Ports, "vg") {
		t.Errorf("state.json after the second repair: %+v, %v", st.Networks["default"], err)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
		t.Errorf("the unreadable state file was not kept aside: %v", aside)
	}
	if !strings.Contains(d.log.String(), "the state file was unreadable while serving") {
		t.Errorf("the daemon did not say it wrote the unreadable state file back:\n%s", lastLines(d.log.String(), 20))
	}
}
