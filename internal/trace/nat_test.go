package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// natHost is an observed host built in Go: network default (nat, with
// port forwards, a floating address, dns:, and lab as a peer), lab
// (routed, guest_to_host: all) and other (nat, no peers), rendered by nft
// exactly as apply would write them.
func natHost(t *testing.T) model.Host {
	t.Helper()
	p := netip.MustParsePrefix
	nets := []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: p("10.99.0.1/24"), DNS: &model.DNS{Domain: "lan"}, Peers: []string{"lab"},
			Forwards: []model.PortForward{
				{Proto: "tcp", PortFrom: 2222, PortTo: 2222, To: a("10.99.0.10"), ToPort: 8080},
				{Proto: "tcp", PortFrom: 8081, PortTo: 8081, To: a("10.99.0.10"), ToPort: 8080, From: []netip.Prefix{p("203.0.113.0/24")}},
			},
			Floating: []model.Floating{{Public: a("198.51.100.50"), Guest: a("10.99.0.20")}}},
		{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv4: p("10.99.1.1/24"), GuestToHost: "all"},
		{Name: "other", Mode: model.NAT, Bridge: "gnat1", IPv4: p("10.99.2.1/24")},
	}
	h := model.Host{
		Links: []model.Link{
			{Name: "gnat0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("10.99.0.1/24")}},
			{Name: "gnat1", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("10.99.2.1/24")}},
			{Name: "grt0", Kind: "bridge", Up: true, Group: model.GuestGroup, Addrs: []netip.Prefix{p("10.99.1.1/24")}},
			{Name: "lo", Kind: "device", Up: true, Addrs: []netip.Prefix{p("127.0.0.1/8")}},
			{Name: "up0", Kind: "veth", Up: true, Addrs: []netip.Prefix{p("198.51.100.1/25")}},
		},
		Routes: []model.Route{
			{Dst: p("0.0.0.0/0"), Gw: a("198.51.100.126"), Dev: "up0"},
			{Dst: p("198.51.100.0/25"), Dev: "up0", Proto: 2},
			{Dst: p("10.99.0.0/24"), Dev: "gnat0", Proto: 2},
			{Dst: p("10.99.1.0/24"), Dev: "grt0", Proto: 2},
			{Dst: p("10.99.2.0/24"), Dev: "gnat1", Proto: 2},
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

func detail(r Result) string {
	var s []string
	for _, h := range r.Hops {
		s = append(s, h.Stage+" "+strings.ToUpper(h.Verdict)+" "+h.Detail)
	}
	return strings.Join(s, "\n")
}

// TestWalkEveryRule walks a packet past each kind of rule guestnet
// renders: the services of the host, the DNAT of port forwards and
// floating addresses (both ways), peers and their absence. where is "host"
// (delivered to the host), an egress interface, or "" (dropped); the
// output must say what is named in says.
func TestWalkEveryRule(t *testing.T) {
	h := natHost(t)
	pk := func(src, dst, proto string, port int) Packet {
		return Packet{Src: a(src), Dst: a(dst), Proto: proto, Port: port}
	}
	for _, c := range []struct {
		name  string
		p     Packet
		where string
		dst   string
		says  []string
	}{
		{"guest -> gateway udp/53", pk("10.99.0.10", "10.99.0.1", "udp", 53), "host", "10.99.0.1", []string{`chain input-default: udp dport 53 accept`}},
		{"guest -> gateway tcp/53", pk("10.99.0.10", "10.99.0.1", "tcp", 53), "host", "10.99.0.1", []string{`chain input-default: tcp dport 53 accept`}},
		{"guest -> gateway udp/67", pk("10.99.0.10", "10.99.0.1", "udp", 67), "host", "10.99.0.1", []string{`udp dport 67 accept`}},
		{"guest -> gateway icmp", pk("10.99.0.10", "10.99.0.1", "icmp", 0), "host", "10.99.0.1", []string{`meta l4proto icmp accept`}},
		{"guest -> gateway tcp/22", pk("10.99.0.10", "10.99.0.1", "tcp", 22), "", "10.99.0.1", []string{`input DROP table inet guestnet chain input-default: reject`}},
		{"guest_to_host all: tcp/22", pk("10.99.1.10", "10.99.1.1", "tcp", 22), "host", "10.99.1.1", nil},
		{"internet -> forward 2222", pk("203.0.113.10", "198.51.100.1", "tcp", 2222), "gnat0", "10.99.0.10",
			[]string{"port forward tcp/2222 -> 10.99.0.10:8080 (map forwards)", `chain to-default: ct status dnat accept`, "conntrack restores the source: 10.99.0.10 answers as 198.51.100.1"}},
		{"internet -> forward 8081 (from: list)", pk("203.0.113.10", "198.51.100.1", "tcp", 8081), "gnat0", "10.99.0.10",
			[]string{"port forward tcp/8081 -> 10.99.0.10:8080 from 203.0.113.0/24 (map forwards_src)"}},
		{"8081 from outside its from: list", pk("198.51.100.126", "198.51.100.1", "tcp", 8081), "host", "198.51.100.1", []string{"is an address of this host"}},
		{"internet -> port nobody forwards", pk("203.0.113.10", "198.51.100.1", "tcp", 8082), "host", "198.51.100.1", []string{"is an address of this host"}},
		{"hairpin: guest -> public :2222", pk("10.99.0.11", "198.51.100.1", "tcp", 2222), "gnat0", "10.99.0.10",
			[]string{"port forward tcp/2222", "source 10.99.0.11 becomes 10.99.0.1"}},
		{"internet -> floating address", pk("203.0.113.10", "198.51.100.50", "tcp", 8080), "gnat0", "10.99.0.20",
			[]string{"floating address 198.51.100.50 is guest 10.99.0.20 (map floating_in)"}},
		{"floating guest -> internet", pk("10.99.0.20", "203.0.113.10", "icmp", 0), "up0", "203.0.113.10",
			[]string{"guest 10.99.0.20 leaves as its floating address 198.51.100.50 (map floating_out)", "conntrack un-NATs 198.51.100.50 to 10.99.0.20"}},
		{"other guest -> internet masqueraded", pk("10.99.0.10", "203.0.113.10", "tcp", 80), "up0", "203.0.113.10", []string{"source 10.99.0.10 becomes 198.51.100.1"}},
		{"lab (peer) -> default", pk("10.99.1.10", "10.99.0.10", "tcp", 8080), "gnat0", "10.99.0.10", []string{`chain to-default: iifname "grt0" accept`}},
		{"other (no peer) -> default", pk("10.99.2.10", "10.99.0.10", "tcp", 8080), "", "10.99.0.10", []string{`chain to-default: iifgroup 26485 iifname != "gnat0" reject`}},
		{"default -> other (no peer)", pk("10.99.0.10", "10.99.2.10", "tcp", 8080), "", "10.99.2.10", []string{`chain to-other: iifgroup 26485 iifname != "gnat1" reject`}},
		{"internet -> nat guest directly", pk("203.0.113.10", "10.99.0.10", "tcp", 8080), "", "10.99.0.10", []string{`chain to-default: reject`}},
		{"internet -> gateway dns (dns: keeps it for the bridge)", pk("203.0.113.10", "10.99.0.1", "udp", 53), "", "10.99.0.1", []string{`chain dns-default: iifname != "gnat0" iifname != "lo" drop`}},
		{"the host -> its own :2222", pk("198.51.100.1", "198.51.100.1", "tcp", 2222), "gnat0", "10.99.0.10", []string{"output DNAT port forward tcp/2222"}},
	} {
		r := Walk(h, model.Diag{}, c.p)
		where := ""
		switch {
		case r.Delivered && r.Local:
			where = "host"
		case r.Delivered:
			where = r.Egress
		}
		out := detail(r)
		if where != c.where || r.Dst != a(c.dst) || r.CannotTell {
			t.Errorf("%s: ends at %q (dst %s, cannot tell %v), want %q (dst %s)\n%s", c.name, where, r.Dst, r.CannotTell, c.where, c.dst, out)
			continue
		}
		for _, s := range c.says {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the walk does not say %q:\n%s", c.name, s, out)
			}
		}
		if strings.Contains(c.name, "forward 2") && (r.Forward == nil || r.Forward.Port != 2222) {
			t.Errorf("%s: Result.Forward = %v, want the 2222 forward", c.name, r.Forward)
		}
		if strings.Contains(c.name, "floating") && r.Floating == nil {
			t.Errorf("%s: Result.Floating not set", c.name)
		}
	}
}

// TestWalkCannotTell: a rule the matcher cannot simulate stops the walk
// with a hop that names it, neither delivered nor dropped.
func TestWalkCannotTell(t *testing.T) {
	h := natHost(t)
	for i, c := range h.Ruleset.Chains {
		if c.Name == "input" {
			h.Ruleset.Chains[i].Rules = append([]model.Rule{{Network: "x", Match: []model.Match{{Kind: "meta mark", Port: 1}}, Verdict: model.Drop}}, c.Rules...)
		}
	}
	r := Walk(h, model.Diag{}, Packet{Src: a("10.99.0.10"), Dst: a("10.99.0.1"), Proto: "udp", Port: 53})
	last := r.Hops[len(r.Hops)-1]
	if r.Delivered || !r.CannotTell || last.Verdict != "stop" || !strings.Contains(last.Detail, "meta mark") {
		t.Errorf("want a stop naming the rule, got delivered=%v cannot_tell=%v\n%s", r.Delivered, r.CannotTell, detail(r))
	}
}

// TestWalkSaysWhatItDoesNotSimulate: foreign DNAT rules and policy routing
// rules, when the host has any, are named where the walk passes them.
func TestWalkSaysWhatItDoesNotSimulate(t *testing.T) {
	h := natHost(t)
	d := model.Diag{ForeignDNAT: []string{"table ip nat chain DOCKER"}, PolicyRules: []string{"1000: from 10.99.0.0/24 lookup 100"}}
	r := Walk(h, d, Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10"), Proto: "tcp", Port: 80})
	out := detail(r)
	for _, want := range []string{
		"prerouting NOTE not simulated: the DNAT rules of table ip nat chain DOCKER",
		"route NOTE not simulated: policy routing (ip rule 1000: from 10.99.0.0/24 lookup 100)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the walk does not say %q:\n%s", want, out)
		}
	}
	if !r.Delivered {
		t.Errorf("a note is not a drop:\n%s", out)
	}
	if r := Walk(h, model.Diag{}, Packet{Src: a("10.99.0.10"), Dst: a("203.0.113.10"), Proto: "tcp", Port: 80}); strings.Contains(detail(r), "not simulated") {
		t.Errorf("without foreign DNAT or policy rules the walk has nothing to disclaim:\n%s", detail(r))
	}
}

// TestWalkSelfHairpin: a guest reaching itself through its own forward or
// floating address is dropped under br_netfilter (the frame would go back
// out the port it came in on; breaker 2 saw the real connection time out),
// and routed back without it; a neighbour's public address works either way.
func TestWalkSelfHairpin(t *testing.T) {
	for _, brnf := range []bool{true, false} {
		h := natHost(t)
		h.BridgeNFCallIPTables = brnf
		for _, c := range []struct {
			src, dst string
			port     int
			want     bool
		}{
			{"10.99.0.10", "198.51.100.1", 2222, !brnf}, // its own forward
			{"10.99.0.20", "198.51.100.50", 22, !brnf},  // its own floating address
			{"10.99.0.20", "198.51.100.1", 2222, true},  // a neighbour's forward
		} {
			r := Walk(h, model.Diag{}, Packet{Src: a(c.src), Dst: a(c.dst), Proto: "tcp", Port: c.port})
			if r.Delivered != c.want || r.CannotTell {
				t.Errorf("br_netfilter %v: %s -> %s tcp/%d: delivered %v, want %v\n%s", brnf, c.src, c.dst, c.port, r.Delivered, c.want, detail(r))
			}
		}
	}
}
