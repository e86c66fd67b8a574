package evpn

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// The root test builds two hosts as namespaces on an underlay veth pair
// (10.10.0.1, 10.10.0.2), each with a bridge gst0 (the anycast gateway
// 10.60.0.1 and MAC) and a VXLAN device gvx6000 in it as guestnet makes
// them (learning off, neigh_suppress on, guestnet's alias), and guests as
// namespaces on veth ports. The BGP exchange is played by hand: each
// host's announced set is the other's remote set.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err == nil {
			if _, err := exec.LookPath("busybox"); err == nil {
				return
			}
		}
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatal("this test needs root, ip and busybox (network namespaces), and GUESTNET_E2E_REQUIRED=1")
	}
	t.Skip("SKIPPED: needs root, ip and busybox to make network namespaces")
}

var nsSeq atomic.Int32

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNS(t *testing.T, role string) string {
	t.Helper()
	ns := fmt.Sprintf("gn-evpn-%s-%d-%d", role, os.Getpid(), nsSeq.Add(1))
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

type testHost struct {
	ns        string
	net       Network
	k         *Linux
	announced model.EVPN
	local     []Guest
}

func newHost(t *testing.T, name string, vtep netip.Addr) *testHost {
	ns := newNS(t, name)
	n := testNet(vtep)
	alias := model.OwnerAlias(n.Name)
	ip := func(args ...string) { run(t, "ip", append([]string{"-n", ns}, args...)...) }
	ip("link", "add", n.Bridge, "address", n.GatewayMAC, "type", "bridge")
	ip("link", "set", n.Bridge, "alias", alias, "up")
	ip("addr", "add", "10.60.0.1/24", "dev", n.Bridge)
	ip("link", "add", n.VXLAN, "type", "vxlan", "id", "6000", "dstport", "4789", "local", vtep.String(), "nolearning")
	ip("link", "set", n.VXLAN, "alias", alias, "mtu", "1450", "master", n.Bridge, "up")
	run(t, "bridge", "-n", ns, "link", "set", "dev", n.VXLAN, "learning", "off", "neigh_suppress", "on")
	h, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	return &testHost{ns: ns, net: n, k: NewLinux(nl)}
}

// guest makes a guest namespace with mac and addr on a port of h's bridge.
func guest(t *testing.T, h *testHost, port, mac string, addr string) string {
	g := newNS(t, "guest")
	run(t, "ip", "-n", h.ns, "link", "add", port, "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", g)
	run(t, "ip", "-n", h.ns, "link", "set", port, "master", h.net.Bridge, "up")
	run(t, "ip", "-n", g, "link", "set", "eth0", "address", mac, "up")
	run(t, "ip", "-n", g, "addr", "add", addr+"/24", "dev", "eth0")
	return g
}

func ping(g, addr string) error {
	out, err := exec.Command("ip", "netns", "exec", g, "busybox", "ping", "-c", "1", "-w", "3", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", addr, g, err, out)
	}
	return nil
}

// sync is one pass of what the daemon does on h, with remote as the
// routes received: read, decide, apply. It returns the ops applied.
func (h *testHost) sync(t *testing.T, remote model.EVPN) []Op {
	t.Helper()
	nets := []Network{h.net}
	have, err := h.k.Read(nets)
	if err != nil {
		t.Fatalf("read %s: %v", h.ns, err)
	}
	h.local = have.Local
	d := Decide(Input{Networks: nets, Local: have.Local, Remote: remote, Announced: h.announced})
	h.announced = d.Announce
	ops, err := Apply(h.k, Plan(d.Install, have))
	if err != nil {
		t.Fatalf("sync %s: %v", h.ns, err)
	}
	return ops
}

// exchange plays BGP between a and b until neither's set changes, and
// checks that a last pass changes nothing in the kernel.
func exchange(t *testing.T, a, b *testHost) {
	t.Helper()
	for range 4 {
		a.sync(t, b.announced)
		b.sync(t, a.announced)
	}
	if ops := append(a.sync(t, b.announced), b.sync(t, a.announced)...); len(ops) > 0 {
		t.Fatalf("a sync of unchanged state changed the kernel: %v", ops)
	}
}

func hasLocal(h *testHost, mac string) bool {
	return slices.ContainsFunc(h.local, func(g Guest) bool { return g.MAC == mac })
}

func announcedSeq(h *testHost, mac string) (uint32, bool) {
	for _, r := range h.announced.MACs {
		if r.MAC == mac {
			return r.Seq, true
		}
	}
	return 0, false
}

func TestKernelSync(t *testing.T) {
	needRoot(t)
	a := newHost(t, "a", vtepA)
	b := newHost(t, "b", vtepB)
	run(t, "ip", "-n", a.ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", b.ns)
	for _, h := range []*testHost{a, b} {
		run(t, "ip", "-n", h.ns, "addr", "add", h.net.VTEP.String()+"/24", "dev", "lan0")
		run(t, "ip", "-n", h.ns, "link", "set", "lan0", "up")
	}
	gA := guest(t, a, "tapA", mac(1), "10.60.0.101")
	gB := guest(t, b, "tapB", mac(2), "10.60.0.102")
	gM := guest(t, a, "tapM", mac(3), "10.60.0.103")
	for _, g := range []string{gA, gB, gM} {
		if err := ping(g, "10.60.0.1"); err != nil { // the local gateway: the bridge learns the guest
			t.Fatal(err)
		}
	}

	// Before any route: guests on two hosts do not reach each other.
	if err := ping(gA, "10.60.0.102"); err == nil {
		t.Fatal("gA reached gB with no EVPN entry installed")
	}

	// Type-2 routes alone, no flood list: the ARP request is answered by
	// the bridge from the neighbour entry (neigh_suppress), the frames
	// follow the MAC entries.
	a.sync(t, model.EVPN{})
	b.sync(t, model.EVPN{})
	noFlood := func(e model.EVPN) model.EVPN { return model.EVPN{MACs: e.MACs} }
	for range 2 {
		a.sync(t, noFlood(b.announced))
		b.sync(t, noFlood(a.announced))
	}
	if !hasLocal(a, mac(1)) || !hasLocal(a, mac(3)) || !hasLocal(b, mac(2)) || hasLocal(a, mac(2)) {
		t.Fatalf("local guests: a %v, b %v", a.local, b.local)
	}
	if _, ok := announcedSeq(a, mac(1)); !ok || !slices.ContainsFunc(a.announced.MACs, func(r model.EVPNMAC) bool {
		return r.MAC == mac(1) && r.IP == netip.MustParseAddr("10.60.0.101")
	}) {
		t.Fatalf("a announces %v: want 52:54:00:00:00:01 with 10.60.0.101 (from the bridge's neighbour table)", a.announced.MACs)
	}
	if err := ping(gA, "10.60.0.102"); err != nil {
		t.Fatalf("with MAC/IP entries and ARP suppression: %v\n%s", err, diag(t, a, b, gA, gB))
	}

	// The flood list too; a last pass changes nothing.
	exchange(t, a, b)
	have, err := a.k.Read([]Network{a.net})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Flood{{Device: "gvx6000", VTEP: vtepB}}; !slices.Equal(have.Flood, want) {
		t.Fatalf("a's flood list %v, want %v", have.Flood, want)
	}
	if len(have.MACs) != 1 || have.MACs[0].MAC != mac(2) || have.MACs[0].VTEP != vtepB || len(have.Masters) != 1 || len(have.Neighs) != 1 {
		t.Fatalf("a's entries for b's guest: %+v\n%s", have, run(t, "bridge", "-n", a.ns, "fdb", "show"))
	}
	if err := ping(gB, "10.60.0.103"); err != nil {
		t.Fatal(err)
	}

	// gM moves from a to b: its port on a goes, a port on b with the same
	// MAC and address comes, and it sends one gratuitous ARP. b learns it
	// on the new port (local learning takes b's extern_learn entry over)
	// and announces it with a's Seq + 1.
	oldA := a.announced
	run(t, "ip", "-n", a.ns, "link", "del", "tapM")
	gM2 := guest(t, b, "tapM2", mac(3), "10.60.0.103")
	run(t, "ip", "netns", "exec", gM2, "busybox", "arping", "-U", "-c", "1", "-I", "eth0", "10.60.0.103")
	b.sync(t, oldA) // a has not heard of it yet: its old route is still there
	if seq, ok := announcedSeq(b, mac(3)); !ok || seq != 1 || !hasLocal(b, mac(3)) {
		t.Fatalf("b after the move: local %v, announces %v; want %s local and announced with Seq 1", b.local, b.announced.MACs, mac(3))
	}
	exchange(t, a, b)
	if err := ping(gA, "10.60.0.103"); err != nil {
		t.Fatalf("after the move: %v\n%s", err, run(t, "bridge", "-n", a.ns, "fdb", "show", "dev", "gvx6000"))
	}
	have, err = a.k.Read([]Network{a.net})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(have.MACs, func(m RemoteMAC) bool { return m.MAC == mac(3) }); i < 0 || have.MACs[i].VTEP != vtepB {
		t.Fatalf("a's entry of the moved guest: %+v", have.MACs)
	}

	// A late copy of a's old route reaching b (with a's new set) changes
	// nothing on b: no kernel write, the guest stays announced by b.
	late := model.EVPN{Flood: a.announced.Flood, MACs: slices.Concat(a.announced.MACs, oldA.MACs)}
	if ops := b.sync(t, late); len(ops) > 0 {
		t.Fatalf("a late route of the old host changed b's kernel: %v", ops)
	}
	if ops := b.sync(t, a.announced); len(ops) > 0 { // and its late withdraw
		t.Fatalf("the late withdraw changed b's kernel: %v", ops)
	}
	if seq, ok := announcedSeq(b, mac(3)); !ok || seq != 1 {
		t.Fatalf("b announces %v after the late route", b.announced.MACs)
	}
	if err := ping(gA, "10.60.0.103"); err != nil {
		t.Fatal(err)
	}

	// Everything withdrawn: guestnet's entries go, nothing else does.
	a.sync(t, model.EVPN{})
	have, err = a.k.Read([]Network{a.net})
	if err != nil {
		t.Fatal(err)
	}
	if len(have.Flood)+len(have.MACs)+len(have.Masters)+len(have.Neighs) > 0 || !hasLocal(a, mac(1)) {
		t.Fatalf("a after every withdraw: %+v", have)
	}
}

// diag is what the namespaces hold, for a failure's message.
func diag(t *testing.T, hs ...any) string {
	var b strings.Builder
	for _, h := range hs {
		ns, ok := h.(string)
		if th, isHost := h.(*testHost); isHost {
			ns, ok = th.ns, true
			fmt.Fprintf(&b, "== %s bridge fdb\n%s", ns, run(t, "bridge", "-n", ns, "fdb", "show"))
		}
		if ok {
			fmt.Fprintf(&b, "== %s ip neigh\n%s", ns, run(t, "ip", "-n", ns, "neigh", "show"))
		}
	}
	return b.String()
}
