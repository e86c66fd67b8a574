package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
)

// withBGP is healthy() plus a routed network, dmz, announced by a speaker
// with two established peers, one of whose routes is installed.
func withBGP() Input {
	in := healthy()
	in.Host.Links = append(in.Host.Links, model.Link{Name: "gdmz0", Kind: "bridge", Up: true, Carrier: true, MTU: 1500,
		Alias: "guestnet:dmz", Addrs: []netip.Prefix{pfx("10.71.0.1/24")}})
	slices.SortFunc(in.Host.Links, func(a, b model.Link) int { return strings.Compare(a.Name, b.Name) }) // Host.Link searches by name
	in.Networks = append(in.Networks, model.Network{Name: "dmz", Mode: model.Routed, Bridge: "gdmz0", IPv4: pfx("10.71.0.1/24")})
	a := netip.MustParseAddr
	in.BGP = &bgp.Status{ASN: 65001, RouterID: a("10.10.0.1"), Port: 179,
		Peers: []bgp.PeerStatus{
			{Address: a("10.10.0.2"), ASN: 65002, State: bgp.StateEstablished, Sent: 1, Received: 1, Installed: 1},
			{Address: a("10.10.0.3"), ASN: 65003, State: bgp.StateEstablished, Sent: 1},
		},
		Announced: []netip.Prefix{pfx("10.71.0.0/24")},
		Learned:   []bgp.Learned{{Prefix: pfx("10.72.0.0/24"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"), Installed: true}},
	}
	return in
}

// Each BGP fault gives its check's finding, with the severity that says
// whether it is a problem (doctor's exit status follows it), and every
// finding has its evidence and fix.
func TestBGPChecks(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		name    string
		breakIt func(in *Input)
		want    string // check:severity, in order
	}{
		{"healthy", func(in *Input) {}, ""},
		{"one peer down, another up", func(in *Input) {
			in.BGP.Peers[1].State, in.BGP.Peers[1].LastError = bgp.StateActive, "hold timer expired"
		}, "bgp-session:warning"},
		{"every peer down", func(in *Input) {
			in.BGP.Peers[0].State, in.BGP.Peers[1].State = bgp.StateIdle, bgp.StateOpenSent
		}, "bgp-session:error,bgp-session:error"},
		{"a default route refused by the import policy", func(in *Input) {
			in.BGP.Learned = append(in.BGP.Learned, bgp.Learned{Prefix: pfx("0.0.0.0/0"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"),
				Refused: true, Why: "a default route: import does not list 0.0.0.0/0"})
		}, "bgp-learned:info"},
		{"a route that should be installed and is not", func(in *Input) {
			in.BGP.Learned = append(in.BGP.Learned, bgp.Learned{Prefix: pfx("10.73.0.0/24"), NextHop: a("10.20.0.3"), Peer: a("10.10.0.3"),
				Why: "next hop 10.20.0.3 is not in a connected subnet"})
		}, "bgp-learned:warning"},
		{"forwarding off while dmz is announced", func(in *Input) { in.Host.IPForward = false },
			"ip-forward:error,ip-forward:error,bgp-forwarding:error"},
		{"forwarding off, dmz not announced", func(in *Input) {
			in.Host.IPForward = false
			in.Networks[1].NoAnnounce = true
			in.BGP.Announced = nil
		}, "ip-forward:error,ip-forward:error"},
		{"forwarding off, no bgp section", func(in *Input) { in.Host.IPForward, in.BGP = false, nil },
			"ip-forward:error,ip-forward:error"},
		{"no bgp section: sessions and routes are not looked at", func(in *Input) {
			in.BGP.Peers[0].State = bgp.StateActive
			in.BGP = nil
		}, ""},
		{"hand-made host (modes unknown), forwarding off: the speaker's list", func(in *Input) {
			in.Host.IPForward = false
			in.Host.Ruleset = model.Ruleset{}
			in.Declared, in.Networks = false, nil
		}, "bgp-forwarding:error"},
	}
	for _, c := range cases {
		in := withBGP()
		c.breakIt(&in)
		var got []string
		for _, f := range Run(in) {
			got = append(got, f.Check+":"+string(f.Severity))
			if f.What == "" || len(f.Evidence) == 0 || f.Fix == "" {
				t.Errorf("%s: incomplete finding %+v", c.name, f)
			}
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: findings %v, want %q", c.name, got, c.want)
		}
	}
}

// The findings' words: the peer's state and last error (escaped: a
// peer's notification text is free-form), what to check for a TCP
// session that does not come up and for one whose OPEN fails; the
// route and the speaker's reason; the prefix announced while forwarding
// is off and the two ways out.
func TestBGPFindingText(t *testing.T) {
	in := withBGP()
	in.BGP.Peers[0].State = bgp.StateActive
	in.BGP.Peers[0].Since = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	in.BGP.Peers[0].LastError = "peer sent shutdown: maintenance\n\x1b[31m"
	in.BGP.Peers[1].State = bgp.StateOpenConfirm
	in.BGP.Learned = append(in.BGP.Learned, bgp.Learned{Prefix: pfx("10.73.0.0/24"), NextHop: netip.MustParseAddr("10.20.0.3"),
		Peer: netip.MustParseAddr("10.10.0.3"), Why: "next hop 10.20.0.3 is not in a connected subnet"},
		bgp.Learned{Prefix: pfx("0.0.0.0/0"), NextHop: netip.MustParseAddr("10.10.0.2"), Peer: netip.MustParseAddr("10.10.0.2"),
			Refused: true, Why: "a default route: import does not list 0.0.0.0/0"},
		bgp.Learned{Prefix: pfx("172.20.0.0/16"), NextHop: netip.MustParseAddr("10.10.0.2"), Peer: netip.MustParseAddr("10.10.0.2"),
			Refused: true, Why: "outside import (10.0.0.0/8)"})
	in.Host.IPForward = false
	var all []string
	for _, f := range Run(in) {
		all = append(all, f.Check+": "+f.What+" | "+strings.Join(f.Evidence, " | ")+" | "+f.Fix)
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		"bgp-session: the BGP session with 10.10.0.2 (AS 65002) is active, not established",
		"peer 10.10.0.2 AS 65002: active since 2026-11-30T06:00:00Z",
		`last error: "peer sent shutdown: maintenance\n\x1b[31m"`,
		"0 of 2 peers established",
		"check that 10.10.0.2 runs BGP and lists this host (10.10.0.1, AS 65001) as its neighbour with AS 65002",
		"nc -zv 10.10.0.2 179",
		"bgp-session: the BGP session with 10.10.0.3 (AS 65003) is openconfirm",
		"disagree on the OPEN: check the AS numbers on both sides (this host 10.10.0.1, AS 65001; the peer must be AS 65003",
		"bgp-learned: the route to 10.73.0.0/24 learned from 10.10.0.3 is not installed: next hop 10.20.0.3 is not in a connected subnet",
		"ip route show 10.73.0.0/24",
		"bgp-learned: the route to 0.0.0.0/0 learned from 10.10.0.2 is refused by the import policy: a default route: import does not list 0.0.0.0/0",
		"If it should: list 0.0.0.0/0 under bgp: import: and reload",
		"If it should: list 172.20.0.0/16 (or a shorter prefix that covers it) under bgp: import: and reload",
		"bgp-forwarding: IPv4 forwarding is off while this host announces 10.71.0.0/24 of dmz by BGP",
		"2 BGP peer(s), 0 established",
		"sysctl -w net.ipv4.ip_forward=1", "announce: false on network dmz",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("findings lack %q:\n%s", want, text)
		}
	}
	if strings.ContainsAny(text, "\x1b") {
		t.Errorf("a peer's escape sequence reached the findings:\n%q", text)
	}
}

// IPv6 prefixes are checked like IPv4 ones: an announced IPv6 prefix
// while IPv6 forwarding is off is an error naming the IPv6 sysctl (and
// IPv4 forwarding on does not hide it); a learned IPv6 route not
// installed names ip -6; a refused ::/0 says to list ::/0.
func TestBGPChecks6(t *testing.T) {
	a := netip.MustParseAddr
	in := withBGP()
	in.Networks = append(in.Networks, model.Network{Name: "v6", Mode: model.Routed, Bridge: "gv60", IPv6: pfx("2001:db8:71::1/64")})
	in.BGP.Announced = append(in.BGP.Announced, pfx("2001:db8:71::/64"))
	in.Host.IP6Forward = false
	got := checkBGPForwarding(in)
	if len(got) != 1 || got[0].Network != "v6" || !strings.Contains(got[0].What, "IPv6 forwarding is off while this host announces 2001:db8:71::/64 of v6") ||
		!strings.Contains(got[0].Fix, "sysctl -w net.ipv6.conf.all.forwarding=1") {
		t.Errorf("IPv6 forwarding off: %+v", got)
	}
	in.Host.IP6Forward = true
	if got := checkBGPForwarding(in); len(got) != 0 {
		t.Errorf("both forwardings on: %+v", got)
	}
	in.Host.IPForward = false // IPv4 off: dmz only, not v6
	if got := checkBGPForwarding(in); len(got) != 1 || got[0].Network != "dmz" {
		t.Errorf("IPv4 forwarding off: %+v", got)
	}
	in.Host.IPForward = true
	in.BGP.Learned = append(in.BGP.Learned,
		bgp.Learned{Prefix: pfx("::/0"), NextHop: a("fd00:10::2"), Peer: a("fd00:10::2"), Refused: true, Why: "a default route: installed only when import lists ::/0"},
		bgp.Learned{Prefix: pfx("fd00:90::/64"), NextHop: a("fd00:99::2"), Peer: a("fd00:10::2"), Why: "next hop fd00:99::2 is not directly reachable"})
	fs := checkBGPLearned(in)
	if len(fs) != 2 || fs[0].Severity != Info || !strings.Contains(fs[0].Fix, "list ::/0 under bgp: import:") ||
		fs[1].Severity != Warning || !strings.Contains(fs[1].Fix, "ip -6 route show fd00:90::/64") {
		t.Errorf("learned IPv6 findings: %+v", fs)
	}
}
