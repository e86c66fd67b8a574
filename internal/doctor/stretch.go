package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
)

// The checks of stretched networks (VXLAN + BGP EVPN) read what the
// caller asked the kernel and the daemon on their behalf: Input.Underlay
// (the route to every remote VTEP and BGP peer) and Input.BGP. Without a
// stretched network they find nothing.

// Underlay is where the kernel sends the VXLAN packets (or the BGP
// session) for one remote address: the caller fills Dev or Err with
// engine.Kernel.RouteGet (ip route get ADDR). Targets says which
// addresses to ask about.
type Underlay struct {
	Addr netip.Addr `json:"addr"`
	// VNI is the stretched network the address is a VTEP of (from the
	// EVPN flood list); 0 for a BGP peer, which carries every one.
	VNI uint32 `json:"vni,omitempty"`
	// From says where doctor learned of the address, for the evidence:
	// "EVPN flood list" or "bgp peer".
	From string `json:"from"`
	// Dev is the interface the kernel sends the address's packets out of;
	// empty when it has no route (Err says what it answered).
	Dev string `json:"dev,omitempty"`
	Err string `json:"err,omitempty"`
}

// From* name the sources of Underlay addresses.
const (
	FromFlood = "EVPN flood list"
	FromPeer  = "bgp peer"
)

// Targets lists the addresses a host with stretched networks nets must
// reach over its underlay: every remote VTEP of the EVPN flood list
// (remote, as the daemon reports it) of those networks' VNIs, and every
// BGP peer. Addresses in self (this host's own: its VTEPs, router ID,
// interface addresses) are left out, as a spec shared by every host lists
// them too, and so are IPv6 peers. Nil when no network is stretched.
func Targets(nets []model.Network, peers []netip.Addr, remote model.EVPN, self []netip.Addr) []Underlay {
	vnis := map[uint32]bool{}
	for _, n := range nets {
		if n.Stretched() {
			vnis[n.VXLAN.VNI] = true
		}
	}
	if len(vnis) == 0 {
		return nil
	}
	var out []Underlay
	for _, f := range remote.Flood {
		if vnis[f.VNI] && f.VTEP.IsValid() && !slices.Contains(self, f.VTEP) {
			out = append(out, Underlay{Addr: f.VTEP, VNI: f.VNI, From: FromFlood})
		}
	}
	for _, p := range peers {
		// A VTEP is IPv4 (vxlan.local): an IPv6 session says nothing of
		// the path VXLAN takes (and its own faults are bgp-session's).
		if p.Is4() && !slices.Contains(self, p) {
			out = append(out, Underlay{Addr: p, From: FromPeer})
		}
	}
	slices.SortFunc(out, func(a, b Underlay) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.VNI, b.VNI), strings.Compare(a.From, b.From))
	})
	return slices.CompactFunc(out, func(a, b Underlay) bool { return a.Addr == b.Addr && a.VNI == b.VNI && a.From == b.From })
}

// stretched are the stretched networks among those checked.
func (in Input) stretched() []model.Network {
	var out []model.Network
	for _, n := range in.Networks {
		if n.Stretched() {
			out = append(out, n)
		}
	}
	return out
}

// carries reports whether the underlay address u carries network n's
// VXLAN traffic: a BGP peer carries every stretched network's (it is a
// VTEP too), a flood-list VTEP only its VNI's.
func (u Underlay) carries(n model.Network) bool {
	return u.VNI == 0 || u.VNI == n.VXLAN.VNI
}

// overlayMTU is the largest frame network n's guests send into the VXLAN
// device: the declared MTU (the spec's, model.StretchMTU unless set), or
// the device's own when it is larger (someone raised it) or none is
// declared.
func (in Input) overlayMTU(n model.Network) (mtu int, ev string) {
	mtu, ev = n.MTU, fmt.Sprintf("network %s mtu %d", n.Name, n.MTU)
	if dev, ok := in.Host.Link(model.VXLANName(n.VXLAN.VNI)); ok && dev.MTU > mtu {
		mtu, ev = dev.MTU, fmt.Sprintf("%s mtu %d", dev.Name, dev.MTU)
	}
	if mtu == 0 {
		mtu, ev = model.StretchMTU, fmt.Sprintf("network %s mtu %d (the default of a stretched network)", n.Name, model.StretchMTU)
	}
	return mtu, ev
}

// checkVXLANMTU: a stretched network's frames plus what VXLAN adds
// (model.VXLANOverhead: outer Ethernet, IPv4, UDP, VXLAN) do not fit the
// MTU of the interface the kernel sends them out of toward the other
// VTEPs. The kernel then fragments the outer packets or, with DF set by
// the guest's path MTU discovery, drops them: small packets (ping, ARP,
// DHCP) cross, large ones (TCP transfers, TLS handshakes) hang. With no
// VTEP or peer known the default route's interface stands in.
func checkVXLANMTU(in Input) []Finding {
	var out []Finding
	for _, n := range in.stretched() {
		mtu, mtuEv := in.overlayMTU(n)
		type via struct {
			dev   string
			addrs []string
		}
		var vias []via
		for _, u := range in.Underlay {
			// A route into the overlay is checkVTEPs' finding, not an MTU.
			if u.Dev == "" || u.Dev == "lo" || !u.carries(n) || in.overlay(u.Dev) != "" {
				continue
			}
			i := slices.IndexFunc(vias, func(v via) bool { return v.dev == u.Dev })
			if i < 0 {
				vias = append(vias, via{dev: u.Dev})
				i = len(vias) - 1
			}
			vias[i].addrs = append(vias[i].addrs, u.Addr.String())
		}
		if len(vias) == 0 && !slices.ContainsFunc(in.Underlay, func(u Underlay) bool { return u.carries(n) }) {
			if d := defaultDev(in.Host, model.IPv4); d != "" {
				vias = append(vias, via{dev: d}) // no addrs: the default route's
			}
		}
		for _, v := range vias {
			l, ok := in.Host.Link(v.dev)
			if !ok || l.MTU == 0 || mtu+model.VXLANOverhead <= l.MTU {
				continue
			}
			toward := fmt.Sprintf("%s mtu %d (route to %s)", v.dev, l.MTU, strings.Join(v.addrs, ", "))
			if len(v.addrs) == 0 {
				toward = fmt.Sprintf("%s mtu %d (the default route's interface: no VTEP or peer known)", v.dev, l.MTU)
			}
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What: fmt.Sprintf("the MTU of %s (%d) plus the %d bytes VXLAN adds is %d, more than the MTU of %s (%d), the underlay toward the other VTEPs: "+
					"full-size guest frames are fragmented or dropped (small packets pass, large transfers hang)",
					n.Name, mtu, model.VXLANOverhead, mtu+model.VXLANOverhead, v.dev, l.MTU),
				Evidence: []string{mtuEv, toward},
				Fix: fmt.Sprintf("lower the network's MTU to %d or less (mtu: %d on network %s in the spec, on every host; guestnet apply, and DHCP tells the guests), "+
					"or raise the underlay's MTU to %d or more (ip link set %s mtu %d, and the same on the switches and the other hosts)",
					l.MTU-model.VXLANOverhead, l.MTU-model.VXLANOverhead, n.Name, mtu+model.VXLANOverhead, v.dev, mtu+model.VXLANOverhead)})
		}
	}
	return out
}

// checkVTEPs: a remote VTEP or BGP peer of a stretched network that the
// kernel has no route to, or whose route leaves through a guest bridge or
// a VXLAN device (the overlay would carry its own underlay: the packets
// go to guests, or loop). And, with EVPN on, each BGP session that is not
// established: that peer's EVPN routes are gone, so the guests behind it
// are unknown here (no flood entry, no MAC), and this host's there.
func checkVTEPs(in Input) []Finding {
	nets := in.stretched()
	if len(nets) == 0 {
		return nil
	}
	var out []Finding
	for i := 0; i < len(in.Underlay); {
		j := i + 1
		for j < len(in.Underlay) && in.Underlay[j].Addr == in.Underlay[i].Addr {
			j++
		}
		if f, bad := in.unreachable(in.Underlay[i:j]); bad {
			out = append(out, f)
		}
		i = j
	}
	if in.BGP != nil {
		for _, p := range in.BGP.Peers {
			if p.State == bgp.StateEstablished || p.State == bgp.StateSelf { // self: this host in a shared spec's peers
				continue
			}
			ev := []string{fmt.Sprintf("peer %s AS %d: %s", p.Address, p.ASN, text(p.State))}
			if p.LastError != "" {
				ev = append(ev, "last error: "+text(p.LastError))
			}
			ev = append(ev, "stretched: "+netNames(nets))
			out = append(out, Finding{Severity: Warning,
				What: fmt.Sprintf("the BGP session with %s is %s while EVPN is on: its EVPN routes are gone, so the guests behind it are unknown here "+
					"(no flood entry, no MAC: broadcasts and frames to them are not sent), and this host's guests are unknown there", p.Address, text(p.State)),
				Evidence: ev,
				Fix:      sessionFix(*in.BGP, p) + "; guestnet bgp shows the VTEPs and MACs each peer sent"})
		}
	}
	return out
}

// unreachable makes the finding of one remote address (us: its Underlay
// entries, one per source), if its route is missing or wrong.
func (in Input) unreachable(us []Underlay) (Finding, bool) {
	u := us[0]
	var from, names []string
	peer := false
	for _, x := range us {
		if x.VNI == 0 {
			peer = true
			from = append(from, x.From)
			continue
		}
		from = append(from, fmt.Sprintf("%s of VNI %d", x.From, x.VNI))
		for _, n := range in.stretched() {
			if n.VXLAN.VNI == x.VNI {
				names = append(names, n.Name)
			}
		}
	}
	network := "" // a peer carries every stretched network
	if !peer && len(names) == 1 {
		network = names[0]
	}
	what := fmt.Sprintf("%s (%s)", u.Addr, strings.Join(from, ", "))
	session := ""
	if peer {
		session = ", and the BGP session to it cannot open"
	}
	switch {
	case u.Dev == "":
		ev := []string{"ip route get " + u.Addr.String() + ": " + cmp.Or(u.Err, "no route")}
		return Finding{Severity: Error, Network: network,
			What:     fmt.Sprintf("no route to the VTEP %s: VXLAN packets to the guests behind it cannot leave%s", what, session),
			Evidence: ev,
			Fix: fmt.Sprintf("give the host a route to %s over the underlay (ip route add %s via GATEWAY dev UPLINK, or a default route), "+
				"or correct the address (bgp.peers, or that host's bgp.router_id / vxlan.local)", u.Addr, u.Addr)}, true
	case u.Dev == "lo":
		return Finding{}, false // one of this host's own addresses
	}
	if why := in.overlay(u.Dev); why != "" {
		return Finding{Severity: Error, Network: network,
			What: fmt.Sprintf("the route to the VTEP %s leaves through %s, %s: VXLAN would be carried inside a guest network (to guests, or back into itself) "+
				"instead of over the underlay", what, u.Dev, why),
			Evidence: []string{"ip route get " + u.Addr.String() + ": dev " + u.Dev},
			Fix: fmt.Sprintf("remove the route that sends %s into %s (ip route show | grep %s; a guest subnet or a BGP-learned route may cover it) "+
				"and route it over the underlay (ip route add %s via GATEWAY dev UPLINK)", u.Addr, u.Dev, u.Dev, u.Addr)}, true
	}
	return Finding{}, false
}

// overlay says why dev is no underlay ("" when it may be one): a guest
// bridge, a port of one, or a VXLAN device.
func (in Input) overlay(dev string) string {
	for _, n := range in.Networks {
		if n.Bridge == dev {
			return "the bridge of guest network " + n.Name
		}
	}
	l, ok := in.Host.Link(dev)
	switch {
	case !ok:
		return ""
	case l.Kind == "vxlan":
		return "a VXLAN device"
	case l.Kind == "bridge" && (l.Group == model.GuestGroup || l.Owner() != ""):
		return "a guest bridge of guestnet's"
	case l.Master != "":
		if m, ok := in.Host.Link(l.Master); ok && (m.Group == model.GuestGroup || m.Owner() != "") {
			return "a port of guest bridge " + m.Name
		}
	}
	return ""
}

// netNames lists the networks' names.
func netNames(nets []model.Network) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = fmt.Sprintf("%s (VNI %d)", n.Name, n.VXLAN.VNI)
	}
	return strings.Join(s, ", ")
}
