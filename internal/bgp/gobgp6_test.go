package bgp

import (
	"net/netip"

	"testing"

	api "github.com/osrg/gobgp/v4/api"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/guestnet/guestnet/internal/model"
)

// A session carries its peer's family only, its prefix limit counts that
// family, and it leaves from the listen address of that family.
func TestAPIPeerFamily(t *testing.T) {
	c := model.BGP{ASN: 65001, Listen: []netip.Addr{addr("10.10.0.1"), addr("fd00:10::1")}}
	for _, tt := range []struct {
		peer, local string
		afi         api.Family_Afi
	}{
		{"10.10.0.2", "10.10.0.1", api.Family_AFI_IP},
		{"fd00:10::2", "fd00:10::1", api.Family_AFI_IP6},
	} {
		p := apiPeer(c, model.BGPPeer{Address: addr(tt.peer), ASN: 65002}, false)
		if len(p.AfiSafis) != 1 {
			t.Fatalf("%s: %d families, want 1", tt.peer, len(p.AfiSafis))
		}
		af := p.AfiSafis[0]
		if af.Config.Family.Afi != tt.afi || af.Config.Family.Safi != api.Family_SAFI_UNICAST || af.PrefixLimits.Family.Afi != tt.afi {
			t.Errorf("%s: family %v, prefix limit %v; want AFI %v unicast", tt.peer, af.Config.Family, af.PrefixLimits.Family, tt.afi)
		}
		if p.Transport.LocalAddress != tt.local {
			t.Errorf("%s: local address %q, want %s", tt.peer, p.Transport.LocalAddress, tt.local)
		}
	}
}

// An IPv6 prefix is originated in MP_REACH_NLRI with next hop :: (GoBGP
// puts this host's session address there: next-hop-self); an IPv4 one
// with NEXT_HOP 0.0.0.0.
func TestOwnPath6(t *testing.T) {
	p, err := ownPath(pfx("2001:db8:71::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Family != gobgp.RF_IPv6_UC {
		t.Errorf("family %v, want IPv6 unicast", p.Family)
	}
	nh, ll := nextHops(p)
	if nh != addr("::") || ll.IsValid() {
		t.Errorf("next hops %v %v, want :: alone", nh, ll)
	}
	p, err = ownPath(pfx("10.71.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if nh, _ := nextHops(p); p.Family != gobgp.RF_IPv4_UC || nh != addr("0.0.0.0") {
		t.Errorf("IPv4 path: family %v next hop %v", p.Family, nh)
	}
}
