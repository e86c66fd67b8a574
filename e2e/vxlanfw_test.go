package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/report"
	"github.com/guestnet/guestnet/internal/state"
)

// vxfwSpec is host N's spec of one stretched nat network (VNI 6000).
func vxfwSpec(n, peer int) string {
	return fmt.Sprintf(`bgp:
  asn: 65000
  router_id: 10.10.0.%d
  peers: [{address: 10.10.0.%d, asn: 65000}]
networks:
  stretch:
    mode: nat
    bridge: gst0
    ipv4: 10.60.0.1/24
    vxlan: {vni: 6000}
`, n, peer)
}

// The watch table counts, on a host, what arrives from its VXLAN port
// before guestnet's guard sees it (priority -300, before the guard's
// -200): what crossed the overlay, whatever the receiver then does.
const vxfwWatch = `table bridge watch {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname "gvx6000" udp dport 67 counter comment "dhcp"
		iifname "gvx6000" arp daddr ip 10.60.0.1 counter comment "arpgw"
		iifname "gvx6000" ether saddr %s counter comment "gwmac"
		iifname "gvx6000" ether type 0x8035 ether saddr 52:54:00:60:00:10 counter comment "rarp_own"
		iifname "gvx6000" ether type 0x8035 ether saddr 52:54:00:66:66:66 counter comment "rarp_forged"
		iifname "gvx6000" icmp type echo-request counter comment "ping"
		iifname "gvx6000" ether saddr 52:54:00:77:77:77 counter comment "injected"
	}
}
`

var (
	dropCountRe  = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	dynamicSetRe = regexp.MustCompile(`(?s)(flags dynamic,timeout\n\t\ttimeout \w+\n)\t\telements = \{.*?\}\n(\t\})`)
)

// staticPart is a listing of the guard table less what its rules wrote:
// the elements of its dynamic sets, and its counters.
func staticPart(listing string) string {
	return dynamicSetRe.ReplaceAllString(dropCountRe.ReplaceAllString(listing, "counter packets 0 bytes 0"), "$1$2")
}

var counterRe = regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(\w+)"`)

// watched reads the watch table's counters of ns by comment.
func (l *Lab) watched(ns string) map[string]int {
	l.t.Helper()
	out := map[string]int{}
	for _, m := range counterRe.FindAllStringSubmatch(l.In(ns, "nft", "list", "table", "bridge", "watch"), -1) {
		n, _ := strconv.Atoi(m[1])
		out[m[2]] = n
	}
	return out
}

// vxfwStatus reads the stretched network's VXLAN drops from guestnet status.
func (l *Lab) vxfwStatus(ns string) (report.Status, report.NetworkStatus) {
	l.t.Helper()
	var s report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(ns, "-o", "json", "status")), &s); err != nil {
		l.t.Fatal(err)
	}
	for _, n := range s.Networks {
		if n.Name == "stretch" {
			return s, n
		}
	}
	l.t.Fatalf("status of %s has no network stretch", ns)
	return s, report.NetworkStatus{}
}

// vxlanDropped reports whether status records a drop on gvx6000 of a frame
// from mac of ether type et ("": any) in direction out.
func vxlanDropped(n report.NetworkStatus, out bool, mac, et string) bool {
	for _, x := range n.VXLANDrops {
		if x.Port == "gvx6000" && x.Out == out && x.MAC == mac && (et == "" || x.EtherType == et) && x.Packets > 0 {
			return true
		}
	}
	return false
}

// rarp is QEMU's self-announce after a live migration (qemu_announce_self):
// a broadcast RARP request (ether type 0x8035, op 3) whose sender and
// target hardware addresses are the guest's MAC.
func rarp(mac net.HardwareAddr) []byte {
	b := append(append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), mac...), 0x80, 0x35)
	b = append(b, 0, 1, 8, 0, 6, 4, 0, 3)
	b = append(append(append(append(b, mac...), 0, 0, 0, 0), mac...), 0, 0, 0, 0)
	return append(b, make([]byte, 60-len(b))...)
}

// arpReplyTo is a broadcast ARP reply from mac (sender sip) whose target
// address is tip. The bridge's ARP suppression (neigh_suppress on the
// VXLAN port) keeps requests and gratuitous ARP off that port, not
// replies: this one reaches it, and only the guard keeps it local.
func arpReplyTo(mac net.HardwareAddr, sip, tip netip.Addr) []byte {
	b := append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2)
	b = append(append(append(b, mac...), sip.AsSlice()...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, tip.AsSlice()...)
	return append(b, make([]byte, 60-len(b))...)
}

// vxlanDatagram is a VXLAN packet (VNI 6000) carrying a broadcast frame
// from inner of an experimental ether type.
func vxlanDatagram(inner net.HardwareAddr) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], 6000<<8)
	b = append(append(append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), inner...), 0x88, 0xb5)
	return append(b, make([]byte, 46)...)
}

// nftLoad loads a ruleset (nft -f -) into ns.
func (l *Lab) nftLoad(ns, ruleset string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft -f - in %s: %v\n%s", ns, err, out)
	}
}

// sendUDP sends one datagram from inside ns to dst.
func (l *Lab) sendUDP(ns, dst string, payload []byte) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	if err := n.Do(func() error {
		c, err := net.Dial("udp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	}); err != nil {
		l.t.Fatalf("send UDP from %s to %s: %v", ns, dst, err)
	}
}

// TestVXLANFirewall: two hosts share a stretched network (VNI 6000) over
// the VXLAN device guestnet apply makes (or, without it, one made by hand:
// ip link add gvx6000 type vxlan ... nolearning) with head-end
// replication to the other host (bridge fdb append by hand), each with one
// guest bound by attach. trace on A names B's VTEP for the guest on B.
// Proven with real frames, counted on the other
// host before its own guard sees them:
//   - a guest on A pings and reaches (TCP) the guest on B, which sees its
//     real address (bridged, never masqueraded), while its connection to
//     the pretend internet leaves masqueraded by its own host;
//   - its DHCP DISCOVER and its ARP for the gateway never reach B (the
//     gateway answers on A; the request never even reaches gvx6000 when
//     the port has neigh_suppress on, so a broadcast ARP reply whose
//     target is the gateway, which suppression lets through, stands for
//     the ARP the guard must stop), and no frame from the gateway MAC does; A's
//     status names the drops; with gvx6000 taken out of set vxlan_ports
//     (the control) the same frames do reach B, whose guard drops them
//     coming in, and apply puts the element back;
//   - QEMU's RARP announce from the guest's own MAC crosses to B; from a
//     forged MAC it is dropped on A and status says why;
//   - VXLAN from a guest to its host's VTEP, or routed to the other
//     host's, is dropped; the same datagram from the underlay is taken.
func TestVXLANFirewall(t *testing.T) {
	l := newLab(t)
	a, b, wan := l.NS("vxa"), l.NS("vxb"), l.NS("vxwan")
	l.Veth(a, "lan0", "10.10.0.1/24", b, "lan0", "10.10.0.2/24")
	l.Veth(a, "wan0", "198.51.100.1/24", wan, "eth0", "198.51.100.2/24")
	gwMAC := model.BridgeMAC("stretch")
	macA, macB := "52:54:00:60:00:10", "52:54:00:60:00:20"
	guests := map[string]string{}
	for i, h := range []string{a, b} {
		id, peer := i+1, 2-i
		spec := l.Spec(vxfwSpec(id, peer))
		l.Guestnet(h, "apply", spec)
		name, port, mac, addr := "vga", "vA", macA, "10.60.0.10"
		if h == b {
			name, port, mac, addr = "vgb", "vB", macB, "10.60.0.20"
		}
		g := l.NS(name)
		// No IPv6 from the guests: their link-local claims would be
		// elements of the guard's dynamic sets, which the rendering has not.
		l.must("ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
		l.Veth(g, "eth0", addr+"/24", h, port, "")
		l.must("ip", "-n", g, "link", "set", "eth0", "address", mac, "mtu", "1450")
		l.must("ip", "-n", g, "route", "add", "default", "via", "10.60.0.1")
		l.Guestnet(h, "attach", "stretch", port, "--ip", addr, "--mac", mac)
		guests[h] = g
		if h == a {
			// The kernel's guard is what guestnet renders (what its rules
			// recorded and counted since aside).
			sp, err := specLoad(spec)
			if err != nil {
				t.Fatal(err)
			}
			want := plan.WantGuard(sp.Models(), map[string]state.Net{"stretch": {Ports: []string{port},
				Binds: map[string]model.PortBind{port: {IPs: []netip.Addr{netip.MustParseAddr(addr)}, MAC: mac}}}})
			if got := staticPart(l.In(h, "nft", "list", "table", "bridge", "guestnet")); got != want.String() {
				t.Errorf("nft list table bridge guestnet differs from the rendered guard:\n%s", diffLines(want.String(), got))
			}
		}
		if _, _, code := l.Run(h, "status"); code != 0 {
			t.Fatalf("status on %s: exit %d", h, code)
		}
		if out, err := exec.Command("ip", "-n", h, "link", "show", "gvx6000").CombinedOutput(); err != nil {
			l.must("ip", "-n", h, "link", "add", "gvx6000", "type", "vxlan", "id", "6000", "dstport", "4789",
				"local", fmt.Sprintf("10.10.0.%d", id), "nolearning")
			l.must("ip", "-n", h, "link", "set", "gvx6000", "master", "gst0", "mtu", "1450", "up")
		} else {
			t.Logf("%s: gvx6000 made by guestnet apply: %s", h, strings.TrimSpace(string(out)))
		}
		l.must("bridge", "-n", h, "fdb", "append", "00:00:00:00:00:00", "dev", "gvx6000", "dst", fmt.Sprintf("10.10.0.%d", peer))
		l.nftLoad(h, fmt.Sprintf(vxfwWatch, gwMAC))
	}
	gA, gB := guests[a], guests[b]
	t.Logf("bridge-nf-call-iptables on A: %s", strings.TrimSpace(l.In(a, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")))

	// Cross-host: bridged, real source address.
	waitUntil(t, "guest on A pings the guest on B over VXLAN", 10*time.Second, func() bool { return l.Ping(gA, "10.60.0.20") })
	l.Serve(gB, "10.60.0.20:7000")
	if got, err := l.Dial(gA, "10.60.0.20:7000"); err != nil || got != "10.60.0.10" {
		t.Errorf("guest B saw guest A's connection from %q (err %v), want 10.60.0.10: bridged traffic must not be masqueraded", got, err)
	}
	l.Serve(wan, "198.51.100.2:7000")
	if got, err := l.Dial(gA, "198.51.100.2:7000"); err != nil || got != "198.51.100.1" {
		t.Errorf("the internet saw guest A's connection from %q (err %v), want host A's 198.51.100.1 (masquerade)", got, err)
	}

	// trace names the VTEP of the guest on B once A has the entries EVPN
	// installs (here by hand): its MAC at B's VTEP, its neighbour entry.
	l.must("bridge", "-n", a, "fdb", "replace", macB, "dev", "gvx6000", "dst", "10.10.0.2", "self", "permanent")
	l.must("bridge", "-n", a, "fdb", "replace", macB, "dev", "gvx6000", "master", "static") // whether or not the port learns
	l.must("ip", "-n", a, "neigh", "replace", "10.60.0.20", "lladdr", macB, "dev", "gst0", "nud", "noarp")
	tr, _, code := l.Run(a, "trace", "10.60.0.10", "10.60.0.20", "tcp/7000")
	if want := "bridged over gvx6000 to VTEP 10.10.0.2"; code != 0 || !strings.Contains(tr, want) || strings.Contains(tr, "SNAT") {
		t.Errorf("trace guest A -> guest B: exit %d, want %q and no SNAT:\n%s", code, want, tr)
	} else {
		t.Logf("trace on A:\n%s", tr)
	}

	// DHCP, ARP for the gateway, the gateway MAC: kept on A.
	hwA, _ := net.ParseMAC(macA)
	disc, err := dhcpv4.NewDiscovery(hwA)
	if err != nil {
		t.Fatal(err)
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	dhcpFrame := frame{src: hwA, dst: bcast, sip: netip.IPv4Unspecified(), dip: netip.MustParseAddr("255.255.255.255"), msg: disc}
	gwARP := arpReplyTo(hwA, netip.MustParseAddr("10.60.0.10"), netip.MustParseAddr("10.60.0.1"))
	l.rawSend(gA, dhcpFrame)
	l.rawSendBytes(gA, gwARP)
	l.In(gA, "busybox", "arping", "-c", "1", "-w", "2", "-I", "eth0", "10.60.0.1") // answered by A: exit 0
	l.Ping(a, "10.60.0.20")                                                        // host A's own frames, from the gateway MAC
	_, stA := l.vxfwStatus(a)
	for _, c := range []struct {
		what, mac, et string
	}{{"DHCP DISCOVER", macA, "ip"}, {"ARP for the gateway", macA, "arp"}, {"the gateway MAC", gwMAC, ""}} {
		if !vxlanDropped(stA, true, c.mac, c.et) {
			t.Errorf("A's status names no drop of %s going out on gvx6000 (MAC %s, ether type %s): %+v", c.what, c.mac, c.et, stA.VXLANDrops)
		}
	}
	w := l.watched(b)
	t.Logf("B's VXLAN port saw: %v", w)
	if w["ping"] == 0 {
		t.Errorf("B's watch counted no echo request from A: it cannot tell what crosses (%v)", w)
	}
	for _, k := range []string{"dhcp", "arpgw", "gwmac"} {
		if w[k] != 0 {
			t.Errorf("%d %s frames crossed to B, want 0", w[k], k)
		}
	}

	// The control: without A's element the same frames cross, and B's
	// guard drops them coming in.
	l.In(a, "nft", "delete", "element", "bridge", "guestnet", model.GuardVXLANPorts, `{ "gvx6000" }`)
	l.rawSend(gA, dhcpFrame)
	l.rawSendBytes(gA, gwARP)
	w = l.watched(b)
	if w["dhcp"] == 0 || w["arpgw"] == 0 {
		t.Errorf("control: with gvx6000 out of A's %s, B saw DHCP %d, ARP for the gateway %d; want both > 0", model.GuardVXLANPorts, w["dhcp"], w["arpgw"])
	}
	_, stB := l.vxfwStatus(b)
	if !vxlanDropped(stB, false, macA, "ip") || !vxlanDropped(stB, false, macA, "arp") {
		t.Errorf("B's guard did not drop A's DHCP and gateway ARP coming in: %+v", stB.VXLANDrops)
	}
	l.Guestnet(a, "apply", l.Spec(vxfwSpec(1, 2)))
	if got := l.In(a, "nft", "list", "set", "bridge", "guestnet", model.GuardVXLANPorts); !strings.Contains(got, `"gvx6000"`) {
		t.Errorf("apply did not put gvx6000 back in %s:\n%s", model.GuardVXLANPorts, got)
	}

	// RARP: from the port's own MAC it crosses; from another it is dropped.
	forged, _ := net.ParseMAC("52:54:00:66:66:66")
	l.rawSendBytes(gA, rarp(hwA), rarp(forged))
	waitUntil(t, "A's RARP announce reaches B", 3*time.Second, func() bool { return l.watched(b)["rarp_own"] > 0 })
	if n := l.watched(b)["rarp_forged"]; n != 0 {
		t.Errorf("%d RARP frames from a forged MAC crossed to B, want 0", n)
	}
	var s report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(a, "-o", "json", "status")), &s); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range s.Networks {
		for _, pg := range n.Guard {
			for _, x := range pg.DroppedOther {
				if pg.Port == "vA" && x.MAC == "52:54:00:66:66:66" && x.EtherType == "0x8035" {
					found = true
					t.Logf("A's status: %s", x.Summary())
				}
			}
		}
	}
	if !found {
		t.Errorf("A's status records no RARP dropped from the forged MAC on vA")
	}

	// VXLAN from a guest: neither to its host's VTEP nor routed to the
	// other host's; from the underlay it is taken.
	aWatch := func() int { return l.watched(a)["injected"] }
	inner, _ := net.ParseMAC("52:54:00:77:77:77")
	l.sendUDP(gA, "10.10.0.1:4789", vxlanDatagram(inner))
	l.sendUDP(gA, "10.60.0.1:4789", vxlanDatagram(inner))
	l.sendUDP(gA, "10.10.0.2:4789", vxlanDatagram(inner))
	time.Sleep(300 * time.Millisecond) // datagrams in flight: nothing to wait for when they are dropped
	if n, m := aWatch(), l.watched(b)["injected"]; n != 0 || m != 0 {
		t.Errorf("a guest's VXLAN datagrams came out of a VXLAN device: %d on A, %d on B; want 0", n, m)
	}
	l.sendUDP(b, "10.10.0.1:4789", vxlanDatagram(inner))
	waitUntil(t, "the underlay's VXLAN datagram comes out of A's gvx6000", 3*time.Second, func() bool { return aWatch() > 0 })
	if out, _, _ := l.Run(a, "status"); !strings.Contains(out, "KEPT LOCAL") {
		t.Errorf("status text names no frame kept off gvx6000:\n%s", out)
	}
}
