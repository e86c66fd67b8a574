package e2e

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/report"
)

const spoof6Spec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
`

// TestAntiSpoofing6 is the IPv6 spoofing matrix, with real frames between
// guest namespaces on veths in the bridge, and real address configuration:
// the kernel's SLAAC from radvd's router advertisements (EUI-64,
// stable-privacy, temporary addresses), its duplicate address detection,
// and radvd run by a guest. Each row that must be blocked is also found in
// the guard's sets: the drop is the guard's doing, with its reason.
//
// The test runs `guestnet apply` (no daemon), so radvd in the host
// namespace sends the router advertisements for SLAAC (guestnet serve's RA
// service would); the bridge's IPv6 address is apply's.
func TestAntiSpoofing6(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(spoof6Spec))
	if !strings.Contains(l.In(host, "ip", "-6", "addr", "show", "dev", "gnat0"), "fd42:99::1/64") { // apply makes it since the host helper's merge
		l.must("ip", "-n", host, "addr", "add", "fd42:99::1/64", "dev", "gnat0", "nodad")
	}
	l.In(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	l.radvd(host, "gnat0", "fd42:99::/64")

	// The guests: gu receives (a fixed address, no DAD), ga uses EUI-64,
	// gs stable-privacy, gt temporary addresses, gd is bound by attach
	// --ip, gr runs radvd, gn is gr's neighbour.
	gU := l.guest6(host, "gu", "vgu", "02:00:00:00:06:40", []string{"accept_ra=0"}, "--ip", "fd42:99::40")
	l.must("ip", "-n", gU, "addr", "add", "fd42:99::40/64", "dev", "eth0", "nodad")
	gA := l.guest6(host, "ga", "vga", "02:00:00:00:06:0a", nil)
	gS := l.guest6(host, "gs", "vgs", "02:00:00:00:06:05", []string{"stable_secret=fd42:1:2:3:4:5:6:7", "addr_gen_mode=2"})
	gT := l.guest6(host, "gt", "vgt", "02:00:00:00:06:07", []string{"use_tempaddr=2"})
	gD := l.guest6(host, "gd", "vgd", "02:00:00:00:06:0d", []string{"accept_ra=0"}, "--ip", "fd42:99::20", "--mac", "02:00:00:00:06:0d")
	for _, a := range []string{"fd42:99::20/64", "fd42:99::21/64"} {
		l.must("ip", "-n", gD, "addr", "add", a, "dev", "eth0", "nodad")
	}
	addrA := l.slaac(gA, "")
	addrS := l.slaac(gS, "")
	addrT := l.slaac(gT, "temporary")
	eui := netip.MustParseAddr("fd42:99::ff:fe00:60a") // 02:00:00:00:06:0a, universal/local bit flipped
	if addrA != eui {
		t.Errorf("ga's SLAAC address is %s, want the EUI-64 one %s", addrA, eui)
	}
	if addrS == netip.MustParseAddr("fd42:99::ff:fe00:605") || !strings.Contains(l.In(gS, "sysctl", "-n", "net.ipv6.conf.eth0.addr_gen_mode"), "2") {
		t.Errorf("gs's address %s is not a stable-privacy one", addrS)
	}
	t.Logf("SLAAC: EUI-64 %s, stable-privacy %s, temporary %s", addrA, addrS, addrT)

	sink := l.udp6Sink(gU, "[fd42:99::40]:7000")
	macU := "02:00:00:00:06:40"
	// Senders that spoof know the sink's MAC beforehand, so that the frame
	// judged is the datagram itself, not a neighbour solicitation.
	static := func(ns string) {
		l.must("ip", "-n", ns, "neigh", "replace", "fd42:99::40", "lladdr", macU, "dev", "eth0", "nud", "permanent")
	}
	static(gA)
	static(gD)
	// gs claims fd42:99::77 first, by its first packet; ga then tries it.
	l.must("ip", "-n", gS, "addr", "add", "fd42:99::77/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", gA, "addr", "add", "fd42:99::77/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", gA, "addr", "add", "fd99::5/64", "dev", "eth0", "nodad")
	send := func(ns string, src netip.Addr) func() bool {
		return func() bool {
			l.udp6Send(ns, src)
			return sink.got(src.String())
		}
	}
	l.matrix("IPv6: what a guest port may send | want | got", []check{
		{"ga, EUI-64 SLAAC address (ND resolves the sink)", true, send(gA, addrA)},
		{"gs, stable-privacy SLAAC address", true, send(gS, addrS)},
		{"gt, temporary address", true, send(gT, addrT)},
		{"gd (attach --ip fd42:99::20), from fd42:99::20", true, send(gD, netip.MustParseAddr("fd42:99::20"))},
		{"gd, from fd42:99::21 (not bound)", false, send(gD, netip.MustParseAddr("fd42:99::21"))},
		{"gs claims fd42:99::77 by its first packet", true, send(gS, netip.MustParseAddr("fd42:99::77"))},
		{"ga, from fd42:99::77 (held by gs)", false, send(gA, netip.MustParseAddr("fd42:99::77"))},
		{"ga, from fd99::5 (outside the prefix)", false, send(gA, netip.MustParseAddr("fd99::5"))},
		{"ga, its own address again", true, send(gA, addrA)},
	})

	// Duplicate address detection: gt takes ga's address; its DAD
	// solicitation passes, ga defends, and gt's address fails DAD.
	l.must("ip", "-n", gT, "addr", "add", addrA.String()+"/64", "dev", "eth0")
	waitForLong(t, "gt's copy of ga's address to fail DAD", func() bool {
		return strings.Contains(l.In(gT, "ip", "-6", "addr", "show", "dev", "eth0"), "dadfailed")
	})
	t.Logf("gt's DAD for %s (held by ga) failed: ga defended it", addrA)

	// RA guard: radvd in guest gr advertises its own prefix and a default
	// route; gn, on the same bridge, must get neither.
	gR := l.guest6(host, "gr", "vgr", "02:00:00:00:06:0e", []string{"forwarding=1"})
	l.In(gR, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	l.radvd(gR, "eth0", "fd66:6::/64")
	gN := l.guest6(host, "gn", "vgn", "02:00:00:00:06:0f", nil)
	addrN := l.slaac(gN, "") // the host's RAs reach gn
	lladdrR := l.linkLocal(gR)
	// Until the guard has dropped an RA of gr's: radvd sent its first ones
	// (and its answer to gn's solicitation) by then.
	if !h6Poll(10*time.Second, func() bool { return l.dropped6(host, "vgr", model.Drop6Router, lladdrR) }) {
		t.Fatalf("no router advertisement of gr's dropped in 10 s: is radvd sending?")
	}
	addrsN, routesN := l.In(gN, "ip", "-6", "addr", "show", "dev", "eth0"), l.In(gN, "ip", "-6", "route", "show")
	l.expect("gr's radvd RA -> gn (prefix fd66:6::/64)", false, strings.Contains(addrsN, "fd66:6:"))
	l.expect("gr's radvd RA -> gn (default route via gr)", false, strings.Contains(routesN, lladdrR.String()))
	if !strings.Contains(routesN, "default") {
		t.Logf("gn has no default route at all (the host's radvd here sets none): %s", routesN)
	}
	t.Logf("gn has %s from the host's RA, and from gr's nothing:\n%s", addrN, routesN)

	// A neighbour advertisement for gs's address, crafted by ga (raw
	// socket, from its own link-local address, override flag): gu must
	// keep gs's MAC for it.
	if !l.Ping(gU, addrS.String()) {
		t.Fatalf("gu cannot reach gs at %s", addrS)
	}
	l.sendNA(gA, "02:00:00:00:06:0a", l.linkLocal(gA), addrS)
	if !h6Poll(5*time.Second, func() bool { return l.dropped6(host, "vga", model.Drop6NA, addrS) }) {
		t.Errorf("ga's neighbour advertisement for %s was not recorded as dropped", addrS)
	}
	neigh := l.In(gU, "ip", "-6", "neigh", "show", addrS.String(), "dev", "eth0")
	l.expect("ga's NA for gs's address -> gu's neighbour cache", true, strings.Contains(neigh, "02:00:00:00:06:0a") == false && strings.Contains(neigh, "02:00:00:00:06:05"))

	// gd is bound to its MAC: IPv6 from another MAC, even from its own
	// address, is dropped (no foreign MAC reaches the bridge's forwarding
	// database from it).
	l.sendNA(gD, "02:00:00:00:06:99", netip.MustParseAddr("fd42:99::20"), netip.MustParseAddr("fd42:99::20"))

	// A DHCPv6 lease is a claim too (apply.ClaimLease6, for the server to
	// call): gn's leased address is refused to ga before gn ever sends
	// from it, and a lease of an address another port holds is refused.
	hostNS, err := netns.Open(host)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()
	leased := netip.MustParseAddr("fd42:99::150")
	if err := apply.ClaimLease6(hostNS, "vgn", "02:00:00:00:06:0f", leased, time.Hour); err != nil {
		t.Fatalf("claim gn's lease: %v", err)
	}
	if err := apply.ClaimLease6(hostNS, "vgn", "02:00:00:00:06:0f", addrA, time.Hour); !errors.Is(err, apply.ErrHeld6) {
		t.Errorf("a lease of ga's address on gn's port: %v, want ErrHeld6", err)
	}
	l.must("ip", "-n", gA, "addr", "add", leased.String()+"/64", "dev", "eth0", "nodad")
	l.must("ip", "-n", gN, "addr", "add", leased.String()+"/64", "dev", "eth0", "nodad")
	static(gN)
	l.matrix("IPv6: a DHCPv6 lease's address | want | got", []check{
		{"ga, from gn's leased fd42:99::150", false, send(gA, leased)},
		{"gn, from its leased fd42:99::150", true, send(gN, leased)},
	})

	// The drops, from the guard's sets, each with its port and reason.
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	byPort := map[string]report.PortGuard{}
	for _, pg := range st.Networks[0].Guard {
		byPort[pg.Port] = pg
	}
	type want struct {
		port string
		kind model.Drop6Kind
		ip   netip.Addr
		why  string
	}
	for _, w := range []want{
		{"vgd", model.Drop6Source, netip.MustParseAddr("fd42:99::21"), "not among the port's bound IPv6 addresses"},
		{"vga", model.Drop6Source, netip.MustParseAddr("fd42:99::77"), "address held by port vgs"},
		{"vga", model.Drop6Source, netip.MustParseAddr("fd99::5"), "outside the network's IPv6 prefix"},
		{"vgr", model.Drop6Router, lladdrR, "router advertisement"},
		{"vga", model.Drop6NA, addrS, "held by port vgs"},
		{"vga", model.Drop6Source, leased, "address held by port vgn"},
		{"vgd", model.Drop6Source, netip.MustParseAddr("fd42:99::20"), "the port is bound to MAC 02:00:00:00:06:0d"},
	} {
		i := slices.IndexFunc(byPort[w.port].Dropped6, func(x model.Drop6) bool { return x.Kind == w.kind && x.IP == w.ip })
		if i < 0 {
			t.Errorf("no %s drop of %s recorded for port %s: %+v", w.kind, w.ip, w.port, byPort[w.port].Dropped6)
			continue
		}
		x := byPort[w.port].Dropped6[i]
		if x.Packets == 0 || !strings.Contains(x.Why, w.why) {
			t.Errorf("port %s: %s, want a count and %q", w.port, x.Summary(), w.why)
		}
		t.Logf("%s: DROPPED %s", w.port, x.Summary())
	}
	// A normal guest's IPv6 is not dropped, and no IPv6 counts as "other".
	for _, port := range []string{"vgs", "vgt", "vgn", "vgu"} {
		if d := byPort[port].Dropped6; len(d) > 0 {
			t.Errorf("port %s of a normal guest has IPv6 drops: %+v", port, d)
		}
	}
	for port, pg := range byPort {
		for _, x := range pg.DroppedOther {
			if x.EtherType == "ip6" {
				t.Errorf("port %s: IPv6 still counted as other: %s", port, x.Summary())
			}
		}
	}
	// Claims: each guest holds its own addresses, gs fd42:99::77 too.
	for port, addrs := range map[string][]netip.Addr{"vga": {addrA}, "vgs": {addrS, netip.MustParseAddr("fd42:99::77")}, "vgt": {addrT}} {
		for _, a := range addrs {
			if !slices.Contains(byPort[port].Claims6, a) {
				t.Errorf("port %s does not hold %s: claims %v", port, a, byPort[port].Claims6)
			}
		}
	}
	if text := l.Guestnet(host, "status"); !strings.Contains(text, "IPv6 claimed first") || !strings.Contains(text, "address held by port vgs") {
		t.Errorf("status text lacks the claims or the reasons:\n%s", text)
	} else {
		t.Logf("status:\n%s", text[strings.Index(text, "GUEST PORT"):])
	}
}

// guest6 makes a guest namespace whose eth0 (MAC mac) is a veth into the
// bridge, attached with `guestnet attach default hostIf ARGS` before the
// guest's side comes up (so that its first DAD is seen), with IPv6
// sysctls of eth0 set first.
func (l *Lab) guest6(host, name, hostIf, mac string, sysctls []string, attach ...string) string {
	g := l.NS(name)
	l.must("ip", "-n", g, "link", "add", "eth0", "type", "veth", "peer", "name", hostIf, "netns", host)
	l.must("ip", "-n", g, "link", "set", "eth0", "address", mac)
	l.Guestnet(host, append([]string{"attach", "default", hostIf}, attach...)...)
	for _, s := range sysctls {
		l.In(g, "sysctl", "-qw", "net.ipv6.conf.eth0."+s)
	}
	l.must("ip", "-n", g, "link", "set", "eth0", "up")
	return g
}

// slaac waits for the guest's global address in fd42:99::/64 (with flag,
// e.g. "temporary", one that has it) to leave the tentative state.
func (l *Lab) slaac(ns, flag string) netip.Addr {
	l.t.Helper()
	var got netip.Addr
	waitForLong(l.t, "a SLAAC address in "+ns, func() bool {
		for _, line := range strings.Split(l.In(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "inet6" || !strings.HasPrefix(f[1], "fd42:99:") || strings.Contains(line, "tentative") ||
				!strings.Contains(line, "dynamic") || (flag != "" && !strings.Contains(line, flag)) || (flag == "" && strings.Contains(line, "temporary")) {
				continue
			}
			got = netip.MustParsePrefix(f[1]).Addr()
			return true
		}
		return false
	})
	return got
}

// linkLocal is the guest's link-local address on eth0.
func (l *Lab) linkLocal(ns string) netip.Addr {
	l.t.Helper()
	var got netip.Addr
	waitForLong(l.t, "a link-local address in "+ns, func() bool {
		for _, line := range strings.Split(l.In(ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "inet6" && !strings.Contains(line, "tentative") {
				got = netip.MustParsePrefix(f[1]).Addr()
				return true
			}
		}
		return false
	})
	return got
}

func waitForLong(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// radvd runs Debian's radvd in ns on iface, advertising prefix (SLAAC on)
// every 3-4 s, with its own config and pid file; stopped by its PID when
// the test ends.
func (l *Lab) radvd(ns, iface, prefix string) {
	l.t.Helper()
	dir := l.t.TempDir()
	conf := filepath.Join(dir, "radvd.conf")
	body := fmt.Sprintf("interface %s {\n\tAdvSendAdvert on;\n\tMinRtrAdvInterval 3;\n\tMaxRtrAdvInterval 4;\n\tprefix %s {\n\t\tAdvOnLink on;\n\t\tAdvAutonomous on;\n\t};\n};\n", iface, prefix)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "radvd", "--nodaemon", "-C", conf, "-p", filepath.Join(dir, "radvd.pid"), "-m", "stderr")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("radvd in %s: %v", ns, err)
	}
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if l.t.Failed() {
			l.t.Logf("radvd in %s:\n%s", ns, out.String())
		}
	})
}

// udp6Sink records the source address of every datagram sent to addr in
// ns (an IPv6 socket).
func (l *Lab) udp6Sink(ns, addr string) *udpSink {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp6", addr); return }); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { pc.Close() })
	s := &udpSink{mu: sync.Mutex{}}
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen = append(s.seen, from.(*net.UDPAddr).AddrPort().Addr().Unmap().String())
			s.mu.Unlock()
		}
	}()
	return s
}

// udp6Send sends three datagrams from src (an address of ns) to the
// sink, fd42:99::40 port 7000, a little apart (the first may wait for
// neighbour discovery).
func (l *Lab) udp6Send(ns string, src netip.Addr) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	err = n.Do(func() error {
		c, err := net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[fd42:99::40]:7000")))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			c.Write([]byte("spoof6?"))
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		l.t.Fatalf("send from %s in %s: %v", src, ns, err)
	}
}

// sendNA sends an unsolicited neighbour advertisement (override flag, to
// all nodes) from ns's eth0, whose MAC is mac: source src, target target,
// target link-layer address mac. Crafted with a raw packet socket.
func (l *Lab) sendNA(ns, mac string, src, target netip.Addr) {
	l.t.Helper()
	hw, _ := net.ParseMAC(mac)
	dst := netip.MustParseAddr("ff02::1")
	icmp := []byte{136, 0, 0, 0, 0x20, 0, 0, 0} // type NA, code, checksum, flags O
	icmp = append(icmp, target.AsSlice()...)
	icmp = append(append(icmp, 2, 1), hw...) // target link-layer address option
	binary.BigEndian.PutUint16(icmp[2:], icmp6Checksum(src, dst, icmp))
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip[6], ip[7] = 58, 255
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	frame := append(append(append([]byte{0x33, 0x33, 0, 0, 0, 1}, hw...), 0x86, 0xdd), append(ip, icmp...)...)
	l.rawSendBytes(ns, frame, frame, frame)
}

// icmp6Checksum is the ICMPv6 checksum over the pseudo-header and msg
// (whose checksum field is zero).
func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	add([]byte{0, 0, byte(len(msg) >> 8), byte(len(msg)), 0, 0, 0, 58})
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// dropped6 reports whether status records a drop of kind for address ip
// on port.
func (l *Lab) dropped6(host, port string, kind model.Drop6Kind, ip netip.Addr) bool {
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		l.t.Fatal(err)
	}
	for _, n := range st.Networks {
		for _, pg := range n.Guard {
			if pg.Port == port && slices.ContainsFunc(pg.Dropped6, func(x model.Drop6) bool { return x.Kind == kind && x.IP == ip }) {
				return true
			}
		}
	}
	return false
}
