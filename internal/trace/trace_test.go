package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

func host(t *testing.T) model.Host {
	nets := []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: netip.MustParsePrefix("10.99.0.1/24")},
		{Name: "iso", Mode: model.Isolated, Bridge: "giso0"},
	}
	h := model.Host{
		Links: []model.Link{
			{Name: "giso0", Kind: "bridge", Up: true},
			{Name: "gnat0", Kind: "bridge", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}},
			{Name: "up0", Kind: "veth", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}},
		},
		Routes: []model.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("198.51.100.254"), Dev: "up0"},
			{Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "up0", Proto: 2},
			{Dst: netip.MustParsePrefix("10.99.0.0/24"), Dev: "gnat0", Proto: 2},
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

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

// bindTap0 adds three guest ports to gnat0: tap0 bound by attach, tap1 by
// a lease, tap2 unbound.
func bindTap0(h *model.Host) {
	for _, p := range []string{"tap0", "tap1", "tap2"} {
		h.Links = append(h.Links, model.Link{Name: p, Kind: "tuntap", Up: true, Master: "gnat0"})
	}
	mac := "52:54:00:00:00:10"
	h.Guard = model.Guard{On: true,
		Bound:   []model.Bind{{Port: "tap0", MAC: mac, IP: netip.IPv4Unspecified()}, {Port: "tap0", MAC: mac, IP: a("10.99.0.10")}, {Port: "tap0", MAC: mac, IP: a("10.99.0.11")}},
		Learned: []model.Bind{{Port: "tap1", MAC: "52:54:00:00:00:11", IP: a("10.99.0.100")}}}
}

func TestWalk(t *testing.T) {
	cases := []struct {
		name      string
		p         Packet
		edit      func(*model.Host)
		delivered bool
		stop      string
	}{
		{"nat guest out, masqueraded", Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10")}, nil, true, ""},
		{"internet in", Packet{Src: a("203.0.113.10"), Dst: a("10.99.0.10")}, nil, false, `chain to-default: reject`},
		{"isolated out", Packet{Src: a("10.98.0.10"), Dst: a("203.0.113.10"), InDev: "giso0"}, nil, false, `chain from-iso: reject`},
		{"isolated to the host", Packet{Src: a("10.98.0.10"), Dst: a("198.51.100.1"), InDev: "giso0"}, nil, false, `chain input-iso: drop`},
		{"forwarding off", Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10")}, func(h *model.Host) { h.IPForward = false }, false, "ip_forward = 0"},
		{"no route", Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10")}, func(h *model.Host) { h.Routes = h.Routes[1:] }, false, "no route to 203.0.113.10"},
		{"foreign FORWARD drop", Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10")}, func(h *model.Host) {
			h.Foreign.ForwardDrop = []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}
		}, false, "policy drop"},
		{"bound port, its own address", Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10"), GuestPort: "tap0"}, bindTap0, true, ""},
		{"bound port, spoofed address", Packet{Src: a("10.99.0.66"), Dst: a("203.0.113.10"), GuestPort: "tap0"}, bindTap0, false,
			"port tap0 may send only from 10.99.0.10, 10.99.0.11 (MAC 52:54:00:00:00:10); 10.99.0.66 is dropped as spoofed"},
		{"leased port, spoofed address", Packet{Src: a("10.99.0.66"), Dst: a("203.0.113.10"), GuestPort: "tap1"}, bindTap0, false,
			"port tap1 may send only from 10.99.0.100"},
		{"unbound port", Packet{Src: a("10.99.0.66"), Dst: a("203.0.113.10"), GuestPort: "tap2"}, bindTap0, true, ""},
	}
	for _, c := range cases {
		h := host(t)
		if c.edit != nil {
			c.edit(&h)
		}
		r := Walk(h, model.Diag{}, c.p)
		last := r.Hops[len(r.Hops)-1]
		if r.Delivered != c.delivered || (c.stop != "" && (last.Verdict != "drop" || !strings.Contains(last.Detail, c.stop))) {
			t.Errorf("%s: delivered=%v, last hop %+v; want delivered=%v stopping at %q", c.name, r.Delivered, last, c.delivered, c.stop)
		}
	}
	r := Walk(host(t), model.Diag{}, Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10")})
	var text []string
	for _, hop := range r.Hops {
		text = append(text, hop.Detail)
	}
	if !strings.Contains(strings.Join(text, "\n"), "source 10.99.0.10 becomes 198.51.100.1") {
		t.Errorf("masquerade not shown:\n%s", strings.Join(text, "\n"))
	}
}

// TestWalkDNS: with dns: on network default, DNS to its gateway is dropped
// from the internet by the rule that keeps it for the bridge, answered for
// a guest; other traffic to the gateway is untouched by that rule.
func TestWalkDNS(t *testing.T) {
	h := host(t)
	nets := []model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: netip.MustParsePrefix("10.99.0.1/24"),
		DNS: &model.DNS{Domain: "lab.internal"}}}
	rs, err := nft.Render(nets, h)
	if err != nil {
		t.Fatal(err)
	}
	h.Ruleset = rs
	for _, c := range []struct {
		name      string
		p         Packet
		delivered bool
		stop      string
	}{
		{"internet to the gateway, udp/53", Packet{Src: a("203.0.113.10"), Dst: a("10.99.0.1"), Proto: "udp", Port: 53}, false,
			`chain dns-default: iifname != "gnat0" iifname != "lo" drop`},
		{"internet to the gateway, tcp/53", Packet{Src: a("203.0.113.10"), Dst: a("10.99.0.1"), Proto: "tcp", Port: 53}, false,
			`chain dns-default: iifname != "gnat0" iifname != "lo" drop`},
		{"internet to the gateway, icmp", Packet{Src: a("203.0.113.10"), Dst: a("10.99.0.1"), Proto: "icmp"}, true, ""},
		{"guest to its gateway, udp/53", Packet{Src: a("10.99.0.10"), Dst: a("10.99.0.1"), Proto: "udp", Port: 53}, true, ""},
		{"guest to its gateway, tcp/22", Packet{Src: a("10.99.0.10"), Dst: a("10.99.0.1"), Proto: "tcp", Port: 22}, false,
			`chain input-default: reject`},
	} {
		r := Walk(h, model.Diag{}, c.p)
		last := r.Hops[len(r.Hops)-1]
		if r.Delivered != c.delivered || (c.stop != "" && (last.Verdict != "drop" || !strings.Contains(last.Detail, c.stop))) {
			t.Errorf("%s: delivered=%v, last hop %+v; want delivered=%v stopping at %q", c.name, r.Delivered, last, c.delivered, c.stop)
		}
	}
}
