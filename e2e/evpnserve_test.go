package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/daemon"
)

// evpnSpec is one spec for both hosts (config management): no router_id
// and no vxlan.local (each host derives its VTEP from the LAN address
// that reaches the first peer) and every host in peers (a host leaves
// itself out). iBGP, one AS, as the contract has it.
const evpnSpec = `bgp:
  asn: 65000
  peers:
    - {address: 10.10.0.1, asn: 65000}
    - {address: 10.10.0.2, asn: 65000}
networks:
  stretch: {mode: isolated, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000}}
`

// evpnGuest makes a guest namespace with mac and addr (10.60.0.x/24) on
// port hostIf of host's stretched network, and has it speak once to the
// gateway (its host's bridge learns it, its address lands in the
// bridge's neighbour table).
func (b *bgpLab) evpnGuest(host *bgpHost, name, hostIf, mac, addr string) string {
	b.t.Helper()
	g := b.NS(name)
	b.Veth(g, "eth0", "", host.NS, hostIf, "")
	b.must("ip", "-n", g, "link", "set", "eth0", "down")
	b.must("ip", "-n", g, "link", "set", "eth0", "address", mac, "mtu", "1450", "up")
	b.must("ip", "-n", g, "addr", "add", addr+"/24", "dev", "eth0")
	b.Guestnet(host.NS, "attach", "stretch", hostIf)
	if !b.Ping(g, "10.60.0.1") {
		b.t.Fatalf("%s does not reach its gateway", name)
	}
	return g
}

// evpnOf is the evpn service's view of the stretched network on host.
func (b *bgpLab) evpnOf(host *bgpHost) daemon.EVPNStatus {
	b.t.Helper()
	st, err := daemon.EVPNOf(b.StateDirOf(host.NS))
	if err != nil || len(st) != 1 {
		b.t.Fatalf("evpn view of %s: %v %+v", host.NS, err, st)
	}
	return st[0]
}

func seqOf(st daemon.EVPNStatus, mac string) (uint32, bool) {
	for _, r := range st.Local {
		if r.MAC == mac {
			return r.Seq, true
		}
	}
	return 0, false
}

// Two `guestnet serve` over real BGP EVPN: guests on the two hosts reach
// each other through entries that come from the routes only (the VXLAN
// device learns nothing), a guest that moves is reachable from the other
// host within 5 s and announced with a higher mobility sequence.
func TestEVPNTwoServes(t *testing.T) {
	b := newBGPLab(t, 2)
	h1, h2 := b.Hosts[0], b.Hosts[1]
	spec := filepath.Join(b.dir, "shared.yaml")
	if err := os.WriteFile(spec, []byte(evpnSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	h1.D, h2.D = b.Serve_(h1.NS, spec), b.Serve_(h2.NS, spec)

	gA := b.evpnGuest(h1, "gA", "vgA", "52:54:00:00:00:01", "10.60.0.101")
	gB := b.evpnGuest(h2, "gB", "vgB", "52:54:00:00:00:02", "10.60.0.102")
	gM := b.evpnGuest(h1, "gM", "vgM", "52:54:00:00:00:03", "10.60.0.103")

	took := waitUntil(t, "gA (host 1) reaches gB (host 2) over EVPN", 30*time.Second, func() bool { return b.Ping(gA, "10.60.0.102") })
	t.Logf("first cross-host ping answered %v after the guests spoke", took.Round(time.Millisecond))
	if !b.Ping(gB, "10.60.0.103") {
		t.Fatal("gB (host 2) does not reach gM (host 1)")
	}

	// Every unicast entry of each VXLAN device is an EVPN route's
	// (extern_learn); the rest is the flood list (all-zero, the other
	// VTEP) and the device's own permanent address.
	for _, h := range []*bgpHost{h1, h2} {
		fdb := b.must("bridge", "-n", h.NS, "fdb", "show", "dev", "gvx6000")
		for _, line := range strings.Split(strings.TrimSpace(fdb), "\n") {
			switch {
			case strings.Contains(line, "extern_learn"), strings.Contains(line, "permanent"):
			default:
				t.Fatalf("%s: an entry of gvx6000 that no EVPN route made: %q\n%s", h.NS, line, fdb)
			}
		}
		other := map[*bgpHost]string{h1: h2.Addr, h2: h1.Addr}[h]
		if !strings.Contains(fdb, "00:00:00:00:00:00 dst "+other+" self permanent") {
			t.Fatalf("%s: no flood entry to %s:\n%s", h.NS, other, fdb)
		}
	}
	// The view of the last pass: a ping through the flood list may come
	// before it (unknown unicast reaches the other host too).
	var st1 daemon.EVPNStatus
	took = waitUntil(t, "host 1's view of both of its guests", 6*time.Second, func() bool {
		st1 = b.evpnOf(h1)
		return len(st1.Local) == 2 && len(st1.Neighs) == 1
	})
	t.Logf("host 1's view complete %v after the cross-host pings", took.Round(time.Millisecond))
	if st1.VTEP.String() != h1.Addr || len(st1.Local) != 2 || len(st1.Remote) != 1 || st1.Remote[0].MAC != "52:54:00:00:00:02" || st1.Remote[0].VTEP.String() != h2.Addr {
		t.Fatalf("host 1's evpn view: %+v\nhost 2's: %+v\nhost 1's forwarding database:\n%s", st1, b.evpnOf(h2), b.must("bridge", "-n", h1.NS, "fdb", "show", "br", "gst0"))
	}
	if len(st1.Neighs) != 1 || st1.Neighs[0].IP.String() != "10.60.0.102" || st1.Neighs[0].MAC != "52:54:00:00:00:02" {
		t.Fatalf("host 1's ARP suppression entries: %+v (want gB's address)", st1.Neighs)
	}

	// gM moves to host 2 as a live migration does it: the guest resumes
	// on a port of host 2 (same MAC and address) and sends one gratuitous
	// ARP, while its port on host 1 is still there with the MAC learned
	// on it (the paused source, silent: no address, no ARP). Host 2
	// announces it above host 1's Seq; host 1 withdraws its route and
	// its remote entry takes the stale learned one over.
	gM2 := b.NS("gM2")
	b.Veth(gM2, "eth0", "", h2.NS, "vgM2", "")
	b.must("ip", "-n", gM2, "link", "set", "eth0", "down")
	b.must("ip", "-n", gM2, "link", "set", "eth0", "address", "52:54:00:00:00:03", "mtu", "1450", "up")
	b.must("ip", "-n", gM2, "addr", "add", "10.60.0.103/24", "dev", "eth0")
	b.Guestnet(h2.NS, "attach", "stretch", "vgM2")
	b.must("ip", "-n", gM, "addr", "flush", "dev", "eth0")
	b.must("ip", "-n", gM, "link", "set", "eth0", "arp", "off")
	b.In(gM, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1") // no MLD or DAD from the paused source
	moved := time.Now()
	b.In(gM2, "busybox", "arping", "-U", "-c", "1", "-I", "eth0", "10.60.0.103")
	took = waitUntil(t, "gA (host 1) reaches the moved gM on host 2", 5*time.Second, func() bool { return b.Ping(gA, "10.60.0.103") })
	t.Logf("moved guest reachable from host 1 %v after its gratuitous ARP was sent (%v)", took.Round(time.Millisecond), time.Since(moved).Round(time.Millisecond))
	waitUntil(t, "host 1 withdraws the moved guest", 5*time.Second, func() bool {
		_, ok := seqOf(b.evpnOf(h1), "52:54:00:00:00:03")
		return !ok
	})
	// Seq 1 (host 1's 0 + 1); seen once in about ten runs: 3, host 1
	// having learned the MAC on the source's port again after it lost
	// (a ping-pong of two hosts that both see the MAC locally).
	seq, ok := seqOf(b.evpnOf(h2), "52:54:00:00:00:03")
	if !ok || seq < 1 {
		t.Fatalf("host 2 announces the moved guest with seq %d (announced %v), want above host 1's 0", seq, ok)
	}
	t.Logf("host 2 announces the moved guest with seq %d", seq)
	// The source goes: nothing changes.
	b.must("ip", "-n", h1.NS, "link", "del", "vgM")
	if s2, ok := seqOf(b.evpnOf(h2), "52:54:00:00:00:03"); !ok || s2 != seq || !b.Ping(gA, "10.60.0.103") {
		t.Fatalf("after the source's port went: host 2 announces seq %d (%v), was %d", s2, ok, seq)
	}
	fdb := b.must("bridge", "-n", h1.NS, "fdb", "show", "dev", "gvx6000")
	if want := "52:54:00:00:00:03 dst " + h2.Addr + " self extern_learn"; !strings.Contains(fdb, want) {
		t.Fatalf("host 1's entry of the moved guest: want %q in\n%s", want, fdb)
	}
	// serve restarts on host 2: the entries it installed stay while its
	// sessions come back (and host 1 keeps host 2's routes: graceful
	// restart), so the guests keep reaching each other throughout.
	loop := b.PingLoop(gA, "10.60.0.102", 200*time.Millisecond, 8*time.Second)
	time.Sleep(time.Second)
	h2.D.Stop()
	h2.D = b.Serve_(h2.NS, spec)
	sent, got, out := loop.Wait()
	t.Logf("gA -> gB across a restart of serve on host 2: %d of %d echoes answered", got, sent)
	if sent == 0 || got < sent-1 {
		t.Fatalf("the restart of serve on host 2 cut gA off from gB: %d of %d answered\n%s", got, sent, out)
	}
	waitUntil(t, "host 2 installs host 1's guest again from the routes", 15*time.Second, func() bool {
		st := b.evpnOf(h2)
		return len(st.Remote) == 1 && st.Remote[0].MAC == "52:54:00:00:00:01"
	})

	if st := b.Guestnet(h1.NS, "status"); !strings.Contains(st, "evpn") {
		t.Fatalf("status names no evpn service:\n%s", st)
	}
}
