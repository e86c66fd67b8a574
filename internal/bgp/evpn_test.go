package bgp

import (
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/guestnet/guestnet/internal/model"
)

// sampleEVPN is one host's set: two stretched networks (one VNI above
// 65535), guests with and without IP, with and without mobility Seq.
func sampleEVPN() model.EVPN {
	a := netip.MustParseAddr
	return model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 6000, VTEP: a("10.10.0.1")}, {VNI: 70000, VTEP: a("10.10.0.1")}},
		MACs: []model.EVPNMAC{
			{VNI: 6000, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:01", IP: a("10.60.0.101")},
			{VNI: 6000, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:02", Seq: 3},
			{VNI: 70000, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:03", IP: a("10.61.0.9"), Seq: 1},
		},
	}
}

// onTheWire serializes p into a BGP UPDATE as a peer receives it and
// parses it back: the NLRI and attributes the receiving speaker sees.
func onTheWire(t *testing.T, p []gobgp.PathAttributeInterface) (gobgp.NLRI, []gobgp.PathAttributeInterface) {
	t.Helper()
	b, err := gobgp.NewBGPUpdateMessage(nil, p, nil).Serialize()
	if err != nil {
		t.Fatalf("serialize: %v", err)
	}
	m, err := gobgp.ParseBGPMessage(b)
	if err != nil {
		t.Fatalf("parse %s: %v", hex.EncodeToString(b), err)
	}
	u := m.Body.(*gobgp.BGPUpdate)
	for _, a := range u.PathAttributes {
		if mp, ok := a.(*gobgp.PathAttributeMpReachNLRI); ok && len(mp.Value) == 1 {
			return mp.Value[0].NLRI, u.PathAttributes
		}
	}
	t.Fatalf("no MP_REACH_NLRI with one NLRI in %v", u.PathAttributes)
	return nil, nil
}

// model.EVPN → the paths AnnounceEVPN gives GoBGP → a BGP UPDATE on the
// wire → what RemoteEVPN reads of it: the same set, for a 2-byte and a
// 4-byte AS.
func TestEVPNRoundTrip(t *testing.T) {
	for _, asn := range []uint32{65000, 4200000001} {
		want := sampleEVPN()
		routes, err := evpnWant(want)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 5 {
			t.Fatalf("AS %d: %d routes, want 5: %v", asn, len(routes), routes)
		}
		var seen []evpnSeen
		for k, r := range routes {
			p, err := evpnPath(r, asn)
			if err != nil {
				t.Fatalf("AS %d: %s: %v", asn, describe(r), err)
			}
			if p.Nlri.String() != k {
				t.Errorf("key %q, path NLRI %q", k, p.Nlri)
			}
			nlri, attrs := onTheWire(t, p.Attrs)
			got, ok := evpnOf(nlri, attrs)
			if !ok {
				t.Fatalf("AS %d: %s: not read back from %v", asn, describe(r), attrs)
			}
			seen = append(seen, evpnSeen{evpnRoute: got})
		}
		if got := evpnSet(seen, nil); !reflect.DeepEqual(got, canonical(want)) {
			t.Errorf("AS %d: round trip gave\n%+v\nwant\n%+v", asn, got, canonical(want))
		}
	}
}

// What a peer sees of each route: RD VTEP:VNI, RT ASN:VNI in the form the
// AS allows, encapsulation VXLAN, next hop the VTEP, the PMSI tunnel of a
// type 3 (ingress replication, label VNI, tunnel id VTEP), label VNI and
// MAC mobility of a type 2.
func TestEVPNPathAttributes(t *testing.T) {
	a := netip.MustParseAddr
	flood := evpnRoute{Type: gobgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG, EVPNMAC: model.EVPNMAC{VNI: 6000, VTEP: a("10.10.0.1")}}
	mac := evpnRoute{Type: gobgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT, EVPNMAC: model.EVPNMAC{VNI: 6000, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:01", IP: a("10.60.0.101"), Seq: 7}}
	for _, c := range []struct {
		r    evpnRoute
		asn  uint32
		want []string // in the path's String()
	}{
		{flood, 65000, []string{"[rd:10.10.0.1:6000]", "[etag:0]", "[ip:10.10.0.1]", "65000:6000", "VXLAN", "type: ingress-repl", "label: 6000", "tunnel-id: 10.10.0.1", "Nexthop: 10.10.0.1"}},
		{mac, 65000, []string{"[rd:10.10.0.1:6000]", "[mac:52:54:00:aa:00:01]", "[ip:10.60.0.101]", "65000:6000", "VXLAN", "mac-mobility: 7", "Nexthop: 10.10.0.1"}},
		{mac, 4200000001, []string{"64086.59905:6000"}}, // asdot: 4200000001,
		// A 4-byte AS with a VNI above 16 bits: the AS's low 16 bits.
		{evpnRoute{Type: flood.Type, EVPNMAC: model.EVPNMAC{VNI: 70000, VTEP: a("10.10.0.1")}}, 4200000001, []string{"[rd:10.10.0.1:4464]", "59905:70000"}},
	} {
		p, err := evpnPath(c.r, c.asn)
		if err != nil {
			t.Fatal(err)
		}
		s := p.Nlri.String()
		for _, at := range p.Attrs {
			s += " " + at.String()
		}
		for _, w := range c.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s (AS %d): %q lacks %q", describe(c.r), c.asn, s, w)
			}
		}
	}
}

// A route named wrongly is refused with what is wrong; the rest stays.
func TestEVPNWantErrors(t *testing.T) {
	a := netip.MustParseAddr
	e := model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 0, VTEP: a("10.10.0.1")}, {VNI: 5, VTEP: a("10.10.0.1")}, {VNI: 6}},
		MACs: []model.EVPNMAC{
			{VNI: 5, VTEP: a("10.10.0.1"), MAC: "nonsense"},
			{VNI: 5, VTEP: a("10.10.0.1"), MAC: "52:54:00:AA:00:01", Seq: 1},
			{VNI: 5, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:01", Seq: 4}, // the same route: the higher Seq
		},
	}
	got, err := evpnWant(e)
	for _, w := range []string{"VNI 0: a VNI is 1 to 16777215", "VNI 6: no VTEP address", `"nonsense" (VNI 5): not an Ethernet MAC`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
	var set model.EVPN
	for _, r := range got {
		set = addRoute(set, r)
	}
	want := model.EVPN{Flood: []model.EVPNFlood{{VNI: 5, VTEP: a("10.10.0.1")}},
		MACs: []model.EVPNMAC{{VNI: 5, VTEP: a("10.10.0.1"), MAC: "52:54:00:aa:00:01", Seq: 4}}}
	if set = canonical(set); !reflect.DeepEqual(set, want) {
		t.Errorf("kept %+v, want %+v", set, want)
	}
}

// Routes received twice (two peers) count once; a stale route of a peer
// gone silent is left out, one of a peer restarting is kept.
func TestEVPNSet(t *testing.T) {
	a := netip.MustParseAddr
	r := func(vtep string, mac string) evpnRoute {
		return evpnRoute{Type: gobgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT, EVPNMAC: model.EVPNMAC{VNI: 9, VTEP: a(vtep), MAC: mac}}
	}
	seen := []evpnSeen{
		{evpnRoute: r("10.10.0.3", "52:54:00:00:00:03"), peer: a("10.10.0.3")},
		{evpnRoute: r("10.10.0.2", "52:54:00:00:00:02"), peer: a("10.10.0.2")},
		{evpnRoute: r("10.10.0.2", "52:54:00:00:00:02"), peer: a("10.10.0.3")},
		{evpnRoute: r("10.10.0.4", "52:54:00:00:00:04"), peer: a("10.10.0.4"), stale: true},
		{evpnRoute: r("10.10.0.5", "52:54:00:00:00:05"), peer: a("10.10.0.5"), stale: true},
	}
	got := evpnSet(seen, map[netip.Addr]string{a("10.10.0.4"): "hold timer"})
	want := []model.EVPNMAC{r("10.10.0.2", "52:54:00:00:00:02").EVPNMAC, r("10.10.0.3", "52:54:00:00:00:03").EVPNMAC, r("10.10.0.5", "52:54:00:00:00:05").EVPNMAC}
	if !reflect.DeepEqual(got.MACs, want) || got.Flood != nil {
		t.Errorf("got %+v, want MACs %+v", got, want)
	}
	st := evpnStatus(model.EVPN{Flood: []model.EVPNFlood{{VNI: 9, VTEP: a("10.10.0.1")}}}, got)
	if len(st.VNIs) != 1 || st.VNIs[0].RemoteMACs != 3 || st.VNIs[0].LocalVTEP != a("10.10.0.1") || len(st.VNIs[0].RemoteVTEPs) != 0 {
		t.Errorf("status %+v", st.VNIs)
	}
}

// With EVPN every session negotiates L2VPN EVPN beside its unicast
// family, with a prefix limit of its own (max_prefixes per family);
// without, only the unicast one.
func TestEVPNFamilyNegotiated(t *testing.T) {
	p := model.BGPPeer{Address: netip.MustParseAddr("10.10.0.2"), ASN: 65000, MaxPrefixes: 500}
	c := model.BGP{ASN: 65000, Peers: []model.BGPPeer{p}}
	if got := apiPeer(c, p, false).AfiSafis; len(got) != 1 || got[0].Config.Family.Afi != ipv4.Afi {
		t.Errorf("without EVPN: %v", got)
	}
	c.EVPN = true
	got := apiPeer(c, p, false).AfiSafis
	if len(got) != 2 {
		t.Fatalf("with EVPN: %d families, want 2: %v", len(got), got)
	}
	e := got[1]
	if e.Config.Family.Afi != l2vpnEVPN.Afi || e.Config.Family.Safi != l2vpnEVPN.Safi || !e.Config.Enabled ||
		e.PrefixLimits.MaxPrefixes != 500 || e.PrefixLimits.Family.Safi != l2vpnEVPN.Safi || !e.MpGracefulRestart.Config.Enabled {
		t.Errorf("the EVPN family: %v", e)
	}
	if sameGlobal(model.BGP{ASN: 1}, model.BGP{ASN: 1, EVPN: true}) {
		t.Error("EVPN turned on does not restart the server (every session's families change)")
	}
}
