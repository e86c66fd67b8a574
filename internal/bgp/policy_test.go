package bgp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// hostRoutes is a host on a LAN (10.10.0.0/24, lan0) with one routed
// network up (10.71.0.0/24 on grt0), a typed static route and a
// neighbour's BGP route already installed.
func hostRoutes() []model.Route {
	return []model.Route{
		{Dst: pfx("10.10.0.0/24"), Dev: "lan0", Src: addr("10.10.0.1"), Proto: model.ProtoKernel, Scope: 253},
		{Dst: pfx("10.10.0.0/28"), Dev: "lan1", Src: addr("10.10.0.3"), Proto: model.ProtoKernel, Scope: 253},
		{Dst: pfx("10.71.0.0/24"), Dev: "grt0", Src: addr("10.71.0.1"), Proto: model.ProtoKernel, Scope: 253},
		{Dst: pfx("10.80.0.0/24"), Gw: addr("10.10.0.9"), Dev: "lan0", Proto: 4, Metric: model.BGPMetric},
		{Dst: pfx("10.81.0.0/24"), Gw: addr("10.10.0.9"), Dev: "lan0", Proto: 4},
		{Dst: pfx("10.82.0.0/24"), Gw: addr("10.10.0.7"), Dev: "lan0", Proto: model.ProtoBGP, Metric: model.BGPMetric},
	}
}

func TestImportable(t *testing.T) {
	pol := Policy{
		Import:  model.DefaultImport,
		Protect: []netip.Prefix{pfx("10.71.0.0/24"), pfx("10.72.0.0/24")}, // 10.72: a network whose bridge is down
		Own:     []netip.Addr{addr("10.10.0.5")},                          // a listen address
	}
	withDefault := pol
	withDefault.Import = append([]netip.Prefix{pfx("0.0.0.0/0")}, model.DefaultImport...)
	tests := []struct {
		name   string
		dst    string
		nh     string
		pol    Policy
		dev    string
		whyHas string
		// refused: on purpose (doctor: info), not a route that should be
		// there and is not (doctor: warning)
		refused bool
	}{
		{name: "a subnet inside import", dst: "10.90.0.0/24", nh: "10.10.0.20", dev: "lan0"},
		{name: "longer prefix inside another import", dst: "172.16.5.0/24", nh: "10.10.0.20", dev: "lan0"},
		{name: "a /32", dst: "10.99.0.1/32", nh: "10.10.0.20", dev: "lan0"},
		{name: "the import prefix itself", dst: "192.168.0.0/16", nh: "10.10.0.20", dev: "lan0"},
		{name: "next hop in the longer connected subnet", dst: "10.90.0.0/24", nh: "10.10.0.2", dev: "lan1"},
		{name: "a route of ours already there", dst: "10.82.0.0/24", nh: "10.10.0.20", dev: "lan0"},
		{name: "someone's route with another metric", dst: "10.81.0.0/24", nh: "10.10.0.20", dev: "lan0"},
		{name: "default route listed", dst: "0.0.0.0/0", nh: "10.10.0.254", pol: withDefault, dev: "lan0"},
		{name: "default route not listed", dst: "0.0.0.0/0", nh: "10.10.0.254", whyHas: "default route", refused: true},
		{name: "outside import", dst: "198.51.100.0/24", nh: "10.10.0.20", whyHas: "outside import (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)", refused: true},
		{name: "overlapping import but shorter", dst: "10.0.0.0/7", nh: "10.10.0.20", whyHas: "outside import", refused: true},
		{name: "empty import", dst: "10.90.0.0/24", nh: "10.10.0.20", pol: Policy{}, whyHas: "nothing is installed", refused: true},
		{name: "equal to this host's network", dst: "10.72.0.0/24", nh: "10.10.0.20", whyHas: "this host's network 10.72.0.0/24", refused: true},
		{name: "inside this host's network", dst: "10.72.0.128/25", nh: "10.10.0.20", whyHas: "this host's network 10.72.0.0/24", refused: true},
		{name: "a guest's host route inside this host's (stretched) network", dst: "10.72.0.9/32", nh: "10.10.0.20", whyHas: "this host's network 10.72.0.0/24", refused: true},
		{name: "equal to a connected subnet", dst: "10.10.0.0/24", nh: "10.10.0.20", whyHas: "connected subnet 10.10.0.0/24 (dev lan0)", refused: true},
		{name: "inside a connected subnet", dst: "10.10.0.128/25", nh: "10.10.0.20", whyHas: "connected subnet 10.10.0.0/24", refused: true},
		{name: "next hop is this host (connected source)", dst: "10.90.0.0/24", nh: "10.10.0.1", whyHas: "this host's own address"},
		{name: "next hop is this host (listen address)", dst: "10.90.0.0/24", nh: "10.10.0.5", whyHas: "this host's own address"},
		{name: "next hop not directly reachable", dst: "10.90.0.0/24", nh: "10.20.0.1", whyHas: "not directly reachable"},
		{name: "no next hop", dst: "10.90.0.0/24", nh: "", whyHas: "not an IPv4 address"},
		{name: "IPv6 next hop", dst: "10.90.0.0/24", nh: "fd00::1", whyHas: "not an IPv4 address"},
		{name: "IPv6 prefix with an IPv4 next hop", dst: "fd00:1::/64", nh: "10.10.0.20", whyHas: "not an IPv6 address"},
		{name: "someone else's route in the way", dst: "10.80.0.0/24", nh: "10.10.0.20", whyHas: "did not make is in the way (ip route replace would take it): 10.80.0.0/24 via 10.10.0.9 dev lan0 proto 4 metric 186"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pol
			if tt.pol.Import != nil || tt.name == "empty import" {
				p = tt.pol
			}
			var nh netip.Addr
			if tt.nh != "" {
				nh = addr(tt.nh)
			}
			dev, why, refused := Importable(pfx(tt.dst), nh, p, hostRoutes())
			if refused != tt.refused {
				t.Errorf("refused = %v, want %v (why %q)", refused, tt.refused, why)
			}
			if dev != tt.dev {
				t.Errorf("dev = %q, want %q (why %q)", dev, tt.dev, why)
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

func TestRouterID(t *testing.T) {
	peers := []model.BGPPeer{{Address: addr("10.10.0.2"), ASN: 65002}, {Address: addr("10.30.0.2"), ASN: 65003}}
	tests := []struct {
		name   string
		c      model.BGP
		want   string
		errHas string
	}{
		{name: "configured", c: model.BGP{RouterID: addr("10.255.0.1"), Peers: peers}, want: "10.255.0.1"},
		{name: "the source toward the first peer (longest subnet)", c: model.BGP{Peers: peers}, want: "10.10.0.3"},
		{name: "first peer not on a connected subnet", c: model.BGP{Peers: peers[1:]}, errHas: "set bgp.router_id"},
		{name: "no peers", c: model.BGP{}, errHas: "set bgp.router_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := RouterID(tt.c, hostRoutes())
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("RouterID = %v, %v; want an error saying %q", id, err, tt.errHas)
				}
				return
			}
			if err != nil || id != addr(tt.want) {
				t.Fatalf("RouterID = %v, %v; want %s", id, err, tt.want)
			}
		})
	}
}
