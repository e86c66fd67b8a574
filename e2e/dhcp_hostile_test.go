package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/netns"
)

// hostileSpec: pools of 20 addresses (small enough for one guest to empty
// one), the default per-port cap (8), DNS for the guests' names; network
// free without anti-spoofing, which would drop the ARP answers of a guest
// for addresses it does not hold (the ARP liar of F5 needs it off).
const hostileSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dhcp:
      range: 10.99.0.100-10.99.0.119
      lease: 1h
    dns:
      domain: lab.internal
      upstream: [203.0.113.10]
  free:
    mode: nat
    bridge: gfree0
    ipv4: 10.98.0.1/24
    anti_spoofing: false
    dhcp:
      range: 10.98.0.100-10.98.0.119
      lease: 1h
`

// listenIn opens a UDP socket on addr inside ns (it stays there) and
// returns a function that reports whether any datagram arrived within
// wait, and what.
func (l *Lab) listenIn(ns, addr string) func(wait time.Duration) (bool, string) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		l.t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	l.t.Cleanup(func() { pc.Close() })
	return func(wait time.Duration) (bool, string) {
		pc.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 1500)
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			return false, ""
		}
		what := fmt.Sprintf("%d bytes from %s", k, from)
		if m, err := dhcpv4.FromBytes(buf[:k]); err == nil {
			what += ": DHCP " + m.MessageType().String()
		}
		return true, what
	}
}

// leaseViews is `guestnet leases -o json`.
func (l *Lab) leaseViews(host string) []daemon.LeaseView {
	l.t.Helper()
	var ls []daemon.LeaseView
	if err := json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &ls); err != nil {
		l.t.Fatal(err)
	}
	return ls
}

// TestDhcpHostileGuest replays a breaker's attacks from guests on the
// DHCP and DNS server, with crafted frames (steal_test.go's helpers) and
// real clients (busybox udhcpc, dig):
//   - F8 a host name wpad, one with a newline and ANSI escapes, an FQDN;
//   - F9 a DISCOVER with giaddr and an INFORM with ciaddr on the pretend
//     internet: nothing may arrive there (a guest holding that address
//     listens);
//   - F6 a guest sends 12 REQUESTs from invented MACs: its port holds at
//     most 8 addresses;
//   - F5+F6 a guest answers ARP for the whole subnet and sends 30
//     DISCOVERs from invented MACs: at most 2 addresses are abandoned on
//     its word, and an honest guest still gets a lease.
func TestDhcpHostileGuest(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host, _ := natHost(l)
	d := l.Serve_(host, l.Spec(hostileSpec))
	const gw = "10.99.0.1"
	hook := l.clientScript()
	udhcpc := func(ns string, extra ...string) error {
		_, err := l.tryIn(ns, append([]string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "4", "-T", "1", "-s", hook}, extra...)...)
		return err
	}
	const aMAC = "02:00:00:00:0a:01"
	attacker := l.dhcpGuest(host, "default", "a", "vga", aMAC)
	if err := udhcpc(attacker); err != nil {
		t.Fatalf("the attacker's own lease: %v", err)
	}
	bcast := hwaddr(t, "ff:ff:ff:ff:ff:ff")
	zero, all := netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255")
	far := net.IPv4(203, 0, 113, 53)
	invented := func(n int) net.HardwareAddr { return net.HardwareAddr{0x02, 0xee, 0, 0, 0, byte(n)} }

	// F8: names a guest must not get.
	w := l.dhcpGuest(host, "default", "w", "vgw", "")
	forged := "evil\n10.99.0.5       \x1b[31mFORGED"
	X := invented(200)
	rows := []check{
		{"udhcpc -x hostname:wpad gets a lease", true, func() bool { return udhcpc(w, "-x", "hostname:wpad") == nil }},
		{"wpad.lab.internal resolves to that guest", false, func() bool {
			r := l.dig(w, gw, "wpad.lab.internal")
			t.Logf("    dig wpad.lab.internal: %s", r)
			return r.status == "NOERROR" && r.answers > 0
		}},
		{"udhcpc -x hostname:web.lab.internal is named web", true, func() bool {
			l.In(w, "ip", "addr", "flush", "dev", "eth0")
			if err := udhcpc(w, "-x", "hostname:web.lab.internal"); err != nil {
				return false
			}
			out, _ := l.tryIn(w, "dig", "@"+gw, "+short", "+time=1", "+tries=1", "web.lab.internal")
			return strings.TrimSpace(out) == l.addrOf(w)
		}},
		{"a REQUEST named with a newline and escapes gets a lease", true, func() bool {
			l.rawSend(attacker, frame{X, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeRequest, X,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 119))), dhcpv4.WithOption(dhcpv4.OptHostName(forged))), 0})
			var lv daemon.LeaseView
			ok := false
			for deadline := time.Now().Add(3 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				lv, ok = l.lease(host, "default", X.String())
			}
			t.Logf("    its lease: %+v", lv)
			return ok && lv.IP == "10.99.0.119"
		}},
		{"... and keeps that name", false, func() bool { lv, _ := l.lease(host, "default", X.String()); return lv.Hostname != "" }},
		{"guestnet leases prints a forged row or an escape", false, func() bool {
			out := l.Guestnet(host, "leases")
			return strings.Contains(out, "\x1b") || strings.Contains(out, "\n10.99.0.5")
		}},
	}

	// F9, on network free: replies to addresses off the link. The server's
	// socket is bound to the bridge, so the kernel sends a datagram for an
	// address it has no route for there as if it were on the link: a guest
	// holding 203.0.113.53 would receive it. The control sends one from
	// such a socket in the host.
	const bMAC = "02:00:00:00:0b:01"
	liar := l.dhcpGuest(host, "free", "b", "vgb", bMAC)
	if err := udhcpc(liar); err != nil {
		t.Fatalf("the liar's own lease: %v", err)
	}
	B := hwaddr(t, bMAC)
	l.In(liar, "ip", "addr", "add", "203.0.113.53/32", "dev", "eth0")
	at67, at68 := l.listenIn(liar, "203.0.113.53:67"), l.listenIn(liar, "203.0.113.53:68")
	rows = append(rows,
		check{"control: a datagram from a socket bound to gfree0 reaches 203.0.113.53:67 in the guest", true, func() bool {
			n, err := netns.Open(host)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			err = n.Do(func() error {
				dl := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
					var serr error
					c.Control(func(fd uintptr) {
						serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, "gfree0")
					})
					return serr
				}}
				c, err := dl.Dial("udp4", "203.0.113.53:67")
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write([]byte("control"))
				return err
			})
			ok, what := at67(2 * time.Second)
			t.Logf("    %s (%v)", what, err)
			return ok
		}},
		check{"DISCOVER with giaddr 203.0.113.53: an OFFER arrives there", false, func() bool {
			l.rawSend(liar, frame{invented(201), bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeDiscover, invented(201), dhcpv4.WithGatewayIP(far)), 0})
			ok, what := at67(2 * time.Second)
			t.Logf("    %s", what)
			return ok
		}},
		check{"INFORM with ciaddr 203.0.113.53: an ACK arrives there", false, func() bool {
			l.rawSend(liar, frame{B, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeInform, B, dhcpv4.WithClientIP(far)), 0})
			ok, what := at68(2 * time.Second)
			t.Logf("    %s", what)
			return ok
		}},
	)

	// F5 + F6, on network free: the attacker answers ARP for every
	// address of the subnet and invents clients.
	honest := l.dhcpGuest(host, "free", "h", "vgh", "")
	abandoned := func() int {
		n := 0
		for _, lv := range l.leaseViews(host) {
			if lv.Network == "free" && lv.State == "abandoned" {
				n++
			}
		}
		return n
	}
	inventor := l.dhcpGuest(host, "free", "c", "vgc", "")
	rows = append(rows,
		check{"12 REQUESTs from invented MACs on port vgc: it holds more than 8 addresses", false, func() bool {
			var fs []frame
			for i := 0; i < 12; i++ {
				m := invented(100 + i)
				fs = append(fs, frame{m, bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeRequest, m,
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 98, 0, byte(105+i))))), 0})
			}
			l.rawSend(inventor, fs...)
			time.Sleep(500 * time.Millisecond)
			n := 0
			for _, lv := range l.leaseViews(host) {
				if lv.Network == "free" && lv.State == "bound" && strings.HasPrefix(lv.MAC, "02:ee:00:00:00:") && lv.MAC >= invented(100).String() {
					n++
				}
			}
			t.Logf("    the inventor's clients hold %d leases", n)
			return n > 8
		}},
		check{"30 DISCOVERs from invented MACs, the attacker answering ARP for all: more than 2 abandoned", false, func() bool {
			l.In(liar, "ip", "route", "add", "local", "10.98.0.0/24", "dev", "eth0", "table", "local")
			var fs []frame
			for i := 0; i < 30; i++ {
				fs = append(fs, frame{invented(i), bcast, zero, all, dhcpMsg(t, dhcpv4.MessageTypeDiscover, invented(i)), 0})
			}
			l.rawSend(liar, fs...)
			time.Sleep(3 * time.Second) // the probes of 30 DISCOVERs
			n := abandoned()
			t.Logf("    %d addresses abandoned", n)
			return n > 2
		}},
		check{"an honest guest still gets a lease (udhcpc)", true, func() bool {
			err := udhcpc(honest)
			t.Logf("    honest guest: %q (%v)", l.addrOf(honest), err)
			return err == nil && l.addrOf(honest) != ""
		}},
	)
	l.matrix("hostile guests: vga (default), vgb and vgc (free) | takes effect: want | got", rows)
	if t.Failed() {
		t.Logf("leases:\n%s\ndaemon's DHCP log:\n%s", l.Guestnet(host, "leases"), grepLines(d.log.String(), "dhcp"))
	} else {
		t.Logf("daemon's warnings:\n%s", grepLines(d.log.String(), "level=WARN"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestDhcpHostileStorePath: leases.db replaced by a directory, a link
// into a missing folder and a link to a missing file. serve must exit 3
// (no restart loop) saying what is there and the way out, create nothing
// through the link, and `guestnet leases` must fail with the same message,
// never report "0 leases".
func TestDhcpHostileStorePath(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	l.Serve_(host, spec).Stop() // makes the state folder and the store
	path := daemon.LeasePath(l.StateDirOf(host))
	aside := path + ".real"
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(l.StateDirOf(host), "gone", "leases.db")
	for _, c := range []struct {
		name, want string
		make       func() error
	}{
		{"directory", "a directory, not a lease database", func() error { return os.Mkdir(path, 0o700) }},
		{"link into a missing folder", "a symbolic link (to " + missing + ")", func() error { return os.Symlink(missing, path) }},
		{"link to a missing file", "a symbolic link", func() error { return os.Symlink(aside+".missing", path) }},
		{"link to the real store", "a symbolic link", func() error { return os.Symlink(aside, path) }},
	} {
		os.RemoveAll(path)
		if err := c.make(); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(guestnetBin, "--netns", host, "--state-dir", l.StateDir, "serve", "--config", spec)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: serve kept running:\n%s", c.name, out.String())
		}
		msg := out.String()
		if code := cmd.ProcessState.ExitCode(); code != 3 || !strings.Contains(msg, path) || !strings.Contains(msg, c.want) {
			t.Errorf("%s: serve exit %d, want 3 with a message naming %s and saying %q:\n%s", c.name, code, path, c.want, msg)
		}
		lout, lerr, code := l.Run(host, "leases")
		if code == 0 || !strings.Contains(lerr, c.want) || strings.Contains(lerr, "0 leases") {
			t.Errorf("%s: leases exit %d, want a failure saying %q:\n%s%s", c.name, code, c.want, lout, lerr)
		}
		t.Logf("%s: serve exit %d: %s", c.name, cmd.ProcessState.ExitCode(), strings.TrimSpace(msg))
	}
	if _, err := os.Stat(aside + ".missing"); !os.IsNotExist(err) {
		t.Errorf("a store was created through the link: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Errorf("the missing folder was created: %v", err)
	}
}
