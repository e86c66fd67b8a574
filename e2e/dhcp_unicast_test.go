package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/netns"
)

// seenReply is a DHCP server reply as it arrived on a guest's eth0.
type seenReply struct {
	typ              string
	chaddr           string
	ethSrc, ethDst   string
	ipSrc, ipDst     string
	yiaddr           string
	broadcastFlagSet bool
}

func (r seenReply) String() string {
	return fmt.Sprintf("%s for %s: %s -> %s, %s -> %s", r.typ, r.chaddr, r.ethSrc, r.ethDst, r.ipSrc, r.ipDst)
}

// frameCapture records the DHCP replies (UDP from port 67) that reach
// eth0 of a namespace, with their Ethernet header: an AF_PACKET SOCK_RAW
// socket opened inside it, which sees every frame the port delivers,
// addressed to this guest's MAC or not.
type frameCapture struct {
	mu   sync.Mutex
	seen []seenReply
	stop chan struct{}
	done chan struct{}
}

// listenEth0 opens, inside namespace ns, an AF_PACKET socket bound to its
// eth0 that receives every frame (ETH_P_ALL), with a 100 ms receive
// timeout so that its reader can notice a stop.
func listenEth0(t testing.TB, ns string) int {
	t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var fd int
	err = n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("listen on eth0 of %s: %v", ns, err)
	}
	return fd
}

func (l *Lab) captureFrames(ns string) *frameCapture {
	l.t.Helper()
	fd := listenEth0(l.t, ns)
	c := &frameCapture{stop: make(chan struct{}), done: make(chan struct{})}
	go c.read(fd)
	l.t.Cleanup(c.close)
	return c
}

func (c *frameCapture) read(fd int) {
	defer close(c.done)
	defer unix.Close(fd)
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			select {
			case <-c.stop:
				return // asked to stop, and nothing left queued (the read timed out)
			default:
				continue
			}
		}
		if n < 14+28 || binary.BigEndian.Uint16(buf[12:14]) != unix.ETH_P_IP {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // the guest's own requests
		}
		ip := buf[14:n]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 || binary.BigEndian.Uint16(ip[ihl:]) != 67 {
			continue
		}
		m, err := dhcpv4.FromBytes(ip[ihl+8:])
		if err != nil {
			continue
		}
		r := seenReply{typ: m.MessageType().String(), chaddr: m.ClientHWAddr.String(),
			ethDst: net.HardwareAddr(buf[0:6]).String(), ethSrc: net.HardwareAddr(buf[6:12]).String(),
			ipSrc: net.IP(ip[12:16]).String(), ipDst: net.IP(ip[16:20]).String(), yiaddr: m.YourIPAddr.String(),
			broadcastFlagSet: m.IsBroadcast()}
		c.mu.Lock()
		c.seen = append(c.seen, r)
		c.mu.Unlock()
	}
}

// close stops the capture once every frame already queued on its socket
// has been read: list then has all that reached the guest before.
func (c *frameCapture) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *frameCapture) list() []seenReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]seenReply(nil), c.seen...)
}

// bridgeMAC is the MAC of a link of ns.
func (l *Lab) bridgeMAC(ns, link string) string {
	f := strings.Fields(l.In(ns, "ip", "-o", "link", "show", "dev", link))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	l.t.Fatalf("no MAC for %s in %s: %q", link, ns, f)
	return ""
}

// TestDHCPUnicastReplies: OFFER and ACK to a client without an address
// leave as a frame to its MAC with its new address as destination (RFC
// 2131 4.1), from the bridge's MAC and the network's server address, so
// only its own bridge port carries them; a client that asks for broadcast
// replies (udhcpc -B) gets them broadcast. Real clients (udhcpc, udhcpc
// -B, dhclient; they read replies from raw sockets and check the IPv4 and
// UDP checksums) on two networks at once each get a lease; a third guest
// on each bridge, which asks for nothing, sees the broadcast replies to
// the -B client (the control: its capture works) and none of the replies
// to the other clients.
func TestDHCPUnicastReplies(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Serve_(host, l.Spec(twoDHCPSpec))
	hook := l.clientScript()
	tmp := t.TempDir()
	t.Cleanup(func() { killPIDFile(filepath.Join(tmp, "dhclient.pid")) })
	udhcpc := []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook}
	type guest struct {
		name, network, mac string
		cmd                []string
		broadcast          bool
		ns                 string
		cap                *frameCapture
		out                string
		took               time.Duration
	}
	gs := []*guest{
		{name: "ua", network: "a", mac: "02:00:00:00:0a:01", cmd: udhcpc},
		{name: "da", network: "a", mac: "02:00:00:00:0a:02", cmd: []string{"dhclient", "-1", "-4", "-sf", hook,
			"-lf", filepath.Join(tmp, "dhclient.leases"), "-pf", filepath.Join(tmp, "dhclient.pid"), "eth0"}},
		{name: "ba", network: "a", mac: "02:00:00:00:0a:03", cmd: append(append([]string{}, udhcpc...), "-B"), broadcast: true},
		{name: "wa", network: "a", mac: "02:00:00:00:0a:09"},
		{name: "ub", network: "b", mac: "02:00:00:00:0b:01", cmd: udhcpc},
		{name: "bb", network: "b", mac: "02:00:00:00:0b:03", cmd: append(append([]string{}, udhcpc...), "-B"), broadcast: true},
		{name: "wb", network: "b", mac: "02:00:00:00:0b:09"},
	}
	for i, g := range gs {
		g.ns = l.dhcpGuest(host, g.network, g.name, fmt.Sprintf("vu%d", i), g.mac)
		g.cap = l.captureFrames(g.ns)
	}
	var wg sync.WaitGroup
	for _, g := range gs {
		if g.cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			g.out, _ = l.tryIn(g.ns, g.cmd...) // dhclient -1 exits 0 or 2 by version; the address tells
			g.took = time.Since(start)
		}()
	}
	wg.Wait()
	for _, g := range gs {
		g.cap.close() // reads what is queued, then stops
	}

	server := map[string]string{"a": "10.99.0.1", "b": "10.98.0.1"}
	subnet := map[string]netip.Prefix{"a": netip.MustParsePrefix("10.99.0.0/24"), "b": netip.MustParsePrefix("10.98.0.0/24")}
	brMAC := map[string]string{"a": l.bridgeMAC(host, "gna"), "b": l.bridgeMAC(host, "gnb")}
	byMAC := map[string]*guest{}
	for _, g := range gs {
		byMAC[g.mac] = g
	}
	for _, g := range gs {
		got := l.addrOf(g.ns)
		if g.cmd == nil {
			if got != "" {
				t.Errorf("the watcher %s, which asked for nothing, has %s", g.name, got)
			}
			continue
		}
		a, err := netip.ParseAddr(got)
		if err != nil || !subnet[g.network].Contains(a) {
			t.Errorf("%s on %s got %q, want an address of %s\n%s", g.name, g.network, got, subnet[g.network], g.out)
			continue
		}
		// What it saw for itself: its OFFER and ACK, from the bridge's MAC
		// and the server's address, to its MAC and new address (or
		// broadcast, for -B).
		wantDst, wantEth := got, g.mac
		if g.broadcast {
			wantDst, wantEth = "255.255.255.255", "ff:ff:ff:ff:ff:ff"
		}
		var offers, acks int
		for _, r := range g.cap.list() {
			if r.chaddr != g.mac {
				continue
			}
			if r.ipDst != wantDst || r.ethDst != wantEth || r.ethSrc != brMAC[g.network] || r.ipSrc != server[g.network] {
				t.Errorf("%s (%s) got %s; want from %s %s to %s %s", g.name, got, r, brMAC[g.network], server[g.network], wantEth, wantDst)
			}
			switch r.typ {
			case "OFFER":
				offers++
			case "ACK":
				acks++
			}
		}
		if offers == 0 || acks == 0 {
			t.Errorf("%s saw %d OFFERs and %d ACKs for itself, want both: %v", g.name, offers, acks, g.cap.list())
		}
	}
	// What each guest saw of the others: only broadcasts to the -B client
	// of its own network, never a reply to a unicast client, never one
	// from the other network.
	for _, g := range gs {
		var control int
		for _, r := range g.cap.list() {
			o := byMAC[r.chaddr]
			switch {
			case o == g:
			case o == nil:
				t.Errorf("%s saw a reply for a MAC of no guest: %s", g.name, r)
			case o.network != g.network:
				t.Errorf("%s (network %s) saw a reply for %s of network %s: %s", g.name, g.network, o.name, o.network, r)
			case !o.broadcast:
				t.Errorf("%s saw the reply to %s, which did not ask for broadcast: %s", g.name, o.name, r)
			default:
				control++
			}
		}
		if g.cmd == nil && control < 2 {
			t.Errorf("control: the watcher %s saw %d broadcast replies to its network's udhcpc -B, want its OFFER and ACK: %v", g.name, control, g.cap.list())
		}
		t.Logf("%s (%s, client ran %s) saw %v", g.name, l.addrOf(g.ns), g.took.Round(time.Millisecond), g.cap.list())
	}
}
