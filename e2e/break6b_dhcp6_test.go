package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"golang.org/x/net/ipv6"

	"github.com/guestnet/guestnet/internal/netns"
)

// hostile6Spec: a dual-stack network with DHCPv4, DHCPv6 and DNS;
// anti-spoofing off: until IPv6 anti-spoofing is merged, a port bound by
// its DHCPv4 lease sends no IPv6 at all (A's dhclient -6 would go
// unheard). The DHCPv6 server's own checks are what this test is about.
const hostile6Spec = `
networks:
  six:
    mode: routed
    bridge: gn6
    anti_spoofing: false
    ipv4: 10.61.0.1/24
    dhcp:
      range: 10.61.0.100-10.61.0.150
      lease: 1h
    ipv6: fd42:61::1/64
    dhcp6:
      range: [fd42:61::100-fd42:61::1ff]
      lease: 1h
    dns: {domain: six.test}
`

// dhcp6Client is a hostile guest's DHCPv6 socket: [its link-local]:546 on
// its eth0, sending to ff02::1:2 as any client does.
type dhcp6Client struct {
	pc    net.PacketConn
	zone  string // eth0's index in the guest's namespace
	mu    sync.Mutex
	heard []*dhcpv6.Message // other clients' multicast messages (sniff)
}

// hostile6 opens the guest's client socket, and a socket on [::]:547
// joined to ff02::1:2 that collects what other guests send there (the
// bridge floods their multicast Solicits and Requests to every port).
func (l *Lab) hostile6(ns string) *dhcp6Client {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	c := &dhcp6Client{}
	var sniff net.PacketConn
	err = n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.zone = fmt.Sprint(ifi.Index)
		addrs, _ := ifi.Addrs()
		var ll net.IP
		for _, a := range addrs {
			if ip := a.(*net.IPNet).IP; ip.IsLinkLocalUnicast() {
				ll = ip
			}
		}
		if c.pc, err = net.ListenPacket("udp6", fmt.Sprintf("[%s%%%s]:546", ll, c.zone)); err != nil {
			return err
		}
		if sniff, err = net.ListenPacket("udp6", "[::]:547"); err != nil {
			return err
		}
		return ipv6.NewPacketConn(sniff).JoinGroup(ifi, &net.UDPAddr{IP: net.ParseIP("ff02::1:2")})
	})
	if err != nil {
		l.t.Fatalf("hostile DHCPv6 guest %s: %v", ns, err)
	}
	l.t.Cleanup(func() { c.pc.Close(); sniff.Close() })
	go func() {
		b := make([]byte, 1500)
		for {
			k, _, err := sniff.ReadFrom(b)
			if err != nil {
				return
			}
			if m, err := dhcpv6.MessageFromBytes(b[:k]); err == nil {
				c.mu.Lock()
				c.heard = append(c.heard, m)
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// send sends m and returns the server's answer (nil after 2 s).
func (c *dhcp6Client) send(t *testing.T, m *dhcpv6.Message) *dhcpv6.Message {
	t.Helper()
	dst := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: c.zone}
	if _, err := c.pc.WriteTo(m.ToBytes(), dst); err != nil {
		t.Fatal(err)
	}
	c.pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 1500)
	for {
		k, _, err := c.pc.ReadFrom(b)
		if err != nil {
			return nil
		}
		if rep, err := dhcpv6.MessageFromBytes(b[:k]); err == nil && rep.TransactionID == m.TransactionID {
			return rep
		}
	}
}

// granted6 are the addresses with a lifetime in rep's IAs.
func granted6(rep *dhcpv6.Message) []netip.Addr {
	var out []netip.Addr
	if rep == nil {
		return nil
	}
	for _, ia := range rep.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if ip, ok := netip.AddrFromSlice(a.IPv6Addr); ok && a.ValidLifetime > 0 {
				out = append(out, ip)
			}
		}
	}
	return out
}

// TestDHCPv6HostileGuest: guest B attacks DHCPv6 with real packets from
// its namespace, while guest A runs dhclient -6 (and udhcpc, whose
// hostname is web):
//   - B sniffs A's multicast Request (DUID, IAID, server ID) and sends
//     Release, Decline and Renew in A's name from its own port: A's lease
//     stays A's, bound;
//   - B sends Requests with 40 invented DUIDs: it gets at most 8 addresses
//     (the per-port cap), and leases.db holds no more;
//   - B asks for the name web in its DHCPv6 FQDN: AAAA web.six.test is not
//     B's address (the name is A's, by DHCPv4).
func TestDHCPv6HostileGuest(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host := l.NS("host")
	l.Serve_(host, l.Spec(hostile6Spec))
	tmp := t.TempDir()

	gb := l.v6Guest(host, "six", "evil6", "vh2", "02:00:00:00:61:42")
	l.must("ip", "-n", gb, "link", "set", "eth0", "up")
	if _, ok := waitTrue(5*time.Second, func() bool { return l.linkLocal6(gb, "eth0") != "" }); !ok {
		t.Fatal("B has no link-local address")
	}
	b := l.hostile6(gb)

	ga := l.v6Guest(host, "six", "victim6", "vh1", "02:00:00:00:61:41")
	l.must("ip", "-n", ga, "link", "set", "eth0", "up")
	// udhcpc's hook: the IPv4 address alone (clientScript flushes every
	// address, the link-local one dhclient -6 needs too).
	hook4 := filepath.Join(tmp, "hook4")
	os.WriteFile(hook4, []byte("#!/bin/sh\n[ \"$1\" = bound ] && ip -4 addr add $ip/$mask dev $interface\nexit 0\n"), 0o755)
	if _, err := l.tryIn(ga, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "4", "-T", "1", "-s", hook4, "-x", "hostname:web"); err != nil {
		t.Fatalf("udhcpc in A: %v", err)
	}
	l.startBG(ga, "dhclient", "-6", "-d", "-sf", l.hook6(filepath.Join(tmp, "a.log")), "-lf", filepath.Join(tmp, "a.leases"),
		"-pf", filepath.Join(tmp, "a.pid"), "eth0")
	var aAddr string
	if _, ok := waitTrue(20*time.Second, func() bool { aAddr = l.inRange6(ga); return aAddr != "" }); !ok {
		t.Fatalf("A got no DHCPv6 address\n%s", l.In(host, "nft", "list", "table", "inet", "guestnet"))
	}
	var req *dhcpv6.Message
	b.mu.Lock()
	for _, m := range b.heard {
		if m.MessageType == dhcpv6.MessageTypeRequest {
			req = m
		}
	}
	b.mu.Unlock()
	if req == nil {
		t.Fatalf("B heard no Request of A's (%d messages)", len(b.heard))
	}
	cid, sid, ia := req.Options.ClientID(), req.Options.ServerID(), req.Options.OneIANA()
	t.Logf("B sniffed A's Request: DUID %x, IAID %x; A holds %s", cid.ToBytes(), ia.IaId, aAddr)

	inName := func(typ dhcpv6.MessageType) *dhcpv6.Message {
		m := &dhcpv6.Message{MessageType: typ, TransactionID: dhcpv6.TransactionID{byte(typ), 6, 6}}
		m.AddOption(dhcpv6.OptClientID(cid))
		m.AddOption(dhcpv6.OptServerID(sid))
		out := &dhcpv6.OptIANA{IaId: ia.IaId}
		out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP(aAddr)})
		m.AddOption(out)
		return m
	}
	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeRenew} {
		rep := b.send(t, inName(typ))
		x := l.leases6(host)[aAddr]
		if x.State != "bound" || x.MAC != "02:00:00:00:61:41" {
			t.Errorf("after B's %s in A's name (answer: %v), A's lease is %+v, want bound to A's MAC", typ, rep != nil, x)
		} else {
			t.Logf("ok  B's %s in A's name: answered %v, A's lease still bound", typ, rep != nil)
		}
	}

	var mine []netip.Addr
	for i := range 40 {
		m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest, TransactionID: dhcpv6.TransactionID{0x40, 0, byte(i)}}
		m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDUUID{UUID: [16]byte{0: 0xee, 15: byte(i)}}))
		m.AddOption(dhcpv6.OptServerID(sid))
		m.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}})
		mine = append(mine, granted6(b.send(t, m))...)
	}
	stored := 0
	for _, x := range l.leases6(host) {
		if strings.HasPrefix(x.DUID, "00:04:ee") && x.State == "bound" {
			stored++
		}
	}
	if len(mine) > 8 || stored > 8 {
		t.Errorf("40 invented DUIDs from one port: %d addresses granted, %d leases stored; want at most 8 (per_port)", len(mine), stored)
	}
	t.Logf("40 invented DUIDs from one port: %d addresses granted, %d stored", len(mine), stored)

	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest, TransactionID: dhcpv6.TransactionID{0x77, 7, 7}}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDUUID{UUID: [16]byte{0: 0xee, 15: 0}})) // one B holds
	m.AddOption(dhcpv6.OptServerID(sid))
	m.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}})
	m.AddOption(&dhcpv6.OptFQDN{DomainName: &rfc1035label.Labels{Labels: []string{"web"}}})
	got := granted6(b.send(t, m))
	if len(got) != 1 {
		t.Fatalf("B's Request with the name web: %v", got)
	}
	out := strings.TrimSpace(l.In(ga, "dig", "+short", "+time=2", "+tries=1", "@10.61.0.1", "AAAA", "web.six.test"))
	if out == got[0].String() {
		t.Errorf("AAAA web.six.test is %s, guest B's: B took over A's name (A web.six.test is A's)", out)
	}
	a4 := strings.TrimSpace(l.In(ga, "dig", "+short", "+time=2", "+tries=1", "@10.61.0.1", "A", "web.six.test"))
	t.Logf("A web.six.test = %q (A's), AAAA web.six.test = %q (B asked for web with %s)", a4, out, got[0])
}
