package daemon

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// portIndex is the ifindex of the test's tapN: N.
func portIndex(port string) int { return int(port[len(port)-1] - '0') }

// links gives each port of a port -> bridge map the identity the test's
// leases record (ifindex N for tapN).
func links(masters map[string]string) map[string]portLink {
	out := map[string]portLink{}
	for p, br := range masters {
		out[p] = portLink{bridge: br, id: dhcp.PortID{Name: p, Index: portIndex(p), HW: "fe:00:00:00:00:01"}}
	}
	return out
}

// boundOn is a lease bound on the test's link of that port name.
func boundOn(l dhcp.Lease) dhcp.Lease {
	if l.Port != "" {
		l.PortIndex, l.PortHW = portIndex(l.Port), "fe:00:00:00:00:01"
	}
	return l
}

// TestLearnedWant: which leases bind their port.
func TestLearnedWant(t *testing.T) {
	now := time.Unix(1e9, 0)
	lease := func(mac, ip, port string, expiry time.Time) dhcp.Lease {
		return boundOn(dhcp.Lease{MAC: mac, IP: netip.MustParseAddr(ip), Port: port, Expiry: expiry})
	}
	reused := lease("02:00:00:00:00:0a", "10.99.0.110", "tap1", now.Add(time.Hour))
	reused.PortIndex = 99 // bound on an earlier link named tap1
	unindexed := lease("02:00:00:00:00:0b", "10.99.0.111", "tap1", now.Add(time.Hour))
	unindexed.PortIndex, unindexed.PortHW = 0, "" // from a store older than port identities
	readdressed := lease("02:00:00:00:00:0c", "10.99.0.112", "tap1", now.Add(time.Hour))
	readdressed.PortHW = "fe:00:00:00:00:99" // same ifindex, another link (another boot)
	later := now.Add(time.Hour)
	leases := map[string][]dhcp.Lease{
		"default": {
			lease("02:00:00:00:00:01", "10.99.0.101", "tap1", later),                 // binds
			lease("02:00:00:00:00:02", "10.99.0.102", "tap2", now.Add(-time.Second)), // expired
			lease("02:00:00:00:00:03", "10.99.0.103", "", later),                     // port unknown
			lease("02:00:00:00:00:04", "10.99.0.104", "tap4", later),                 // port moved to another bridge
			lease("02:00:00:00:00:05", "10.99.0.105", "tap5", later),                 // attach bound tap5 to addresses
			lease("02:00:00:00:00:06", "10.99.0.106", "tap6", later),                 // attach bound tap6 to this MAC
			lease("02:00:00:00:00:07", "10.99.0.107", "tap7", later),                 // attach bound tap7 to another MAC
			boundOn(dhcp.Lease{MAC: "02:00:00:00:00:08", IP: netip.MustParseAddr("10.99.0.108"), Port: "tap8", Expiry: later, Declined: true}),
			reused, unindexed, readdressed, // none binds: tap1 is another link now
		},
		"free": {lease("02:00:00:00:00:09", "10.99.1.109", "tap9", later)}, // network without anti-spoofing
	}
	bridges := map[string]string{"default": "gnat0", "free": "gfree0"}
	masters := links(map[string]string{"tap1": "gnat0", "tap2": "gnat0", "tap4": "other0", "tap5": "gnat0",
		"tap6": "gnat0", "tap7": "gnat0", "tap8": "gnat0", "tap9": "gfree0"})
	v := &learnView{guarded: map[string]bool{"default": true}, explicit: map[string]map[string]model.PortBind{"default": {
		"tap5": {IPs: []netip.Addr{netip.MustParseAddr("10.99.0.55")}},
		"tap6": {MAC: "02:00:00:00:00:06"},
		"tap7": {MAC: "02:00:00:00:00:77"},
	}}}
	got := learnedWant(leases, bridges, masters, v, now)
	zero := netip.IPv4Unspecified()
	want := []model.Bind{
		{Port: "tap1", MAC: "02:00:00:00:00:01", IP: zero}, {Port: "tap1", MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("10.99.0.101")},
		{Port: "tap6", MAC: "02:00:00:00:00:06", IP: zero}, {Port: "tap6", MAC: "02:00:00:00:00:06", IP: netip.MustParseAddr("10.99.0.106")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	if (*learnView)(nil).may("default", leases["default"][0]) {
		t.Error("a lease bound its port before the daemon knew the spec")
	}
}

// TestFDBUpdates: learned entries are kept by MAC, moves follow the MAC,
// deletions of an entry already moved elsewhere are ignored, and the
// bridge's own (permanent) entries and other families are not entries.
func TestFDBUpdates(t *testing.T) {
	f := &fdb{where: map[string]fdbEntry{}}
	hw, _ := net.ParseMAC("52:54:00:00:00:01")
	up := func(typ uint16, state, master, port int, family int) {
		f.update(netlink.NeighUpdate{Type: typ, Neigh: netlink.Neigh{Family: family, State: state, MasterIndex: master, LinkIndex: port, HardwareAddr: hw}})
	}
	up(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, 5, 5, unix.AF_BRIDGE) // the bridge's own address
	up(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, 0, 7, unix.AF_INET)   // an ARP entry
	if len(f.where) != 0 {
		t.Fatalf("took a non-entry: %v", f.where)
	}
	up(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, 5, 7, unix.AF_BRIDGE)
	up(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, 5, 8, unix.AF_BRIDGE) // the guest moved to port 8
	up(unix.RTM_DELNEIGH, netlink.NUD_REACHABLE, 5, 7, unix.AF_BRIDGE) // late removal of the old entry
	if got := f.where[hw.String()]; got != (fdbEntry{bridge: 5, port: 8}) {
		t.Fatalf("after a move: %v", got)
	}
	up(unix.RTM_DELNEIGH, netlink.NUD_STALE, 5, 8, unix.AF_BRIDGE) // aged out
	if _, ok := f.where[hw.String()]; ok {
		t.Fatal("an aged-out entry is still there")
	}
}

// TestFDBRefreshOnMiss: a miss reads the kernel's table into the cache,
// at most once per dumpEvery however many clients miss.
func TestFDBRefreshOnMiss(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:00:00:02")
	now := time.Unix(1e9, 0)
	dumps := 0
	f := &fdb{where: map[string]fdbEntry{}, now: func() time.Time { return now }}
	f.dump = func() ([]netlink.Neigh, error) {
		dumps++
		return []netlink.Neigh{{Family: unix.AF_BRIDGE, State: netlink.NUD_REACHABLE, MasterIndex: 5, LinkIndex: 9, HardwareAddr: hw}}, nil
	}
	if !f.refresh() {
		t.Fatal("the first miss did not read the table")
	}
	if e, ok := f.lookup(hw.String()); !ok || e != (fdbEntry{bridge: 5, port: 9}) {
		t.Fatalf("after the dump: %v %v", e, ok)
	}
	now = now.Add(dumpEvery / 2)
	if f.refresh() || dumps != 1 {
		t.Fatalf("a second miss within %v dumped again (%d dumps)", dumpEvery, dumps)
	}
	now = now.Add(dumpEvery)
	if !f.refresh() || dumps != 2 {
		t.Fatalf("a miss after %v did not dump (%d dumps)", dumpEvery, dumps)
	}
}

// TestHolders: which ports hold a MAC, for the DHCP handler. A MAC attach
// bound is held by its ports (in any guarded network), and a lease on
// another port binds nothing; else the lease's port holds it while the
// lease is live and the port is in the bridge: a port deleted or moved
// to another bridge (a VM that migrated) lets the MAC go.
func TestHolders(t *testing.T) {
	now := time.Unix(1e9, 0)
	nets := []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0"},
		{Name: "other", Mode: model.NAT, Bridge: "gother0"},
		{Name: "free", Mode: model.NAT, Bridge: "gfree0", AllowSpoofing: true},
	}
	st := map[string]state.Net{
		"default": {Ports: []string{"tap5"}, Binds: map[string]model.PortBind{"tap5": {MAC: "02:00:00:00:00:55"}}},
		"other":   {Ports: []string{"tap8"}, Binds: map[string]model.PortBind{"tap8": {MAC: "02:00:00:00:00:88", IPs: []netip.Addr{netip.MustParseAddr("10.98.0.8")}}}},
		"free":    {Ports: []string{"tap9"}, Binds: map[string]model.PortBind{"tap9": {MAC: "02:00:00:00:00:99"}}},
	}
	v := newLearnView(nets, st)
	masters := links(map[string]string{"tap1": "gnat0", "tap2": "gnat0", "tap4": "gother0", "tap5": "gnat0"})
	master := func(p string) portLink { return masters[p] }
	lease := func(mac, port string, expiry time.Time) dhcp.Lease {
		return boundOn(dhcp.Lease{MAC: mac, IP: netip.MustParseAddr("10.99.0.100"), Port: port, Expiry: expiry})
	}
	later := now.Add(time.Hour)
	reused := lease("02:00:00:00:00:01", "tap1", later)
	reused.PortIndex = 42
	for _, c := range []struct {
		what string
		mac  string
		l    dhcp.Lease
		want []string
	}{
		{"live lease on a port of the bridge", "02:00:00:00:00:01", lease("02:00:00:00:00:01", "tap1", later), []string{"tap1"}},
		{"no lease", "02:00:00:00:00:01", dhcp.Lease{}, nil},
		{"expired lease", "02:00:00:00:00:01", lease("02:00:00:00:00:01", "tap1", now), nil},
		{"lease whose port was deleted", "02:00:00:00:00:01", lease("02:00:00:00:00:01", "tap3", later), nil},
		{"lease whose port is in another bridge", "02:00:00:00:00:01", lease("02:00:00:00:00:01", "tap4", later), nil},
		{"lease whose port name a new link took", "02:00:00:00:00:01", reused, nil},
		{"MAC attach bound to tap5, lease on tap2", "02:00:00:00:00:55", lease("02:00:00:00:00:55", "tap2", later), []string{"tap5"}},
		{"MAC attach bound in another guarded network", "02:00:00:00:00:88", dhcp.Lease{}, []string{"tap8"}},
		{"MAC bound on a network without anti-spoofing", "02:00:00:00:00:99", dhcp.Lease{}, nil},
	} {
		if got := v.holders("default", "gnat0", c.mac, c.l, master, now); !slices.Equal(got, c.want) {
			t.Errorf("%s: holders %v, want %v", c.what, got, c.want)
		}
	}
	// The kernel's learned sets agree: a lease of a MAC attach bound to
	// another port binds nothing.
	got := learnedWant(map[string][]dhcp.Lease{"default": {lease("02:00:00:00:00:55", "tap2", later)}},
		map[string]string{"default": "gnat0"}, masters, v, now)
	if len(got) != 0 {
		t.Errorf("a lease of a MAC bound by attach to tap5 bound %v", got)
	}
	if got := v.holders("free", "gfree0", "02:00:00:00:00:01", lease("02:00:00:00:00:01", "tap1", later), master, now); got != nil {
		t.Errorf("a network without anti-spoofing has holders %v", got)
	}
}

// TestFDBLostForgets: when the subscription is lost, the table is
// forgotten (a MAC that moved meanwhile must not be placed on its old
// port), the next miss reads the kernel at once, and the warnings are
// limited to one per lostEvery with the count of losses in between.
func TestFDBLostForgets(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:00:00:03")
	now := time.Unix(1e9, 0)
	var log bytes.Buffer
	f := &fdb{where: map[string]fdbEntry{}, now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(&log, nil))}
	f.update(netlink.NeighUpdate{Type: unix.RTM_NEWNEIGH, Neigh: netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_REACHABLE, MasterIndex: 5, LinkIndex: 7, HardwareAddr: hw}})
	f.dumped = now
	f.lost(unix.ENOBUFS, time.Second)
	if _, ok := f.lookup(hw.String()); ok {
		t.Error("the table was kept after the subscription was lost")
	}
	if !f.dumped.IsZero() {
		t.Error("the next miss would wait for dumpEvery")
	}
	now = now.Add(time.Second)
	f.lost(unix.ENOBUFS, time.Second)
	now = now.Add(lostEvery)
	f.lost(unix.ENOBUFS, time.Second)
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "lost_since_last_warning=2") {
		t.Errorf("warnings:\n%s", log.String())
	}
}
