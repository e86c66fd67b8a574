package bgp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// hostRoutes6 is a host on an IPv6 LAN (fd00:10::/64 on lan0, the
// kernel's route without a source address, as IPv6 gives it, and a second
// LAN fd00:20::/64 on lan1 with one), one routed IPv6 network up
// (fd42:71::/64 on grt0), the link-local routes every interface has, a
// foreign route in the way and one of the speaker's own.
func hostRoutes6() []model.Route {
	return []model.Route{
		{Dst: pfx("fd00:10::/64"), Dev: "lan0", Proto: model.ProtoKernel, Metric: 256},
		{Dst: pfx("fd00:20::/64"), Dev: "lan1", Src: addr("fd00:20::1"), Proto: model.ProtoKernel, Metric: 256},
		{Dst: pfx("fd42:71::/64"), Dev: "grt0", Proto: model.ProtoKernel, Metric: 256},
		{Dst: pfx("fe80::/64"), Dev: "lan0", Proto: model.ProtoKernel, Metric: 256},
		{Dst: pfx("fe80::/64"), Dev: "grt0", Proto: model.ProtoKernel, Metric: 256},
		{Dst: pfx("fd00:80::/64"), Gw: addr("fd00:10::9"), Dev: "lan0", Proto: 4, Metric: model.BGPMetric},
		{Dst: pfx("fd00:82::/64"), Gw: addr("fd00:10::7"), Dev: "lan0", Proto: model.ProtoBGP, Metric: model.BGPMetric},
		{Dst: pfx("10.10.0.0/24"), Dev: "lan0", Src: addr("10.10.0.1"), Proto: model.ProtoKernel, Scope: 253},
	}
}

// TestImportable6 is the IPv6 import policy: what is installed, through
// which next hop and interface, and what is refused and why, including
// the hostile forms (a learned ::/0, a guest's address as next hop).
func TestImportable6(t *testing.T) {
	pol := Policy{
		Import:  model.DefaultImport,
		Protect: []netip.Prefix{pfx("10.71.0.0/24"), pfx("fd42:71::/64"), pfx("fd42:72::/64")}, // fd42:72: a network whose bridge is down
		Own:     []netip.Addr{addr("fd00:10::1"), addr("fe80::1")},                             // the session's local end, a listen address
	}
	everything := pol
	everything.Import = []netip.Prefix{pfx("::/0"), pfx("0.0.0.0/0")}
	peer := "fd00:10::2"
	tests := []struct {
		name        string
		dst, nh, ll string
		peer        string
		pol         *Policy
		gw, dev     string
		whyHas      string
		refused     bool
	}{
		{name: "a ULA prefix via a neighbour", dst: "fd00:90::/64", nh: "fd00:10::2", gw: "fd00:10::2", dev: "lan0"},
		{name: "global and link-local: the global one", dst: "fd00:90::/64", nh: "fd00:10::2", ll: "fe80::2", gw: "fd00:10::2", dev: "lan0"},
		{name: "next hop on the LAN with a source", dst: "fd00:90::/48", nh: "fd00:20::5", gw: "fd00:20::5", dev: "lan1"},
		{name: "a /128", dst: "fd00:90::1/128", nh: "fd00:10::2", gw: "fd00:10::2", dev: "lan0"},
		{name: "fc00::/7 itself", dst: "fc00::/7", nh: "fd00:10::2", gw: "fd00:10::2", dev: "lan0"},
		{name: "a route of ours already there", dst: "fd00:82::/64", nh: "fd00:10::2", gw: "fd00:10::2", dev: "lan0"},
		{name: "global next hop off-link, link-local given: through the session's interface", dst: "fd00:90::/64", nh: "fd00:99::2", ll: "fe80::2", gw: "fe80::2", dev: "lan0"},
		{name: "unspecified global next hop, link-local given", dst: "fd00:90::/64", nh: "::", ll: "fe80::2", gw: "fe80::2", dev: "lan0"},
		{name: "a link-local address alone", dst: "fd00:90::/64", nh: "fe80::2", gw: "fe80::2", dev: "lan0"},
		{name: "link-local, the peer on the second LAN", dst: "fd00:90::/64", nh: "fe80::2", peer: "fd00:20::2", gw: "fe80::2", dev: "lan1"},
		{name: "default route listed", dst: "::/0", nh: "fd00:10::2", pol: &everything, gw: "fd00:10::2", dev: "lan0"},
		{name: "global prefix with import ::/0", dst: "2001:db8:ff::/64", nh: "fd00:10::2", pol: &everything, gw: "fd00:10::2", dev: "lan0"},

		{name: "a learned default route, not listed", dst: "::/0", nh: "fd00:10::2", whyHas: "installed only when import lists ::/0", refused: true},
		{name: "a global prefix outside the default import", dst: "2001:db8:ff::/64", nh: "fd00:10::2", whyHas: "outside import", refused: true},
		{name: "link-local prefix", dst: "fe80::/64", nh: "fd00:10::2", pol: &everything, whyHas: "link-local", refused: true},
		{name: "inside link-local", dst: "fe80:1::/32", nh: "fd00:10::2", pol: &everything, whyHas: "fe80::/10 (link-local)", refused: true},
		{name: "multicast", dst: "ff02::/16", nh: "fd00:10::2", pol: &everything, whyHas: "ff00::/8 (multicast)", refused: true},
		{name: "the unspecified address", dst: "::/128", nh: "fd00:10::2", pol: &everything, whyHas: "unspecified", refused: true},
		{name: "loopback", dst: "::1/128", nh: "fd00:10::2", pol: &everything, whyHas: "loopback", refused: true},
		{name: "v4-mapped", dst: "::ffff:10.0.0.0/104", nh: "fd00:10::2", pol: &everything, whyHas: "IPv4-mapped", refused: true},
		{name: "equal to this host's network", dst: "fd42:72::/64", nh: "fd00:10::2", whyHas: "this host's network fd42:72::/64", refused: true},
		{name: "inside this host's network", dst: "fd42:71::/80", nh: "fd00:10::2", whyHas: "this host's network fd42:71::/64", refused: true},
		{name: "equal to a connected subnet", dst: "fd00:10::/64", nh: "fd00:10::2", whyHas: "connected subnet fd00:10::/64 (dev lan0)", refused: true},
		{name: "inside a connected subnet", dst: "fd00:20::/96", nh: "fd00:10::2", whyHas: "connected subnet fd00:20::/64 (dev lan1)", refused: true},

		{name: "a guest's address as next hop", dst: "fd00:90::/64", nh: "fd42:71::5", whyHas: "a guest, not a router"},
		{name: "a guest's address as next hop, link-local beside", dst: "fd00:90::/64", nh: "fd42:71::5", ll: "fe80::2", whyHas: "a guest, not a router"},
		{name: "next hop this host (connected source)", dst: "fd00:90::/64", nh: "fd00:20::1", whyHas: "this host's own address"},
		{name: "next hop this host (session's local end)", dst: "fd00:90::/64", nh: "fd00:10::1", whyHas: "this host's own address"},
		{name: "link-local next hop this host's", dst: "fd00:90::/64", nh: "::", ll: "fe80::1", whyHas: "this host's own address"},
		{name: "not directly reachable, no link-local", dst: "fd00:90::/64", nh: "fd00:99::2", whyHas: "not directly reachable"},
		{name: "link-local, peer on no connected subnet", dst: "fd00:90::/64", nh: "fe80::2", peer: "fd00:99::2", whyHas: "no connected subnet holds the peer"},
		{name: "no next hop at all", dst: "fd00:90::/64", nh: "::", whyHas: "no IPv6 address to route through"},
		{name: "a second next hop that is not link-local", dst: "fd00:90::/64", nh: "fd00:10::2", ll: "fd00:10::3", whyHas: "not a link-local address"},
		{name: "Subnet-Router anycast", dst: "fd00:90::/64", nh: "fd00:10::", whyHas: "Subnet-Router anycast"},
		{name: "IPv4 next hop", dst: "fd00:90::/64", nh: "10.10.0.2", whyHas: "not an IPv6 address"},
		{name: "v4-mapped next hop", dst: "fd00:90::/64", nh: "::ffff:10.10.0.2", whyHas: "not an IPv6 address"},
		{name: "someone else's route in the way", dst: "fd00:80::/64", nh: "fd00:10::2", whyHas: "in the way (ip route replace would take it): fd00:80::/64 via fd00:10::9 dev lan0 proto 4 metric 186"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pol
			if tt.pol != nil {
				p = *tt.pol
			}
			c := candidate{Prefix: pfx(tt.dst), NextHop: addr(tt.nh), Peer: addr(peer)}
			if tt.ll != "" {
				c.LinkLocal = addr(tt.ll)
			}
			if tt.peer != "" {
				c.Peer = addr(tt.peer)
			}
			gw, dev, why, refused := importable(c, p, indexRoutes(hostRoutes6()))
			if refused != tt.refused {
				t.Errorf("refused = %v, want %v (why %q)", refused, tt.refused, why)
			}
			if dev != tt.dev {
				t.Errorf("dev = %q, want %q (why %q)", dev, tt.dev, why)
			}
			if tt.gw != "" && gw != addr(tt.gw) || tt.gw == "" && gw.IsValid() {
				t.Errorf("gw = %v, want %q", gw, tt.gw)
			}
			if tt.whyHas == "" && why != "" || !strings.Contains(why, tt.whyHas) {
				t.Errorf("why = %q, want it to say %q", why, tt.whyHas)
			}
			if (dev == "") == (why == "") {
				t.Errorf("dev %q and why %q: exactly one must be set", dev, why)
			}
		})
	}
}

// TestDecide6: an IPv6 path installed through its link-local next hop
// carries the interface in the status (fe80::2%lan0) and in the route,
// and none in the route's gateway; a refused ::/0 stays out.
func TestDecide6(t *testing.T) {
	pol := Policy{Import: model.DefaultImport, Protect: []netip.Prefix{pfx("fd42:71::/64")}}
	p := addr("fd00:10::2")
	dests := [][]candidate{
		{{Prefix: pfx("::/0"), NextHop: p, Peer: p}},
		{{Prefix: pfx("fd00:90::/64"), NextHop: addr("::"), LinkLocal: addr("fe80::2"), Peer: p}},
		{{Prefix: pfx("fd00:91::/64"), NextHop: p, LinkLocal: addr("fe80::2"), Peer: p}},
		{{Prefix: pfx("fd00:92::/64"), NextHop: addr("fd42:71::9"), Peer: p}},
	}
	learned, want := decide(dests, pol, hostRoutes6(), nil)
	if len(learned) != 4 {
		t.Fatalf("learned = %+v", learned)
	}
	if l := learned[0]; l.Prefix.Bits() != 0 || !l.Refused || l.Installed {
		t.Errorf("::/0: %+v, want refused", l)
	}
	if l := learned[1]; l.NextHop.String() != "fe80::2%lan0" || l.Why != "" {
		t.Errorf("fd00:90::/64: %+v, want next hop fe80::2%%lan0", l)
	}
	if r := want[pfx("fd00:90::/64")]; r.Gw != addr("fe80::2") || r.Dev != "lan0" || r.Proto != model.ProtoBGP || r.Metric != model.BGPMetric {
		t.Errorf("route for fd00:90::/64 = %+v, want via fe80::2 dev lan0 proto 186 metric 186", r)
	}
	if r := want[pfx("fd00:91::/64")]; r.Gw != p || r.Dev != "lan0" {
		t.Errorf("route for fd00:91::/64 = %+v, want via %s dev lan0", r, p)
	}
	if l := learned[3]; l.Refused || l.Installed || !strings.Contains(l.Why, "a guest") {
		t.Errorf("fd00:92::/64 via a guest: %+v, want not installed (a warning, not a refusal)", l)
	}
	if len(want) != 2 {
		t.Errorf("want = %v, want the two routes", want)
	}
}

// TestRouterID6: the identifier comes from the first IPv4 peer, past
// IPv6 ones; with IPv6 peers only it must be configured.
func TestRouterID6(t *testing.T) {
	c := model.BGP{Peers: []model.BGPPeer{{Address: addr("fd00:10::2"), ASN: 65002}, {Address: addr("10.10.0.2"), ASN: 65003}}}
	if id, err := RouterID(c, hostRoutes6()); err != nil || id != addr("10.10.0.1") {
		t.Errorf("RouterID = %v, %v; want 10.10.0.1 (the first IPv4 peer's subnet)", id, err)
	}
	c.Peers = c.Peers[:1]
	if id, err := RouterID(c, hostRoutes6()); err == nil || !strings.Contains(err.Error(), "set bgp.router_id") {
		t.Errorf("RouterID with IPv6 peers only = %v, %v; want an error naming bgp.router_id", id, err)
	}
}
