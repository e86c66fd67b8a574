package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/guestnet/guestnet/internal/model"
)

// EVPN (RFC 7432, over VXLAN as RFC 8365 says) rides on every session
// when model.BGP.EVPN is set: the L2VPN EVPN family (AFI 25, SAFI 70)
// beside the session's unicast one. This host announces one type-3 route
// per stretched network (its VTEP wants that VNI's flood traffic) and one
// type-2 route per local guest MAC; it reads every EVPN route its peers
// send (RemoteEVPN), not only GoBGP's best ones: the caller picks between
// two hosts naming one MAC by their mobility sequence (model.EVPNMAC.Better).
// EVPN routes are never installed as IP routes: the install pass reads
// the unicast families only.

var l2vpnEVPN = &api.Family{Afi: api.Family_AFI_L2VPN, Safi: api.Family_SAFI_EVPN}

// evpnRoute is one EVPN route this host announces: type 3 (MAC empty) or
// type 2. Comparable: a changed Seq or IP is a different value.
type evpnRoute struct {
	Type uint8
	model.EVPNMAC
}

// evpnWant is what AnnounceEVPN was given, by the key of its NLRI (what
// identifies a route in BGP: RD, MAC, IP; the Seq is an attribute).
func evpnWant(e model.EVPN) (map[string]evpnRoute, error) {
	out := map[string]evpnRoute{}
	var errs []error
	add := func(r evpnRoute) {
		p, err := evpnPath(r, 0) // the key does not depend on the ASN
		if err != nil {
			errs = append(errs, err)
			return
		}
		k := p.Nlri.String()
		if o, ok := out[k]; ok && o.Seq > r.Seq { // the same route twice: the higher Seq
			return
		}
		out[k] = r
	}
	for _, f := range e.Flood {
		add(evpnRoute{Type: gobgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG, EVPNMAC: model.EVPNMAC{VNI: f.VNI, VTEP: f.VTEP}})
	}
	for _, m := range e.MACs {
		hw, err := net.ParseMAC(m.MAC)
		if err != nil || len(hw) != 6 {
			errs = append(errs, fmt.Errorf("EVPN MAC %q (VNI %d): not an Ethernet MAC address (aa:bb:cc:dd:ee:ff)", m.MAC, m.VNI))
			continue
		}
		m.MAC = hw.String() // canonical: lower case
		if m.IP.IsValid() {
			m.IP = m.IP.Unmap()
		}
		add(evpnRoute{Type: gobgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT, EVPNMAC: m})
	}
	return out, errors.Join(errs...)
}

// evpnRD is the route distinguisher of this host's routes of vni: VTEP:VNI
// (type 1). The assigned number has 16 bits: a VNI above 65535 gives its
// low 16 bits (an RD only has to tell this host's VNIs apart for one MAC;
// RemoteEVPN reads the VNI from the label, never from the RD).
func evpnRD(vtep netip.Addr, vni uint32) (gobgp.RouteDistinguisherInterface, error) {
	rd, err := gobgp.NewRouteDistinguisherIPAddressAS(vtep, uint16(vni))
	if err != nil {
		return nil, fmt.Errorf("route distinguisher %s:%d: %w", vtep, vni, err)
	}
	return rd, nil
}

// evpnRT is the route target ASN:VNI: the two-octet AS form (AS up to
// 65535, VNI in 32 bits); for a four-octet AS, the four-octet form when
// the VNI fits its 16 bits, else the AS's low 16 bits in the two-octet
// form (RFC 8365 §5.1.2.1 derives it so).
func evpnRT(asn, vni uint32) gobgp.ExtendedCommunityInterface {
	if asn > 0xffff && vni <= 0xffff {
		return gobgp.NewFourOctetAsSpecificExtended(gobgp.EC_SUBTYPE_ROUTE_TARGET, asn, uint16(vni), true)
	}
	return gobgp.NewTwoOctetAsSpecificExtended(gobgp.EC_SUBTYPE_ROUTE_TARGET, uint16(asn), vni, true)
}

// evpnPath is the GoBGP path of r, announced by a speaker of AS asn:
// next hop the VTEP, RT ASN:VNI, encapsulation VXLAN; a type 3 carries
// the PMSI tunnel attribute (ingress replication, label VNI, tunnel id
// the VTEP), a type 2 the label VNI and, with a Seq, the MAC mobility
// community.
func evpnPath(r evpnRoute, asn uint32) (*apiutil.Path, error) {
	if r.VNI == 0 || r.VNI > model.MaxVNI {
		return nil, fmt.Errorf("EVPN route of VNI %d: a VNI is 1 to %d", r.VNI, model.MaxVNI)
	}
	if !r.VTEP.IsValid() || r.VTEP.IsUnspecified() {
		return nil, fmt.Errorf("EVPN route of VNI %d: no VTEP address (vxlan.local, or bgp.router_id)", r.VNI)
	}
	vtep := r.VTEP.Unmap()
	rd, err := evpnRD(vtep, r.VNI)
	if err != nil {
		return nil, err
	}
	ecs := []gobgp.ExtendedCommunityInterface{evpnRT(asn, r.VNI), gobgp.NewEncapExtended(gobgp.TUNNEL_TYPE_VXLAN)}
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	var nlri *gobgp.EVPNNLRI
	switch r.Type {
	case gobgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG:
		if nlri, err = gobgp.NewEVPNMulticastEthernetTagRoute(rd, 0, vtep); err != nil {
			return nil, err
		}
		id, err := gobgp.NewIngressReplTunnelID(vtep)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, gobgp.NewPathAttributePmsiTunnel(gobgp.PMSI_TUNNEL_TYPE_INGRESS_REPL, false, r.VNI, id))
	case gobgp.EVPN_ROUTE_TYPE_MAC_IP_ADVERTISEMENT:
		if nlri, err = gobgp.NewEVPNMacIPAdvertisementRoute(rd, gobgp.EthernetSegmentIdentifier{}, 0, r.MAC, r.IP, []uint32{r.VNI}); err != nil {
			return nil, err
		}
		if r.Seq > 0 {
			ecs = append(ecs, gobgp.NewMacMobilityExtended(r.Seq, false))
		}
	default:
		return nil, fmt.Errorf("EVPN route type %d: only types 2 and 3 are announced", r.Type)
	}
	mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_EVPN, []gobgp.PathNLRI{{NLRI: nlri}}, vtep)
	if err != nil {
		return nil, err
	}
	attrs = append(attrs, mp, gobgp.NewPathAttributeExtendedCommunities(ecs))
	return &apiutil.Path{Family: gobgp.RF_EVPN, Nlri: nlri, Attrs: attrs}, nil
}

// evpnOf reads a received EVPN path: a type 2 or 3 route, ok false for
// the other types (and a type 2 or 3 missing what makes it usable). VNI
// from the label (type 2) or the PMSI tunnel's (type 3), else from the
// route target; VTEP from the next hop (type 2) or the PMSI tunnel id,
// else the originating router's address (type 3); Seq from the MAC
// mobility community.
func evpnOf(nlri gobgp.NLRI, attrs []gobgp.PathAttributeInterface) (evpnRoute, bool) {
	n, ok := nlri.(*gobgp.EVPNNLRI)
	if !ok {
		return evpnRoute{}, false
	}
	var nh netip.Addr
	var pmsi *gobgp.PathAttributePmsiTunnel
	var rtVNI, seq uint32
	for _, a := range attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeMpReachNLRI:
			nh = a.Nexthop
		case *gobgp.PathAttributeNextHop:
			nh = a.Value
		case *gobgp.PathAttributePmsiTunnel:
			pmsi = a
		case *gobgp.PathAttributeExtendedCommunities:
			for _, ec := range a.Value {
				switch ec := ec.(type) {
				case *gobgp.MacMobilityExtended:
					seq = ec.Sequence
				case *gobgp.TwoOctetAsSpecificExtended:
					if ec.SubType == gobgp.EC_SUBTYPE_ROUTE_TARGET && rtVNI == 0 {
						rtVNI = ec.LocalAdmin
					}
				case *gobgp.FourOctetAsSpecificExtended:
					if ec.SubType == gobgp.EC_SUBTYPE_ROUTE_TARGET && rtVNI == 0 {
						rtVNI = uint32(ec.LocalAdmin)
					}
				}
			}
		}
	}
	r := evpnRoute{Type: n.RouteType}
	switch d := n.RouteTypeData.(type) {
	case *gobgp.EVPNMacIPAdvertisementRoute:
		if len(d.MacAddress) != 6 {
			return evpnRoute{}, false
		}
		r.MAC, r.VTEP, r.Seq = d.MacAddress.String(), nh, seq
		if d.IPAddressLength > 0 && d.IPAddress.IsValid() {
			r.IP = d.IPAddress.Unmap()
		}
		if len(d.Labels) > 0 {
			r.VNI = d.Labels[0]
		}
	case *gobgp.EVPNMulticastEthernetTagRoute:
		r.VTEP = d.IPAddress
		if pmsi != nil {
			if id, ok := pmsi.TunnelID.(*gobgp.IngressReplTunnelID); ok && id.Value.IsValid() {
				r.VTEP = id.Value
			}
			r.VNI = pmsi.Label
		}
	default:
		return evpnRoute{}, false
	}
	if r.VNI == 0 {
		r.VNI = rtVNI
	}
	r.VTEP = r.VTEP.Unmap()
	if r.VNI == 0 || !r.VTEP.IsValid() || r.VTEP.IsUnspecified() {
		return evpnRoute{}, false
	}
	return r, true
}

// evpnSeen is one EVPN route a peer sent.
type evpnSeen struct {
	evpnRoute
	peer  netip.Addr
	stale bool
}

// receivedEVPN lists every EVPN path in srv's table that a peer sent:
// all of them, best or not; this host's own are left out.
func receivedEVPN(srv *server.BgpServer) ([]evpnSeen, error) {
	var out []evpnSeen
	err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: gobgp.RF_EVPN},
		func(nlri gobgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.PeerASN == 0 || p.Withdrawal { // a local path: ours
					continue
				}
				if r, ok := evpnOf(nlri, p.Attrs); ok {
					out = append(out, evpnSeen{evpnRoute: r, peer: p.PeerAddress, stale: p.Stale})
				}
			}
		})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gobgp.RF_EVPN, err)
	}
	return out, nil
}

// evpnSet is the model.EVPN of routes, sorted, each route once; stale
// routes of a peer in gone (its session died by silence, see pass) are
// left out.
func evpnSet(seen []evpnSeen, gone map[netip.Addr]string) model.EVPN {
	var e model.EVPN
	for _, s := range seen {
		if s.stale && gone[s.peer] != "" {
			continue
		}
		e = addRoute(e, s.evpnRoute)
	}
	return canonical(e)
}

func addRoute(e model.EVPN, r evpnRoute) model.EVPN {
	if r.Type == gobgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG {
		e.Flood = append(e.Flood, model.EVPNFlood{VNI: r.VNI, VTEP: r.VTEP})
	} else {
		e.MACs = append(e.MACs, r.EVPNMAC)
	}
	return e
}

// canonical sorts e and drops repeats (the same route from two peers).
// A MAC route's Seq is not part of Sort's order: two routes differing
// only there are ordered by Seq.
func canonical(e model.EVPN) model.EVPN {
	e.Sort()
	slices.SortStableFunc(e.MACs, func(a, b model.EVPNMAC) int {
		return cmp.Or(cmp.Compare(a.VNI, b.VNI), a.VTEP.Compare(b.VTEP), cmp.Compare(a.MAC, b.MAC), a.IP.Compare(b.IP), cmp.Compare(a.Seq, b.Seq))
	})
	e.Flood = slices.Compact(e.Flood)
	e.MACs = slices.Compact(e.MACs)
	return e
}

func sameEVPN(a, b model.EVPN) bool {
	return slices.Equal(a.Flood, b.Flood) && slices.Equal(a.MACs, b.MACs)
}

// AnnounceEVPN makes e the complete set of EVPN routes this host
// announces: new routes are added, missing ones withdrawn, changed ones
// (a new Seq, a new IP) replaced. It may be called before the sessions
// are up or the speaker started; the set is announced again whenever the
// speaker restarts. A route e names wrongly (VNI 0, no VTEP, a bad MAC)
// is an error and left out; the others are announced.
//
// GoBGP checks MAC mobility as it takes a type-2 route, against the
// routes of the same MAC with the same route target (hosts of one AS):
// announced without Seq while a peer announces the MAC, the route gets
// that peer's Seq + 1; announced with a Seq below a peer's, it is
// refused (an error naming it; the rest of e is announced). The caller
// sets Seq from RemoteEVPN's (model.EVPNMAC.Better), or withdraws the
// route.
func (s *Speaker) AnnounceEVPN(e model.EVPN) error {
	want, err := evpnWant(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evpnWant = want
	if s.srv == nil {
		return err
	}
	return errors.Join(err, s.syncEVPNLocked())
}

// syncEVPNLocked makes srv's EVPN paths the wanted ones: withdrawals
// first (their NLRIs are not wanted ones), then the routes new or
// changed (a changed one replaces its own NLRI: no withdrawal between).
func (s *Speaker) syncEVPNLocked() error {
	if s.evpnHave == nil {
		s.evpnHave = map[string]evpnRoute{}
	}
	var errs []error
	var gone []*apiutil.Path
	var goneK []string
	for k, r := range s.evpnHave {
		if _, ok := s.evpnWant[k]; ok {
			continue
		}
		p, err := evpnPath(r, s.cfg.ASN)
		if err != nil { // it was built once: cannot happen
			errs = append(errs, err)
			continue
		}
		gone, goneK = append(gone, p), append(goneK, k)
	}
	if len(gone) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: gone}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %d EVPN routes: %w", len(gone), err))
		} else {
			for _, k := range goneK {
				delete(s.evpnHave, k)
			}
		}
	}
	var add []*apiutil.Path
	var addK []string
	for _, k := range slices.Sorted(maps.Keys(s.evpnWant)) {
		r := s.evpnWant[k]
		if h, ok := s.evpnHave[k]; ok && h == r {
			continue
		}
		p, err := evpnPath(r, s.cfg.ASN)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add, addK = append(add, p), append(addK, k)
	}
	if len(add) > 0 {
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		if err != nil && len(res) == 0 {
			// GoBGP answers a batch with one path refused by its error
			// alone (the others were taken): each again, alone, says
			// which (a path added twice is the same path).
			res = make([]apiutil.AddPathResponse, len(add))
			for i, p := range add {
				if _, e := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); e != nil {
					res[i].Error = e
				}
			}
		}
		var refused []string
		for i, r := range res {
			if r.Error == nil {
				s.evpnHave[addK[i]] = s.evpnWant[addK[i]]
			} else {
				why := r.Error.Error()
				if strings.Contains(why, "MAC mobility") {
					why += " (a peer announces this MAC with a higher sequence: announce it with a higher Seq, or withdraw it)"
				}
				refused = append(refused, describe(s.evpnWant[addK[i]])+": "+why)
			}
		}
		if len(refused) > 0 {
			errs = append(errs, fmt.Errorf("GoBGP refused EVPN routes: %s", strings.Join(refused, "; ")))
		}
	}
	return errors.Join(errs...)
}

// describe names an EVPN route in an error.
func describe(r evpnRoute) string {
	if r.Type == gobgp.EVPN_INCLUSIVE_MULTICAST_ETHERNET_TAG {
		return fmt.Sprintf("flood VNI %d VTEP %s", r.VNI, r.VTEP)
	}
	s := fmt.Sprintf("MAC %s VNI %d VTEP %s", r.MAC, r.VNI, r.VTEP)
	if r.IP.IsValid() {
		s += " IP " + r.IP.String()
	}
	if r.Seq > 0 {
		s += fmt.Sprintf(" seq %d", r.Seq)
	}
	return s
}

// RemoteEVPN is every EVPN route received from the peers (types 2 and 3,
// all paths rather than GoBGP's best ones), as of the install loop's
// last pass, sorted (model.EVPN.Sort). Routes of a peer whose session
// died by silence are gone from it; those of a peer restarting (graceful
// restart) stay until it is back or its restart time ends.
func (s *Speaker) RemoteEVPN() model.EVPN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remoteEVPNLocked()
}

func (s *Speaker) remoteEVPNLocked() model.EVPN {
	return model.EVPN{Flood: slices.Clone(s.evpnRemote.Flood), MACs: slices.Clone(s.evpnRemote.MACs)}
}

// OnEVPN sets f, called after a pass of the install loop finds the
// remote EVPN set (RemoteEVPN) changed: a route received or withdrawn, a
// peer gone with its routes, the speaker stopped. f runs with no lock
// held and must not block (the daemon sends on a buffered channel).
func (s *Speaker) OnEVPN(f func()) {
	s.mu.Lock()
	s.onEVPN = f
	s.mu.Unlock()
}

// EVPNReady reports whether RemoteEVPN is complete since the speaker
// started: every peer (but this host's own address) sent the End-of-RIB
// of the EVPN family since its session came up, or deferralTime passed
// since the start (a peer down does not hold the others back longer).
// Before, an empty or partial RemoteEVPN says nothing of what the peers
// have: a caller that removes kernel entries for routes missing from it
// (after a restart of the daemon) waits for this, as the install pass
// waits for End-of-RIB before removing inherited routes.
func (s *Speaker) EVPNReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evpnReadyLocked()
}

func (s *Speaker) evpnReadyLocked() bool {
	if s.srv == nil {
		return false
	}
	if time.Since(s.started) > deferralTime*time.Second {
		return true
	}
	for _, p := range s.peers {
		if !p.self && !p.evpnEOR {
			return false
		}
	}
	return true
}

// localEVPN is the set this host announces, as AnnounceEVPN took it.
func (s *Speaker) localEVPNLocked() model.EVPN {
	var e model.EVPN
	for _, r := range s.evpnWant {
		e = addRoute(e, r)
	}
	return canonical(e)
}

// EVPNStatus is the EVPN side of the speaker, as `guestnet bgp` shows it.
type EVPNStatus struct {
	// Local is what this host announces; Remote what its peers announce.
	Local  model.EVPN `json:"local"`
	Remote model.EVPN `json:"remote"`
	// VNIs count both per VNI, sorted by VNI.
	VNIs []VNIStatus `json:"vnis"`
	// Ready: Remote is complete (see Speaker.EVPNReady).
	Ready bool `json:"ready"`
}

// VNIStatus is one VNI: the VTEPs that want its flood traffic (type-3
// routes: this host's own and the remote ones) and the MACs each side
// announces.
type VNIStatus struct {
	VNI         uint32       `json:"vni"`
	LocalVTEP   netip.Addr   `json:"local_vtep,omitzero"`
	RemoteVTEPs []netip.Addr `json:"remote_vteps"`
	LocalMACs   int          `json:"local_macs"`
	RemoteMACs  int          `json:"remote_macs"`
}

// evpnStatus counts local and remote per VNI.
func evpnStatus(local, remote model.EVPN) *EVPNStatus {
	by := map[uint32]*VNIStatus{}
	get := func(vni uint32) *VNIStatus {
		if by[vni] == nil {
			by[vni] = &VNIStatus{VNI: vni, RemoteVTEPs: []netip.Addr{}}
		}
		return by[vni]
	}
	for _, f := range local.Flood {
		get(f.VNI).LocalVTEP = f.VTEP
	}
	for _, f := range remote.Flood {
		v := get(f.VNI)
		if !slices.Contains(v.RemoteVTEPs, f.VTEP) {
			v.RemoteVTEPs = append(v.RemoteVTEPs, f.VTEP)
		}
	}
	for _, m := range local.MACs {
		get(m.VNI).LocalMACs++
	}
	for _, m := range remote.MACs {
		get(m.VNI).RemoteMACs++
	}
	st := &EVPNStatus{Local: local, Remote: remote, VNIs: []VNIStatus{}}
	for _, v := range by {
		slices.SortFunc(v.RemoteVTEPs, netip.Addr.Compare)
		st.VNIs = append(st.VNIs, *v)
	}
	slices.SortFunc(st.VNIs, func(a, b VNIStatus) int { return cmp.Compare(a.VNI, b.VNI) })
	return st
}
