package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/report"
)

// udpSink records the source address of every datagram sent to addr in ns.
type udpSink struct {
	mu   sync.Mutex
	seen []string
}

func (l *Lab) udpSink(ns, addr string) *udpSink {
	pc := l.listenUDP(ns, addr)
	s := &udpSink{}
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen = append(s.seen, from.(*net.UDPAddr).IP.String())
			s.mu.Unlock()
		}
	}()
	return s
}

// got reports whether a datagram from src arrives within a short wait,
// and forgets what was seen so far.
func (s *udpSink) got(src string) bool {
	deadline := time.Now().Add(400 * time.Millisecond)
	for {
		s.mu.Lock()
		ok := slices.Contains(s.seen, src)
		if ok || time.Now().After(deadline) {
			s.seen = nil
			s.mu.Unlock()
			return ok
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// udpSend sends three datagrams from laddr (an address of ns) to raddr.
func (l *Lab) udpSend(ns, laddr, raddr string) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	err = n.Do(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(laddr)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(raddr)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			c.Write([]byte("spoof?"))
		}
		return nil
	})
	if err != nil {
		l.t.Fatalf("send from %s in %s: %v", laddr, ns, err)
	}
}

// arpClaim makes ns announce addr as its own (unsolicited ARP), the way
// an ARP-poisoning guest would: addr is its own for the moment.
func (l *Lab) arpClaim(ns, addr string) {
	l.t.Helper()
	l.must("ip", "-n", ns, "addr", "add", addr+"/32", "dev", "eth0")
	defer l.must("ip", "-n", ns, "addr", "del", addr+"/32", "dev", "eth0")
	l.In(ns, "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", "eth0", "-s", addr, addr)
}

// TestAntiSpoofing prints the matrix of what bound and unbound guest ports
// may send, with real frames between guest namespaces: a port bound by
// attach --ip --mac, one bound by --mac to its DHCP static host's address,
// a port bound by the lease guestnet serve gave it, and
// an unbound port as the control (spoofing from it works, so a blocked row
// is the binding's doing). Then the bindings survive `nft flush ruleset`
// and a daemon restart.
func TestAntiSpoofing(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	spec := l.Spec(dhcpSpec)
	d := l.Serve_(host, spec)

	gU := l.Guest(host, "default", "gu", "vgu", "10.99.0.40/24", "10.99.0.1")
	l.must("ip", "-n", gU, "link", "set", "eth0", "address", "02:00:00:00:00:40")
	gA := l.NS("ga")
	l.Veth(gA, "eth0", "10.99.0.20/24", host, "vga", "")
	l.must("ip", "-n", gA, "link", "set", "eth0", "address", "02:00:00:00:00:20")
	l.Guestnet(host, "attach", "default", "vga", "--ip", "10.99.0.20", "--mac", "02:00:00:00:00:20")
	// gS is bound by --mac alone: its address comes from the spec's DHCP
	// static host for that MAC (10.99.0.10), without any DHCP exchange.
	gS := l.NS("gs")
	l.Veth(gS, "eth0", "10.99.0.10/24", host, "vgs", "")
	l.must("ip", "-n", gS, "link", "set", "eth0", "address", "02:00:00:00:00:aa")
	l.must("ip", "-n", gS, "addr", "add", "10.99.0.11/24", "dev", "eth0")
	l.must("ip", "-n", gS, "neigh", "replace", "10.99.0.40", "lladdr", "02:00:00:00:00:40", "dev", "eth0")
	l.Guestnet(host, "attach", "default", "vgs", "--mac", "02:00:00:00:00:aa")
	gL := l.dhcpGuest(host, "default", "gl", "vgl", "02:00:00:00:00:30")
	if out, err := l.tryIn(gL, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript()); err != nil {
		t.Fatalf("DHCP from the leased guest: %v\n%s", err, out)
	}
	leased := l.addrOf(gL)
	if leased == "" {
		t.Fatal("the leased guest has no address")
	}
	// Second addresses to spoof from, and neighbours known in advance so
	// that no ARP is needed for the one-way datagrams.
	l.must("ip", "-n", gA, "addr", "add", "10.99.0.21/24", "dev", "eth0")
	l.must("ip", "-n", gL, "addr", "add", "10.99.0.31/24", "dev", "eth0")
	l.must("ip", "-n", gU, "addr", "add", "10.99.0.41/24", "dev", "eth0")
	for _, g := range []string{gA, gL} {
		l.must("ip", "-n", g, "neigh", "replace", "10.99.0.40", "lladdr", "02:00:00:00:00:40", "dev", "eth0")
	}
	l.must("ip", "-n", gU, "neigh", "replace", "10.99.0.20", "lladdr", "02:00:00:00:00:20", "dev", "eth0")
	// The host takes any ARP update at once (no 1 s lock after the last),
	// so that an ARP claim would poison it if it got through.
	l.In(host, "sysctl", "-qw", "net.ipv4.neigh.gnat0.locktime=0")
	toU := l.udpSink(gU, "10.99.0.40:7000")
	toA := l.udpSink(gA, "10.99.0.20:7000")

	sendU := func(g, src string) bool { l.udpSend(g, src, "10.99.0.40:7000"); return toU.got(src) }
	l.matrix("guest port sends | allowed | arrived", []check{
		{"bound (attach): own MAC and address", true, func() bool { return sendU(gA, "10.99.0.20") }},
		{"bound (attach): spoofed source address", false, func() bool { return sendU(gA, "10.99.0.21") }},
		{"bound (attach): spoofed source MAC", false, func() bool {
			l.must("ip", "-n", gA, "link", "set", "eth0", "address", "02:00:00:00:00:21")
			defer l.must("ip", "-n", gA, "link", "set", "eth0", "address", "02:00:00:00:00:20")
			return sendU(gA, "10.99.0.20")
		}},
		{"bound (attach): ARP claiming a neighbour's address", false, func() bool {
			l.Ping(host, "10.99.0.40") // the host learns the real owner first
			l.arpClaim(gA, "10.99.0.40")
			out := l.In(host, "ip", "neigh", "show", "10.99.0.40", "dev", "gnat0")
			return strings.Contains(out, "02:00:00:00:00:20")
		}},
		{"bound (attach): ping the gateway", true, func() bool { return l.Ping(gA, "10.99.0.1") }},
		{"bound (static host of its MAC): the host's address", true, func() bool { return sendU(gS, "10.99.0.10") }},
		{"bound (static host of its MAC): another address", false, func() bool { return sendU(gS, "10.99.0.11") }},
		{"bound (lease): own MAC and leased address", true, func() bool { return sendU(gL, leased) }},
		{"bound (lease): spoofed source address", false, func() bool { return sendU(gL, "10.99.0.31") }},
		{"bound (lease): DHCP renewal", true, func() bool {
			_, err := l.tryIn(gL, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript())
			return err == nil && l.addrOf(gL) == leased
		}},
		{"unbound (control): any source address", true, func() bool {
			l.udpSend(gU, "10.99.0.41", "10.99.0.20:7000")
			return toA.got("10.99.0.41")
		}},
		{"unbound (control): ARP claiming a neighbour's address", true, func() bool {
			l.Ping(host, "10.99.0.20")
			defer l.must("ip", "-n", host, "neigh", "del", "10.99.0.20", "dev", "gnat0")
			l.arpClaim(gU, "10.99.0.20")
			out := l.In(host, "ip", "neigh", "show", "10.99.0.20", "dev", "gnat0")
			return strings.Contains(out, "02:00:00:00:00:40")
		}},
	})

	// Frames neither IPv4 nor ARP from the bound port: IPv6 is judged by
	// first-come claims now (spoof6_test.go): gA's link-local address,
	// MLD and DAD pass, and an address outside the network's IPv6
	// prefixes (this network has none) is dropped and remembered in set
	// dropped6, not dropped_other. An ARP request as a VLAN subinterface
	// would send it, tagged 802.1Q (VLAN 10; crafted, as this kernel has no
	// 8021q module), from gA's own MAC and for its own VLAN address, is
	// dropped, and set dropped_other remembers it by ether type.
	l.In(gA, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
	l.must("ip", "-n", gA, "-6", "addr", "add", "fd00:99::20/64", "dev", "eth0", "nodad")
	l.tryIn(gA, "busybox", "ping", "-c", "1", "-W", "1", "fd00:99::1") // its neighbour solicitation is from fd00:99::20
	l.rawSendBytes(gA, vlanTag(10, arpRequest(net.HardwareAddr{2, 0, 0, 0, 0, 0x20}, netip.MustParseAddr("10.99.10.20"), netip.MustParseAddr("10.99.10.1"))))
	waitFor(t, "gA's IPv6 outside the prefixes in set dropped6, and its 802.1Q frame in set dropped_other", func() bool {
		other, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "dropped_other")
		v6, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "dropped6")
		return strings.Contains(v6, `"vga" . 02:00:00:00:00:20 . fd00:99::20`) && strings.Contains(other, `"vga" . 02:00:00:00:00:20 . 8021q`) &&
			!strings.Contains(other, "ip6")
	})

	// trace explains the drop from the bound port, and passes its own address.
	if out, _, code := l.Run(host, "trace", "10.99.0.21", "203.0.113.10", "tcp/8080", "--port", "vga"); code != 1 || !strings.Contains(out, "10.99.0.21 is dropped as spoofed") {
		t.Errorf("trace of a spoofed source from vga: exit %d\n%s", code, out)
	}
	if out, _, code := l.Run(host, "trace", "10.99.0.20", "203.0.113.10", "tcp/8080", "--port", "vga"); code != 0 {
		t.Errorf("trace of vga's own address: exit %d\n%s", code, out)
	}

	// status names each port's binding, and the unbound one as unrestricted.
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	byPort := map[string]report.PortGuard{}
	for _, pg := range st.Networks[0].Guard {
		byPort[pg.Port] = pg
	}
	for port, want := range map[string]string{"vga": "bound attach 10.99.0.20", "vgl": "bound lease " + leased, "vgu": "unrestricted  "} {
		pg := byPort[port]
		ips := ""
		if len(pg.IPs) > 0 {
			ips = pg.IPs[0].String()
		}
		if got := fmt.Sprintf("%s %s %s", pg.State, strings.Join(pg.By, "+"), ips); got != want {
			t.Errorf("status of %s: got %q, want %q", port, got, want)
		}
	}
	if st.SpoofDropped == 0 {
		t.Error("status counts no frame dropped as spoofed")
	}
	if text := l.Guestnet(host, "status"); !strings.Contains(text, "vgu") || !strings.Contains(text, "UNRESTRICTED") {
		t.Errorf("status text does not flag the unbound port:\n%s", text)
	}

	// Each dropped source is remembered, with its own counter: status lists
	// it under its port, and doctor explains it.
	spoofed := map[string]bool{}
	for _, pg := range st.Networks[0].Guard {
		for _, x := range pg.Spoofed {
			if x.Packets == 0 || x.Ago > time.Hour {
				t.Errorf("drop record of %s: %+v", pg.Port, x)
			}
			spoofed[x.String()] = true
		}
	}
	for _, want := range []string{
		`"vga" . 02:00:00:00:00:20 . 10.99.0.21`, // spoofed address
		`"vga" . 02:00:00:00:00:21 . 10.99.0.20`, // spoofed MAC
		`"vga" . 02:00:00:00:00:20 . 10.99.0.40`, // ARP claim
		`"vgs" . 02:00:00:00:00:aa . 10.99.0.11`,
		`"vgl" . 02:00:00:00:00:30 . 10.99.0.31`,
	} {
		if !spoofed[want] {
			t.Errorf("status has no drop record %s; has %v", want, spoofed)
		}
	}
	// The other frames are listed under their port, by ether type, as nft
	// names them (the listing above), each with a count.
	other := map[string]uint64{}
	for _, x := range byPort["vga"].DroppedOther {
		if x.MAC == "02:00:00:00:00:20" {
			other[x.EtherType] = x.Packets
		}
	}
	if other["ip6"] != 0 || other["8021q"] == 0 {
		t.Errorf("status -o json lists vga's other dropped frames as %+v, want 8021q with a count and no ip6", byPort["vga"].DroppedOther)
	}
	t.Logf("vga's frames neither IPv4, IPv6 nor ARP: %d 8021q", other["8021q"])
	if text := l.Guestnet(host, "status"); !strings.Contains(text, "address fd00:99::20") || !strings.Contains(text, "(ether type 8021q) from MAC 02:00:00:00:00:20") {
		t.Errorf("status text does not list vga's IPv6 and VLAN-tagged drops:\n%s", text)
	} else {
		t.Logf("status:\n%s", text[strings.Index(text, "GUEST PORT"):])
	}
	fs, _ := l.doctor(host)
	for _, f := range fs {
		if f.Check == "not-ipv4" {
			t.Logf("doctor: %s %s: %s | evidence %v | fix %s", f.Severity, f.Check, f.What, f.Evidence, f.Fix)
		}
	}
	if !slices.ContainsFunc(fs, func(f finding) bool {
		return f.Check == "not-ipv4" && f.Severity == "warning" && strings.Contains(f.What, "guest port vga sent") && strings.Contains(f.What, "VLAN-tagged") &&
			strings.Contains(strings.Join(f.Evidence, "\n"), "set dropped_other") && strings.Contains(f.Fix, "anti_spoofing: false on network default")
	}) {
		t.Errorf("doctor has no warning not-ipv4 finding naming vga's VLAN-tagged frames: %+v", fs)
	}
	var vga *finding
	for i, f := range fs {
		if f.Check == "spoofed" && strings.Contains(f.What, "vga") {
			vga = &fs[i]
		}
	}
	if vga == nil || !strings.Contains(strings.Join(vga.Evidence, "\n"), "address 10.99.0.21") || !strings.Contains(vga.Fix, "guestnet attach default vga") {
		t.Errorf("doctor does not explain vga's drops: %+v", fs)
	}

	// Drift: the daemon puts the table back, with the leased binding.
	l.must("ip", "netns", "exec", host, "nft", "flush", "ruleset")
	waitFor(t, "leased binding back after nft flush ruleset", func() bool {
		out, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "learned")
		return strings.Contains(out, leased)
	})
	// The renewal's hook flushed the second address and the neighbour.
	l.must("ip", "-n", gL, "addr", "replace", "10.99.0.31/24", "dev", "eth0")
	l.must("ip", "-n", gL, "neigh", "replace", "10.99.0.40", "lladdr", "02:00:00:00:00:40", "dev", "eth0")
	l.expect("bound (lease) after flush ruleset: spoofed source address", false, sendU(gL, "10.99.0.31"))
	l.expect("bound (attach) after flush ruleset: spoofed source address", false, sendU(gA, "10.99.0.21"))

	// Tampering: a flushed check chain lets everything through, and is drift.
	l.must("ip", "netns", "exec", host, "nft", "flush", "chain", "bridge", "guestnet", "check")
	waitFor(t, "the check chain rewritten after nft flush chain", func() bool {
		out, _ := l.tryIn(host, "nft", "list", "chain", "bridge", "guestnet", "check")
		return strings.Contains(out, "goto spoofed")
	})
	waitFor(t, "the leased binding back after the rewrite", func() bool {
		out, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "learned")
		return strings.Contains(out, leased)
	})
	l.expect("bound (attach) after a flushed check chain: spoofed source address", false, sendU(gA, "10.99.0.21"))

	// Restart: the binding comes from the lease on disk, not from memory.
	d.Stop()
	l.must("ip", "netns", "exec", host, "nft", "delete", "table", "bridge", "guestnet")
	l.Serve_(host, spec)
	out := l.In(host, "nft", "list", "set", "bridge", "guestnet", "learned")
	if !strings.Contains(out, leased) || !strings.Contains(out, "02:00:00:00:00:30") {
		t.Errorf("after a restart the leased port is not bound again:\n%s", out)
	}
	l.expect("bound (lease) after restart: spoofed source address", false, sendU(gL, "10.99.0.31"))
	l.expect("bound (lease) after restart: leased address", true, sendU(gL, leased))
	if t.Failed() {
		t.Logf("host:\n%s\nguest:\n%s", l.In(host, "nft", "list", "table", "bridge", "guestnet"), l.In(gL, "ip", "addr"))
	}
}

// arpRequest is a broadcast ARP request from mac and sip for tip.
func arpRequest(mac net.HardwareAddr, sip, tip netip.Addr) []byte {
	b := append(bytes.Repeat([]byte{0xff}, 6), mac...)
	b = append(b, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1)
	b = append(append(b, mac...), sip.AsSlice()...)
	return append(append(b, make([]byte, 6)...), tip.AsSlice()...)
}

// vlanTag puts an 802.1Q tag with VLAN ID vid into an Ethernet frame, as a
// VLAN subinterface sends it: nft's ether type then reads 8021q.
func vlanTag(vid uint16, b []byte) []byte {
	return append(append(slices.Clone(b[:12]), 0x81, 0x00, byte(vid>>8), byte(vid)), b[12:]...)
}
