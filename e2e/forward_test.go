package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
)

// dialFrom connects from ns using local address laddr and returns the
// source the server saw.
func (l *Lab) dialFrom(ns, laddr, raddr string) (string, error) {
	n, err := netns.Open(ns)
	if err != nil {
		return "", err
	}
	defer n.Close()
	var c net.Conn
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(laddr)}}
	if err := n.Do(func() (err error) { c, err = d.Dial("tcp4", raddr); return }); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:k])), err
}

// listenUDP opens a UDP socket on addr inside ns, closed when the test ends.
func (l *Lab) listenUDP(ns, addr string) net.PacketConn {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return }); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { pc.Close() })
	return pc
}

// udpEcho answers each datagram on addr inside ns with its own payload.
func (l *Lab) udpEcho(ns, addr string) {
	pc := l.listenUDP(ns, addr)
	go func() {
		buf := make([]byte, 512)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	}()
}

func (l *Lab) udpAsk(ns, addr string) bool {
	n, _ := netns.Open(ns)
	defer n.Close()
	var c net.Conn
	if err := n.Do(func() (err error) { c, err = net.Dial("udp4", addr); return }); err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 16)
	k, err := c.Read(buf)
	return err == nil && string(buf[:k]) == "ping"
}

const forwardSpec = natSpec + `    forwards:
      - {proto: tcp, port: 2222, to: "10.99.0.10:8080"}
      - {proto: udp, port: 5353, to: 10.99.0.10}
      - {proto: tcp, port: 8081, to: "10.99.0.10:8080", from: [203.0.113.0/24]}
`

func TestPortForwards(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	spec := l.Spec(forwardSpec)
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "default", "g2", "vg2", "10.99.0.11/24", "10.99.0.1")
	l.Serve(g1, "10.99.0.10:8080")
	l.udpEcho(g1, "10.99.0.10:5353")

	src, err := l.Dial(inet, "198.51.100.1:2222")
	l.expect("internet -> host:2222 -> guest:8080 (tcp)", true, err == nil)
	if err == nil && src != "198.51.100.126" {
		t.Errorf("guest saw %q, want the client's own 198.51.100.126", src)
	}
	l.expect("internet -> host:5353 -> guest (udp echo)", true, l.udpAsk(inet, "198.51.100.1:5353"))
	_, err = l.dialFrom(inet, "198.51.100.126", "198.51.100.1:8081")
	l.expect("8081 from outside its from: list", false, err == nil)
	_, err = l.dialFrom(inet, "203.0.113.10", "198.51.100.1:8081")
	l.expect("8081 from 203.0.113.10 (in its from: list)", true, err == nil)
	_, err = l.Dial(host, "198.51.100.1:2222")
	l.expect("the host itself -> its own :2222 -> guest", true, err == nil)
	src, err = l.Dial(g2, "198.51.100.1:2222")
	l.expect("hairpin: guest2 -> host public :2222 -> guest1", true, err == nil)
	if err == nil && src != "10.99.0.1" {
		t.Errorf("hairpin: guest1 saw %q, want the bridge address 10.99.0.1 (an address it answers through the host)", src)
	}
	_, err = l.Dial(inet, "10.99.0.10:8080")
	l.expect("internet -> guest directly (no forward)", false, err == nil)

	// Change one forward: exactly one delta (its map element out, the new
	// one in), not a table rewrite.
	os.WriteFile(spec, []byte(strings.Replace(forwardSpec, "port: 2222,", "port: 2223,", 1)), 0o644)
	out, _, _ := l.Run(host, "-o", "json", "plan", spec)
	var p struct {
		Actions []struct{ Op string }
	}
	json.Unmarshal([]byte(out), &p)
	if len(p.Actions) != 1 || p.Actions[0].Op != "nft-delta" || !strings.Contains(out, "1 forward added, 1 forward deleted (table inet guestnet kept)") {
		t.Fatalf("changing one forward planned %+v, want one nft delta of one forward out and one in:\n%s", p.Actions, out)
	}
	if w := l.ApplyJSON(host, spec); w != 1 {
		t.Errorf("changing one forward made %d kernel writes, want 1", w)
	}
	_, err = l.Dial(inet, "198.51.100.1:2223")
	l.expect("after the change: :2223 -> guest", true, err == nil)
	_, err = l.Dial(inet, "198.51.100.1:2222")
	l.expect("after the change: :2222 no longer forwarded", false, err == nil)
}

// TestTenThousandForwards applies 10,000 forwards (ten 1,000-port ranges)
// and changes one: a single element update.
func TestTenThousandForwards(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	var b strings.Builder
	b.WriteString(natSpec + "    forwards:\n")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d-%d, to: 10.99.0.%d}\n", 10000+i*1000, 10999+i*1000, 10+i)
	}
	spec := l.Spec(b.String())
	start := time.Now()
	l.Guestnet(host, "apply", spec)
	took := time.Since(start)
	out := l.In(host, "nft", "list", "map", "inet", "guestnet", "forwards")
	if n := strings.Count(out, " : 10.99.0."); n != 10000 {
		t.Fatalf("map holds %d elements, want 10000", n)
	}
	g := l.Guest(host, "default", "g", "vg1", "10.99.0.19/24", "10.99.0.1")
	l.Serve(g, "10.99.0.19:19999")
	_, err := l.Dial(inet, "198.51.100.1:19999")
	l.expect("the 10,000th forward carries a connection", true, err == nil)

	start = time.Now()
	out2, _, code := l.Run(host, "plan", spec)
	noop := time.Since(start)
	if code != 0 {
		t.Errorf("plan after apply: exit %d\n%s", code, out2)
	}
	os.WriteFile(spec, []byte(strings.Replace(b.String(), "port: 10000-10999, to: 10.99.0.10", "port: 10000-10999, to: 10.99.0.20", 1)), 0o644)
	start = time.Now()
	w := l.ApplyJSON(host, spec)
	change := time.Since(start)
	if w != 1 {
		t.Errorf("re-targeting 1,000 of 10,000 forwards made %d kernel writes, want 1 (one element batch)", w)
	}
	t.Logf("10,000 forwards: apply %v, no-op plan %v, change of 1,000 elements %v (1 kernel write)", took, noop, change)
}

// httpGet sends a plain HTTP/1.0 GET from ns and returns the response.
func (l *Lab) httpGet(ns, addr string) (string, error) {
	n, err := netns.Open(ns)
	if err != nil {
		return "", err
	}
	defer n.Close()
	var c net.Conn
	if err := n.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 3*time.Second); return }); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /index.html HTTP/1.0\r\n\r\n")
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

func TestFloatingIP(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	spec := l.Spec(natSpec + "    floating: [{public: 198.51.100.10, guest: 10.99.0.10}]\n")
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "default", "g2", "vg2", "10.99.0.11/24", "10.99.0.1")
	l.Serve(g1, "10.99.0.10:8080")
	l.Serve(inet, "203.0.113.10:8080")
	if _, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply: exit %d", code)
	}
	if !strings.Contains(l.In(host, "ip", "-o", "addr", "show", "dev", "up0"), "198.51.100.10/32") {
		t.Errorf("the floating address is not on up0 (the uplink holding its subnet)")
	}
	l.expect("internet -> floating 198.51.100.10 (ping)", true, l.Ping(inet, "198.51.100.10"))
	src, err := l.Dial(inet, "198.51.100.10:8080")
	l.expect("internet -> floating 198.51.100.10 (tcp)", true, err == nil)
	if err == nil && src != "198.51.100.126" {
		t.Errorf("guest saw %q, want the client's 198.51.100.126", src)
	}
	for _, route := range []string{"198.51.100.126", "198.51.100.254"} {
		l.must("ip", "-n", host, "route", "replace", "default", "via", route)
		src, err = l.Dial(g1, "203.0.113.10:8080")
		l.expect("floating guest -> internet, default via "+route, true, err == nil)
		if err == nil && src != "198.51.100.10" {
			t.Errorf("default via %s: the internet saw the floating guest as %q, want 198.51.100.10", route, src)
		}
	}
	src, err = l.Dial(g2, "203.0.113.10:8080")
	if err != nil || src != "198.51.100.129" {
		t.Errorf("a guest without a floating address: seen as %q (%v), want the masquerade address 198.51.100.129", src, err)
	}
	// Both maps are read back: a guest's outbound mapping taken out of
	// floating_out is drift, and apply puts it back.
	l.In(host, "nft", "delete", "element", "inet", "guestnet", "floating_out", "{ 10.99.0.10 }")
	if out, _, code := l.Run(host, "plan", spec); code != 2 {
		t.Errorf("plan after floating_out lost its element: exit %d, want 2\n%s", code, out)
	}
	l.Guestnet(host, "apply", spec)
	if src, err = l.Dial(g1, "203.0.113.10:8080"); err != nil || src != "198.51.100.10" {
		t.Errorf("after the repair the internet saw the floating guest as %q (%v), want 198.51.100.10", src, err)
	}
	l.Guestnet(host, "destroy", spec)
	if strings.Contains(l.In(host, "ip", "-o", "addr", "show", "dev", "up0"), "198.51.100.10") {
		t.Errorf("destroy left the floating address on up0")
	}
}

// TestIsolationMatrix prints, as one table, what a guest (bound to its
// lease by guestnet serve) may do: DHCP, DNS and ping to its gateway; not
// a spoofed source address or MAC, not another network's guest, not the
// host's other ports, unless the spec says guest_to_host: all.
func TestIsolationMatrix(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	const lab = "  lab:\n    mode: routed\n    bridge: grt0\n    ipv4: 10.99.1.1/24\n"
	spec := l.Spec(dhcpSpec + "    dns: {domain: lab.internal}\n" + lab)
	l.Serve_(host, spec)
	g := l.dhcpGuest(host, "default", "g", "vg1", "02:00:00:00:00:31")
	if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript()); err != nil {
		t.Fatalf("DHCP from the guest: %v\n%s", err, out)
	}
	leased := l.addrOf(g)
	// A neighbour on the same network receives; one on network lab serves.
	n := l.Guest(host, "default", "n", "vg2", "10.99.0.40/24", "10.99.0.1")
	l.must("ip", "-n", n, "link", "set", "eth0", "address", "02:00:00:00:00:40")
	l.must("ip", "-n", g, "neigh", "replace", "10.99.0.40", "lladdr", "02:00:00:00:00:40", "dev", "eth0")
	l.must("ip", "-n", g, "addr", "add", "10.99.0.66/24", "dev", "eth0")
	toN := l.udpSink(n, "10.99.0.40:7000")
	other := l.Guest(host, "lab", "o", "vg3", "10.99.1.10/24", "10.99.1.1")
	l.Serve(other, "10.99.1.10:8080")
	l.Serve(host, "10.99.0.1:22")
	l.Serve(host, "198.51.100.1:8022")
	l.matrix("guest does | allowed | happened", []check{
		{"DHCP lease from the host", true, func() bool { return leased != "" }},
		{"DNS on the gateway (vm1.lab.internal)", true, func() bool {
			out, _ := l.tryIn(g, "busybox", "nslookup", "vm1.lab.internal", "10.99.0.1")
			return strings.Contains(out, "10.99.0.10")
		}},
		{"ping the gateway", true, func() bool { return l.Ping(g, "10.99.0.1") }},
		{"udp to a neighbour from its leased address", true, func() bool { l.udpSend(g, leased, "10.99.0.40:7000"); return toN.got(leased) }},
		{"udp to a neighbour from a spoofed address", false, func() bool { l.udpSend(g, "10.99.0.66", "10.99.0.40:7000"); return toN.got("10.99.0.66") }},
		{"udp to a neighbour from a spoofed MAC", false, func() bool {
			l.must("ip", "-n", g, "link", "set", "eth0", "address", "02:00:00:00:00:32")
			defer l.must("ip", "-n", g, "link", "set", "eth0", "address", "02:00:00:00:00:31")
			l.udpSend(g, leased, "10.99.0.40:7000")
			return toN.got(leased)
		}},
		{"tcp to a guest of another network (lab)", false, func() bool { _, err := l.dialQuick(g, "10.99.1.10:8080"); return err == nil }},
		{"tcp host:22 on the gateway address", false, func() bool { _, err := l.dialQuick(g, "10.99.0.1:22"); return err == nil }},
		{"tcp host:8022 on its uplink address", false, func() bool { _, err := l.dialQuick(g, "198.51.100.1:8022"); return err == nil }},
	})

	// The spec's switches open the host to its guests, and let them spoof
	// (peers: is TestNetworksStayApart's).
	os.WriteFile(spec, []byte(dhcpSpec+"    dns: {domain: lab.internal}\n    guest_to_host: all\n    anti_spoofing: false\n"+lab), 0o644)
	l.Guestnet(host, "apply", spec) // the daemon reloads
	waitFor(t, "host:22 open to guests after guest_to_host: all", func() bool {
		_, err := l.dialQuick(g, "10.99.0.1:22")
		return err == nil
	})
	l.expect("udp from a spoofed address after anti_spoofing: false", true, func() bool {
		l.udpSend(g, "10.99.0.66", "10.99.0.40:7000")
		return toN.got("10.99.0.66")
	}())
}

// TestNetworksStayApart: guests of one network cannot open connections into
// another guest network, until the spec names it a peer.
func TestNetworksStayApart(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	base := natSpec + "  lab:\n    mode: routed\n    bridge: grt0\n    ipv4: 10.99.1.1/24\n"
	spec := l.Spec(base)
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g3 := l.Guest(host, "lab", "g3", "vg3", "10.99.1.10/24", "10.99.1.1")
	l.Serve(g3, "10.99.1.10:8080")
	l.Serve(g1, "10.99.0.10:8080")
	_, err := l.dialQuick(g1, "10.99.1.10:8080")
	l.expect("nat guest -> routed network's guest", false, err == nil)
	_, err = l.dialQuick(g3, "10.99.0.10:8080")
	l.expect("routed guest -> nat network's guest", false, err == nil)
	os.WriteFile(spec, []byte(base+"    peers: [default]\n"), 0o644)
	l.Guestnet(host, "apply", spec)
	_, err = l.dialQuick(g1, "10.99.1.10:8080")
	l.expect("nat guest -> routed guest once lab lists default as a peer", true, err == nil)
	_, err = l.dialQuick(g3, "10.99.0.10:8080")
	l.expect("routed guest -> nat guest (nat still refuses inbound)", false, err == nil)
}
