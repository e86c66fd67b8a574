package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/report"
)

// stealSpec has a guarded network and, as the control, one without
// anti-spoofing where the same crafted messages must work.
const stealSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dhcp:
      range: 10.99.0.100-10.99.0.199
      lease: 1h
  free:
    mode: nat
    bridge: gfree0
    ipv4: 10.98.0.1/24
    anti_spoofing: false
    dhcp:
      range: 10.98.0.100-10.98.0.199
      lease: 1h
`

// frame is a crafted DHCP client message: Ethernet source and destination,
// IPv4 source and destination (UDP 68 to 67), and the message. With split
// > 0 it goes out as two IPv4 fragments, the first carrying split bytes
// of the UDP datagram (a multiple of 8).
type frame struct {
	src, dst net.HardwareAddr
	sip, dip netip.Addr
	msg      *dhcpv4.DHCPv4
	split    int
}

// frames lays the message out: Ethernet, IPv4 (with its checksum), UDP
// (no checksum, which IPv4 allows) and the BOOTP message.
func (f frame) frames() [][]byte {
	payload := f.msg.ToBytes()
	udp := binary.BigEndian.AppendUint16(nil, dhcpv4.ClientPort)
	udp = binary.BigEndian.AppendUint16(udp, dhcpv4.ServerPort)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(append(udp, 0, 0), payload...)
	if f.split == 0 {
		return [][]byte{f.ipv4(udp, 0, false)}
	}
	return [][]byte{f.ipv4(udp[:f.split], 0, true), f.ipv4(udp[f.split:], f.split, false)}
}

// ipv4 is one Ethernet frame holding data at byte offset off of the
// datagram, more fragments to follow or not.
func (f frame) ipv4(data []byte, off int, more bool) []byte {
	ip := []byte{0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(data)))
	frag := uint16(off / 8)
	if more {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip = append(append(ip, f.sip.AsSlice()...), f.dip.AsSlice()...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	eth := append(append(slices.Clone([]byte(f.dst)), f.src...), 0x08, 0x00)
	return append(append(eth, ip...), data...)
}

// rawSend sends frames out of eth0 of ns through an AF_PACKET socket
// opened inside ns: the guest's kernel adds nothing, so the Ethernet
// source can be any MAC.
func (l *Lab) rawSend(ns string, frames ...frame) {
	l.t.Helper()
	for _, f := range frames {
		l.rawSendBytes(ns, f.frames()...)
	}
}

// vlan0 puts an 802.1Q tag with VLAN ID 0 (priority tagging) into an
// Ethernet frame: the receiving host strips it and takes the frame as its
// own, while nft's `ether type` then reads the tag's type.
func vlan0(b []byte) []byte {
	return append(append(slices.Clone(b[:12]), 0x81, 0x00, 0x00, 0x00), b[12:]...)
}

// rawSendBytes sends whole Ethernet frames out of eth0 of ns.
func (l *Lab) rawSendBytes(ns string, frames ...[]byte) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	err = n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only: receives nothing
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for _, b := range frames {
			copy(to.Addr[:], b[:6])
			if err := unix.Sendto(fd, b, 0, to); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		l.t.Fatalf("send raw frames from %s: %v", ns, err)
	}
}

func dhcpMsg(t *testing.T, typ dhcpv4.MessageType, chaddr net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(chaddr)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hwaddr(t *testing.T, s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// lease is the daemon's view of mac's lease in network, if any.
func (l *Lab) lease(host, network, mac string) (daemon.LeaseView, bool) {
	l.t.Helper()
	var ls []daemon.LeaseView
	if err := json.Unmarshal([]byte(l.Guestnet(host, "leases", network, "-o", "json")), &ls); err != nil {
		l.t.Fatal(err)
	}
	for _, x := range ls {
		if x.MAC == mac {
			return x, true
		}
	}
	return daemon.LeaseView{}, false
}

// guards is what `guestnet status -o json` says each guest port may send.
func (l *Lab) guards(host string) map[string]report.PortGuard {
	l.t.Helper()
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		l.t.Fatal(err)
	}
	out := map[string]report.PortGuard{}
	for _, n := range st.Networks {
		for _, pg := range n.Guard {
			out[pg.Port] = pg
		}
	}
	return out
}

// dropped counts the frames set dropped remembers from port . mac . ip.
func dropped(pg report.PortGuard, mac string, ip netip.Addr) uint64 {
	for _, x := range pg.Spoofed {
		if x.Bind == (model.Bind{Port: pg.Port, MAC: mac, IP: ip}) {
			return x.Packets
		}
	}
	return 0
}

// fdbPort names the port the bridge's forwarding database has mac on.
func (l *Lab) fdbPort(host, bridge, mac string) string {
	out, _ := l.tryIn(host, "bridge", "fdb", "show", "br", bridge)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == mac && f[1] == "dev" {
			return f[2]
		}
	}
	return ""
}

// udhcpcDaemon runs busybox udhcpc in ns in the foreground until the test
// ends, and returns its process (signal it by PID) and a function that
// counts the hook's calls of a kind ("bound", "renew").
func (l *Lab) udhcpcDaemon(ns string) (*os.Process, func(kind string) int) {
	l.t.Helper()
	dir := l.t.TempDir()
	log := filepath.Join(dir, "events")
	hook := filepath.Join(dir, "hook")
	os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\necho \"$1 $ip\" >> %s\nexec %s \"$@\"\n", log, l.clientScript())), 0o755)
	cmd := exec.Command("ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "1", "-s", hook)
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	count := func(kind string) int {
		b, _ := os.ReadFile(log)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, kind+" ") {
				n++
			}
		}
		return n
	}
	return cmd.Process, count
}

// TestStealLease: a guest with its own lease on one port tries to take the
// lease and anti-spoofing binding of a neighbour on another port, with
// DHCP messages crafted in Go and sent from a raw socket: a REQUEST for
// the neighbour's address, a RELEASE and a DECLINE of it, naming the
// neighbour's MAC (chaddr) with its own Ethernet source and with the
// neighbour's. After each: status shows the victim's port still bound to
// its MAC and address and the attacker's not allowed the victim's MAC,
// the lease is unchanged, the bridge still has the victim's MAC on the
// victim's port, the kernel recorded the drop, and the victim still renews
// (udhcpc, SIGUSR1) and pings the gateway. The same messages on a network
// without anti-spoofing take effect (the control: the messages are valid).
// Then the victim's VM really moves: while its old port is in the bridge,
// a guest with its MAC on a new port gets nothing; once the old port is
// deleted, the new one gets the same lease and is bound.
func TestStealLease(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	d := l.Serve_(host, l.Spec(stealSpec))
	const vMAC, aMAC = "02:00:00:00:05:01", "02:00:00:00:05:02"
	V, A, bcast := hwaddr(t, vMAC), hwaddr(t, aMAC), hwaddr(t, "ff:ff:ff:ff:ff:ff")
	server, zero, all := netip.MustParseAddr("10.99.0.1"), netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255")
	br := hwaddr(t, strings.Fields(l.In(host, "cat", "/sys/class/net/gnat0/address"))[0])

	victim := l.dhcpGuest(host, "default", "v", "vgv", vMAC)
	vProc, events := l.udhcpcDaemon(victim)
	for deadline := time.Now().Add(15 * time.Second); events("bound") == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the victim's udhcpc got no lease in 15 s")
		}
	}
	attacker := l.dhcpGuest(host, "default", "a", "vga", aMAC)
	if out, err := l.tryIn(attacker, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", l.clientScript()); err != nil {
		t.Fatalf("the attacker's own lease: %v\n%s", err, out)
	}
	vip, aip := netip.MustParseAddr(l.addrOf(victim)), netip.MustParseAddr(l.addrOf(attacker))
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server.AsSlice()))
	reqIP := dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(vip.AsSlice()))
	ci := dhcpv4.WithClientIP(vip.AsSlice())

	// intact checks everything that says the victim still holds its lease
	// and binding, and that the kernel dropped the attack from (mac, ip).
	intact := func(before daemon.LeaseView, mac string, ip netip.Addr, droppedBefore uint64) []string {
		var bad []string
		ok := false
		for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			ok = dropped(l.guards(host)["vga"], mac, ip) > droppedBefore
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("no drop of vga . %s . %s recorded", mac, ip))
		}
		if now, has := l.lease(host, "default", vMAC); !has || now != before {
			bad = append(bad, fmt.Sprintf("lease %+v, was %+v", now, before))
		}
		g := l.guards(host)
		if v := g["vgv"]; v.State != "bound" || !slices.Contains(v.MACs, vMAC) || !slices.Contains(v.IPs, vip) || !slices.Contains(v.By, "lease") {
			bad = append(bad, fmt.Sprintf("victim port vgv: %+v", v.PortBinding))
		}
		if a := g["vga"]; slices.Contains(a.MACs, vMAC) || slices.Contains(a.IPs, vip) {
			bad = append(bad, fmt.Sprintf("attacker port vga may send as the victim: %+v", a.PortBinding))
		}
		if p := l.fdbPort(host, "gnat0", vMAC); p != "vgv" {
			bad = append(bad, "the bridge has the victim's MAC on "+p)
		}
		return bad
	}
	attack := func(f frame) func() bool {
		return func() bool {
			before, _ := l.lease(host, "default", vMAC)
			n := dropped(l.guards(host)["vga"], f.src.String(), f.sip)
			l.rawSend(attacker, f)
			bad := intact(before, f.src.String(), f.sip, n)
			for _, b := range bad {
				t.Log("  " + b)
			}
			return len(bad) > 0
		}
	}
	renews := func() bool {
		n := events("renew")
		vProc.Signal(syscall.SIGUSR1)
		// Generous: on a loaded 2-core machine udhcpc's renewal has taken
		// over 5 s; the row asserts that it succeeds, not how fast.
		start := time.Now()
		for events("renew") == n && time.Since(start) < 20*time.Second {
			time.Sleep(50 * time.Millisecond)
		}
		pings := false
		for i := 0; i < 3 && !pings; i++ {
			pings = l.Ping(victim, "10.99.0.1")
		}
		t.Logf("  renewal took %v", time.Since(start).Round(time.Millisecond))
		return events("renew") > n && l.addrOf(victim) == vip.String() && pings
	}
	rows := []check{
		{"REQUEST for the victim's address, chaddr+Ethernet source victim", false,
			attack(frame{V, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeRequest, V, reqIP, sid), 0})},
		{"REQUEST for the victim's address, chaddr victim, source own", false,
			attack(frame{A, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeRequest, V, reqIP, sid), 0})},
		{"victim renews (SIGUSR1) and pings the gateway", true, renews},
		{"RELEASE of the victim's lease, chaddr victim, source own", false,
			attack(frame{A, br, aip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, ci, sid), 0})},
		{"RELEASE of the victim's lease, chaddr+source victim", false,
			attack(frame{V, br, vip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, ci, sid), 0})},
		{"RELEASE, chaddr victim, source own, in 2 fragments (chaddr in the 2nd)", false,
			attack(frame{A, br, aip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, ci, sid), 32})},
		{"victim renews (SIGUSR1) and pings the gateway", true, renews},
		{"DECLINE of the victim's address, chaddr victim, source own", false,
			attack(frame{A, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeDecline, V, reqIP, sid), 0})},
		{"DECLINE of the victim's address, chaddr+source victim", false,
			attack(frame{V, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeDecline, V, reqIP, sid), 0})},
		{"victim renews (SIGUSR1) and pings the gateway", true, renews},
	}
	// An unrestricted port (attached, nothing bound) sends the same
	// messages with a VLAN 0 tag: the host strips it and reads them.
	unbound := l.dhcpGuest(host, "default", "u", "vgu", "02:00:00:00:05:03")
	U := hwaddr(t, "02:00:00:00:05:03")
	tagged := func(f frame) func() bool {
		return func() bool {
			before, _ := l.lease(host, "default", vMAC)
			tagged := func() uint64 {
				n := uint64(0)
				for _, x := range l.guards(host)["vgu"].DroppedOther {
					if x.EtherType == "8021q" {
						n += x.Packets
					}
				}
				return n
			}
			before8021q := tagged()
			for _, b := range f.frames() {
				l.rawSendBytes(unbound, vlan0(b))
			}
			// The kernel records the tagged frame it drops (set
			// dropped_other); without the rule nothing is recorded, and
			// the daemon has had the deadline to answer.
			for deadline := time.Now().Add(2 * time.Second); tagged() == before8021q && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			now, has := l.lease(host, "default", vMAC)
			g := l.guards(host)["vgv"]
			took := !has || now != before || g.State != "bound" || !slices.Contains(g.MACs, vMAC)
			if took {
				t.Logf("  lease %+v (was %+v), victim port %+v", now, before, g.PortBinding)
			}
			return took
		}
	}
	other := netip.MustParseAddr("10.99.0.150")
	rows = append(rows,
		check{"unrestricted port, VLAN 0: REQUEST for another address, chaddr victim, source own", false,
			tagged(frame{U, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeRequest, V, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(other.AsSlice())), sid), 0})},
		check{"unrestricted port, VLAN 0: RELEASE, chaddr victim, source own", false,
			tagged(frame{U, br, zero, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, ci, sid), 0})},
		check{"unrestricted port, VLAN 0: DECLINE, chaddr victim, source own", false,
			tagged(frame{U, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeDecline, V, reqIP, sid), 0})},
		check{"victim renews (SIGUSR1) and pings the gateway", true, renews},
	)
	rows = append(rows, l.stealControl(t, host)...)
	rows = append(rows, l.moveRows(t, host, vMAC, vip)...)
	l.matrix("attacker on port vga (or a moved VM) | takes effect: want | got", rows)

	// status lists the drops of frames that used the victim's MAC from vga
	// under vga, and names the port the MAC was bound to then.
	found := false
	for _, x := range l.guards(host)["vga"].Spoofed {
		found = found || (x.MAC == vMAC && slices.Contains(x.MACBoundTo, "vgm"))
	}
	if text := l.Guestnet(host, "status"); !found || !strings.Contains(text, "the MAC is bound to port vgm") {
		t.Errorf("status does not say whose MAC vga used:\n%s", text)
	}
	if t.Failed() {
		var dhcp []string
		for _, line := range strings.Split(d.log.String(), "\n") {
			if strings.Contains(line, "dhcp") {
				dhcp = append(dhcp, line)
			}
		}
		t.Logf("host:\n%s\ndaemon's DHCP log:\n%s", l.In(host, "nft", "list", "table", "bridge", "guestnet"), strings.Join(dhcp, "\n"))
	}
}

// stealControl runs a REQUEST and a RELEASE naming the victim's MAC from
// the attacker's port on network free (no anti-spoofing): they take
// effect, so the crafted messages are valid and each blocked row above is
// anti-spoofing's doing. (The fragmented RELEASE is dropped here too;
// with the fragment rule taken out of the table it releases the lease on
// either network: the reassembled datagram reaches the server.)
func (l *Lab) stealControl(t *testing.T, host string) []check {
	const vMAC, aMAC = "02:00:00:00:06:01", "02:00:00:00:06:02"
	V, A := hwaddr(t, vMAC), hwaddr(t, aMAC)
	victim := l.dhcpGuest(host, "free", "cv", "vcv", vMAC)
	attacker := l.dhcpGuest(host, "free", "ca", "vca", aMAC)
	for _, g := range []string{victim, attacker} {
		if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", l.clientScript()); err != nil {
			t.Fatalf("lease on network free: %v\n%s", err, out)
		}
	}
	vip, aip := netip.MustParseAddr(l.addrOf(victim)), netip.MustParseAddr(l.addrOf(attacker))
	server := netip.MustParseAddr("10.98.0.1")
	br := hwaddr(t, strings.Fields(l.In(host, "cat", "/sys/class/net/gfree0/address"))[0])
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server.AsSlice()))
	changed := func(f frame, took func(before, now daemon.LeaseView, has bool) bool) func() bool {
		return func() bool {
			before, _ := l.lease(host, "free", vMAC)
			time.Sleep(10 * time.Millisecond) // a renewal's expiry must differ
			l.rawSend(attacker, f)
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if now, has := l.lease(host, "free", vMAC); took(before, now, has) {
					return true
				}
			}
			return false
		}
	}
	return []check{
		{"control, no anti-spoofing: REQUEST, chaddr+source victim", true, changed(
			frame{V, hwaddr(t, "ff:ff:ff:ff:ff:ff"), netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"),
				dhcpMsg(t, dhcpv4.MessageTypeRequest, V, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(vip.AsSlice())), sid), 0},
			func(before, now daemon.LeaseView, has bool) bool { return has && !now.Expiry.Equal(before.Expiry) })},
		// The first fragment of a datagram to port 67 is dropped on every
		// bridge of the namespace, guarded or not: DHCP never needs one.
		{"control, no anti-spoofing: RELEASE in 2 fragments (dropped everywhere)", false, changed(
			frame{A, br, aip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, dhcpv4.WithClientIP(vip.AsSlice()), sid), 32},
			func(_, _ daemon.LeaseView, has bool) bool { return !has })},
		{"control, no anti-spoofing: RELEASE, chaddr victim, source own", true, changed(
			frame{A, br, aip, server, dhcpMsg(t, dhcpv4.MessageTypeRelease, V, dhcpv4.WithClientIP(vip.AsSlice()), sid), 0},
			func(_, _ daemon.LeaseView, has bool) bool { return !has })},
	}
}

// moveRows: a guest with the victim's MAC on a new port gets no lease
// while the victim's port is in the bridge, and gets the victim's lease
// and binding on its port once the victim's port is deleted (a VM that
// migrated, its QEMU gone with its TAP).
func (l *Lab) moveRows(t *testing.T, host, vMAC string, vip netip.Addr) []check {
	var moved string // made by the first row, not before the attacks
	udhcpc := []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", l.clientScript()}
	return []check{
		{"VM moved: same MAC on new port vgm, old port still there", false, func() bool {
			moved = l.dhcpGuest(host, "default", "m", "vgm", vMAC)
			_, err := l.tryIn(moved, udhcpc...)
			return err == nil || slices.Contains(l.guards(host)["vgm"].MACs, vMAC)
		}},
		{"VM moved: old port deleted, vgm gets the lease and binding", true, func() bool {
			l.must("ip", "-n", host, "link", "del", "vgv")
			waitFor(t, "the old port's binding gone", func() bool {
				out, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "learned_port_macs")
				return !strings.Contains(out, `"vgv"`)
			})
			out, err := l.tryIn(moved, udhcpc...)
			g := l.guards(host)["vgm"]
			ok := err == nil && l.addrOf(moved) == vip.String() && slices.Contains(g.MACs, vMAC) && slices.Contains(g.IPs, vip)
			if !ok {
				t.Logf("  udhcpc: %v %s; vgm: %+v", err, out, g.PortBinding)
			}
			return ok
		}},
		{"VM moved: pings the gateway from vgm", true, func() bool { return l.Ping(moved, "10.99.0.1") }},
		{"VM moved: the attacker still may not send as it", false, func() bool {
			return slices.Contains(l.guards(host)["vga"].MACs, vMAC)
		}},
	}
}
