package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// routedFromHost is the e2e scenario's host built in Go: nat network
// default (10.91.0.1/24, routed_from 10.94.0.0/24), a LAN on lan0
// (10.94.0.1/24), another on lan1 (10.95.0.1/24), the internet on up0.
func routedFromHost(t *testing.T) model.Host {
	t.Helper()
	p := netip.MustParsePrefix
	nets := []model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: p("10.91.0.1/24"), RoutedFrom: []netip.Prefix{p("10.94.0.0/24")}}}
	h := model.Host{
		Links: []model.Link{
			{Name: "gnat0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("10.91.0.1/24")}},
			{Name: "lan0", Kind: "veth", Up: true, Addrs: []netip.Prefix{p("10.94.0.1/24")}},
			{Name: "lan1", Kind: "veth", Up: true, Addrs: []netip.Prefix{p("10.95.0.1/24")}},
			{Name: "lo", Kind: "device", Up: true, Addrs: []netip.Prefix{p("127.0.0.1/8")}},
			{Name: "up0", Kind: "veth", Up: true, Addrs: []netip.Prefix{p("198.51.100.1/25")}},
		},
		Routes: []model.Route{
			{Dst: p("0.0.0.0/0"), Gw: a("198.51.100.126"), Dev: "up0"},
			{Dst: p("198.51.100.0/25"), Dev: "up0", Proto: 2},
			{Dst: p("10.91.0.0/24"), Dev: "gnat0", Proto: 2},
			{Dst: p("10.94.0.0/24"), Dev: "lan0", Proto: 2},
			{Dst: p("10.95.0.0/24"), Dev: "lan1", Proto: 2},
		},
		IPForward: true,
	}
	rs, err := nft.Render(nets, h)
	if err != nil {
		t.Fatal(err)
	}
	h.Ruleset = rs
	return h
}

// TestWalkRoutedFrom: a packet from a routed_from peer to a guest is
// accepted and not translated; the guest's reply and its own connection
// to the peer keep the guest's address; a host outside routed_from and
// the internet are dropped by the nat network's reject, which says who
// may get in; the guest's traffic to the internet is masqueraded.
func TestWalkRoutedFrom(t *testing.T) {
	h := routedFromHost(t)
	for _, c := range []struct {
		name, src, dst string
		delivered      bool
		says           []string
	}{
		{"peer -> guest", "10.94.0.10", "10.91.0.10", true, []string{
			"forward ACCEPT table inet guestnet chain to-default: ip saddr 10.94.0.0/24 fib saddr . iif oif != 0 accept",
			"egress DELIVER out of gnat0 to 10.91.0.10 (source 10.94.0.10)",
			"reply NOTE 10.91.0.10 answers 10.94.0.10", "egress DELIVER out of lan0 to 10.94.0.10 (source 10.91.0.10)"}},
		{"guest -> peer", "10.91.0.10", "10.94.0.10", true, []string{
			"postrouting ACCEPT table inet guestnet chain nat-default: ip daddr 10.94.0.0/24 accept",
			"not masqueraded (routed_from): the far end sees 10.91.0.10",
			"egress DELIVER out of lan0 to 10.94.0.10 (source 10.91.0.10)"}},
		{"outsider -> guest", "10.95.0.10", "10.91.0.10", false, []string{
			"forward DROP table inet guestnet chain to-default: reject",
			"routed_from [10.94.0.0/24]", "10.95.0.10 is in none"}},
		{"internet -> guest", "203.0.113.10", "10.91.0.10", false, []string{
			"forward DROP table inet guestnet chain to-default: reject"}},
		{"guest -> internet", "10.91.0.10", "203.0.113.10", true, []string{
			"masquerade", "source 10.91.0.10 becomes 198.51.100.1"}},
	} {
		r := Walk(h, model.Diag{}, Packet{Src: a(c.src), Dst: a(c.dst), Proto: "tcp", Port: 8080})
		out := detail(r)
		if r.Delivered != c.delivered {
			t.Errorf("%s: delivered %v, want %v\n%s", c.name, r.Delivered, c.delivered, out)
		}
		for _, s := range c.says {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the walk does not say %q:\n%s", c.name, s, out)
			}
		}
	}
}

// TestWalkRoutedFromSpoofed (break17): a routed_from source arriving on
// an interface other than the route back to it (lan1, while 10.94.0.0/24
// is routed to lan0) is refused, and the walk says why; the same source
// on lan0 gets in.
func TestWalkRoutedFromSpoofed(t *testing.T) {
	h := routedFromHost(t)
	r := Walk(h, model.Diag{}, Packet{Src: a("10.94.0.99"), Dst: a("10.91.0.10"), Proto: "udp", Port: 5353, InDev: "lan1"})
	out := detail(r)
	want := "10.94.0.99 is in 10.94.0.0/24, but arrives on lan1 while the route back to it is dev lan0: a spoofed source, refused"
	if r.Delivered || !strings.Contains(out, want) {
		t.Errorf("spoofed 10.94.0.99 on lan1: delivered %v, want refused saying %q:\n%s", r.Delivered, want, out)
	}
	r = Walk(h, model.Diag{}, Packet{Src: a("10.94.0.99"), Dst: a("10.91.0.10"), Proto: "udp", Port: 5353, InDev: "lan0"})
	if !r.Delivered {
		t.Errorf("10.94.0.99 on lan0: refused, want delivered:\n%s", detail(r))
	}
}
