package bgp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestImportableNextHopHostile: a peer names a next hop that is no
// router of the LAN. A guest's address inside one of this host's networks
// (its bridge is a connected subnet, so the next hop looks directly
// reachable) would steer the prefix's traffic, from the uplink and from
// the other guests, into that tenant's VM; the network or broadcast
// address of a connected subnet is no host at all. None is installed.
func TestImportableNextHopHostile(t *testing.T) {
	pol := Policy{
		Import:  model.DefaultImport,
		Protect: []netip.Prefix{pfx("10.71.0.0/24"), pfx("10.72.0.0/24")},
	}
	tests := []struct {
		name, nh, whyHas string
	}{
		{"a guest of a network that is up (its bridge is connected)", "10.71.0.5", "inside this host's network 10.71.0.0/24"},
		{"a guest of a network whose bridge is down", "10.72.0.5", "inside this host's network 10.72.0.0/24"},
		{"the network address of the LAN", "10.10.0.0", "network address"},
		{"the broadcast address of the LAN", "10.10.0.255", "broadcast address"},
		{"the broadcast address of the longer LAN subnet", "10.10.0.15", "broadcast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, why, _ := Importable(pfx("10.90.0.0/24"), addr(tt.nh), pol, hostRoutes())
			if dev != "" || !strings.Contains(why, tt.whyHas) {
				t.Errorf("Importable(10.90.0.0/24 via %s) = dev %q, why %q; want it refused, saying %q", tt.nh, dev, why, tt.whyHas)
			}
		})
	}
}

// floodTable is a host on 10.10.0.0/24 that learned n /32s from a peer
// (10.10.0.2) and has them all installed already: the steady state of
// every install pass after a flood (each GoBGP event and the 10 s timer
// make one).
func floodTable(n int) ([][]candidate, []model.Route) {
	routes := []model.Route{
		{Dst: pfx("10.10.0.0/24"), Dev: "lan0", Src: addr("10.10.0.1"), Proto: model.ProtoKernel, Scope: 253},
		{Dst: pfx("10.71.0.0/24"), Dev: "grt0", Src: addr("10.71.0.1"), Proto: model.ProtoKernel, Scope: 253},
	}
	var dests [][]candidate
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		dests = append(dests, []candidate{{Prefix: p, NextHop: addr("10.10.0.2"), Peer: addr("10.10.0.2")}})
		routes = append(routes, model.Route{Dst: p, Gw: addr("10.10.0.2"), Dev: "lan0", Proto: model.ProtoBGP, Metric: model.BGPMetric})
	}
	return dests, routes
}

// BenchmarkPassFlood: what one install pass costs (decide + reconcile,
// no kernel write since all is installed) once a peer announced 1k, 10k,
// 100k prefixes. Linear work would grow by 10 at each step.
func BenchmarkPassFlood(b *testing.B) {
	pol := Policy{Import: model.DefaultImport, Protect: []netip.Prefix{pfx("10.71.0.0/24")}}
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dests, routes := floodTable(n)
			for b.Loop() {
				_, want := decide(dests, pol, routes, nil)
				if acts := reconcile(want, routes, func(model.Route) bool { return false }); len(acts) != 0 {
					b.Fatalf("%d writes in the steady state, want none: %v", len(acts), acts[0])
				}
			}
		})
	}
}

// TestImportableMartians: with import: [0.0.0.0/0] (everything) a peer
// still may not route what is no unicast destination on a LAN: loopback,
// link-local (169.254.169.254 is a cloud's metadata address), multicast
// (a unicast route there takes the host's own multicast sends, VRRP and
// mDNS, to the peer), "this network" and the reserved 240.0.0.0/4
// (limited broadcast included).
func TestImportableMartians(t *testing.T) {
	pol := Policy{Import: []netip.Prefix{pfx("0.0.0.0/0")}}
	for _, dst := range []string{"127.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16", "169.254.169.254/32", "224.0.0.0/4", "224.0.0.18/32",
		"239.0.0.0/8", "0.0.0.0/8", "240.0.0.0/4", "255.255.255.255/32"} {
		dev, why, refused := Importable(pfx(dst), addr("10.10.0.20"), pol, hostRoutes())
		if dev != "" || !refused || !strings.Contains(why, "never routed") {
			t.Errorf("Importable(%s) = dev %q, why %q, refused %v; want refused as a special-purpose range", dst, dev, why, refused)
		}
	}
	for _, dst := range []string{"0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "198.51.100.0/24", "10.90.0.0/24"} {
		if dev, why, _ := Importable(pfx(dst), addr("10.10.0.20"), pol, hostRoutes()); dev != "lan0" {
			t.Errorf("Importable(%s) with import 0.0.0.0/0 = dev %q, why %q; want lan0", dst, dev, why)
		}
	}
}
