package evpn

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// key names one guest MAC of one VNI.
type key struct {
	vni uint32
	mac string
}

// Decide computes, from the complete current state, what this host
// announces and what it installs. MAC mobility (RFC 7432 §15):
//   - a local MAC no remote route names is announced with the sequence
//     number it had (0 the first time);
//   - a local MAC not announced before that a remote route names moved
//     here: it is announced with the highest remote Seq + 1, so that it
//     wins everywhere;
//   - a local MAC announced before keeps its Seq while no remote route is
//     better (model.EVPNMAC.Better); once one is, the guest moved away:
//     its route is withdrawn and the remote one installed (the kernel's
//     ext-learned entry takes the stale local one over).
//
// Each announced MAC has a MAC-only route and one MAC/IP route per known
// address, all with the MAC's Seq. Remote routes naming this host's own
// VTEP (its announcements reflected back) and routes of VNIs this host
// does not carry are ignored.
func Decide(in Input) Decision {
	nets := map[uint32]Network{}
	for _, n := range in.Networks {
		nets[n.VNI] = n
	}
	remote := remoteRoutes(in.Remote, nets)
	best := map[key]model.EVPNMAC{}
	for _, r := range remote {
		k := key{r.VNI, r.MAC}
		if b, ok := best[k]; !ok || r.Better(b) {
			best[k] = r
		}
	}
	prev := map[key]uint32{}
	for _, r := range in.Announced.MACs {
		prev[key{r.VNI, r.MAC}] = max(prev[key{r.VNI, r.MAC}], r.Seq)
	}

	var d Decision
	won := map[key]bool{}
	localIP := map[uint32]map[netip.Addr]bool{}
	local, over := capPorts(mergeLocal(in.Local, nets), prev)
	d.Unannounced = over
	for _, g := range local {
		n := nets[g.VNI]
		if !n.VTEP.IsValid() {
			continue
		}
		k := key{g.VNI, g.MAC}
		for _, ip := range g.IPs {
			if localIP[g.VNI] == nil {
				localIP[g.VNI] = map[netip.Addr]bool{}
			}
			localIP[g.VNI][ip] = true
		}
		r, named := best[k]
		p, had := prev[k]
		seq := p
		switch {
		case named && had:
			if r.Better(model.EVPNMAC{VNI: g.VNI, VTEP: n.VTEP, MAC: g.MAC, Seq: p}) {
				continue // moved away: withdrawn, the remote route is installed
			}
		case named:
			seq = r.Seq + 1 // moved here
		}
		won[k] = true
		d.Announce.MACs = append(d.Announce.MACs, model.EVPNMAC{VNI: g.VNI, VTEP: n.VTEP, MAC: g.MAC, Seq: seq})
		for _, ip := range g.IPs {
			d.Announce.MACs = append(d.Announce.MACs, model.EVPNMAC{VNI: g.VNI, VTEP: n.VTEP, MAC: g.MAC, IP: ip, Seq: seq})
		}
	}
	for _, n := range in.Networks {
		if n.VTEP.IsValid() {
			d.Announce.Flood = append(d.Announce.Flood, model.EVPNFlood{VNI: n.VNI, VTEP: n.VTEP})
		}
	}
	d.Install = install(in.Remote.Flood, remote, best, won, localIP, nets)
	d.Announce.Sort()
	d.Install.Sort()
	return d
}

// remoteRoutes are the type-2 routes Decide takes into account: of a VNI
// this host carries, from another VTEP, for a MAC that is not the
// gateway's.
func remoteRoutes(e model.EVPN, nets map[uint32]Network) []model.EVPNMAC {
	var out []model.EVPNMAC
	for _, r := range e.MACs {
		n, ok := nets[r.VNI]
		if !ok || !r.VTEP.IsValid() || r.VTEP == n.VTEP || r.MAC == "" || r.MAC == n.GatewayMAC {
			continue
		}
		out = append(out, r)
	}
	return out
}

// mergeLocal joins the local entries of one MAC (a MAC seen twice, its
// addresses from two sources), drops what is not a guest of a stretched
// network and sorts the addresses.
func mergeLocal(local []Guest, nets map[uint32]Network) []Guest {
	idx := map[key]int{}
	var out []Guest
	for _, g := range local {
		n, ok := nets[g.VNI]
		if !ok || g.MAC == "" || g.MAC == n.GatewayMAC {
			continue
		}
		k := key{g.VNI, g.MAC}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Guest{VNI: g.VNI, MAC: g.MAC, Port: g.Port})
		}
		for _, ip := range g.IPs {
			if ip.IsValid() && ip != n.Gateway && !slices.Contains(out[i].IPs, ip) {
				out[i].IPs = append(out[i].IPs, ip)
			}
		}
	}
	for i := range out {
		slices.SortFunc(out[i].IPs, netip.Addr.Compare)
	}
	return out
}

// capPorts keeps at most model.EVPNMaxMACsPerPort MACs of each port (a
// VNI's port; port 0, not known, counts as one) and returns the rest
// apart. A port over the bound keeps first the MACs it announced before
// (a flood does not push its own guest's MAC out), then those with an
// address, then the lowest MACs, so that the choice is stable from one
// pass to the next.
func capPorts(local []Guest, prev map[key]uint32) (keep, over []Guest) {
	type portKey struct {
		vni  uint32
		port int
	}
	byPort := map[portKey][]int{}
	for i, g := range local {
		k := portKey{g.VNI, g.Port}
		byPort[k] = append(byPort[k], i)
	}
	drop := map[int]bool{}
	for _, idx := range byPort {
		if len(idx) <= model.EVPNMaxMACsPerPort {
			continue
		}
		rank := func(g Guest) int {
			_, had := prev[key{g.VNI, g.MAC}]
			switch {
			case had:
				return 0
			case len(g.IPs) > 0:
				return 1
			}
			return 2
		}
		slices.SortFunc(idx, func(a, b int) int {
			ga, gb := local[a], local[b]
			return cmp.Or(cmp.Compare(rank(ga), rank(gb)), cmp.Compare(ga.MAC, gb.MAC))
		})
		for _, i := range idx[model.EVPNMaxMACsPerPort:] {
			drop[i] = true
		}
	}
	for i, g := range local {
		if drop[i] {
			over = append(over, g)
		} else {
			keep = append(keep, g)
		}
	}
	return keep, over
}

// install is what the remote routes ask this host's kernel for: every
// other VTEP in each VXLAN device's flood list, the best route of each
// remote MAC this host does not win, and its addresses (the routes of
// that best VTEP and Seq) in the bridge's neighbour table, unless a local
// guest or the gateway has the address.
func install(flood []model.EVPNFlood, remote []model.EVPNMAC, best map[key]model.EVPNMAC, won map[key]bool, localIP map[uint32]map[netip.Addr]bool, nets map[uint32]Network) Install {
	var in Install
	seen := map[Flood]bool{}
	for _, f := range flood {
		n, ok := nets[f.VNI]
		if !ok || !f.VTEP.IsValid() || f.VTEP == n.VTEP {
			continue
		}
		e := Flood{Device: n.VXLAN, VTEP: f.VTEP}
		if !seen[e] {
			seen[e] = true
			in.Flood = append(in.Flood, e)
		}
	}
	for k, r := range best {
		if won[k] {
			continue
		}
		n := nets[k.vni]
		in.MACs = append(in.MACs, RemoteMAC{Device: n.VXLAN, Bridge: n.Bridge, MAC: k.mac, VTEP: r.VTEP})
	}
	type ipKey struct {
		vni uint32
		ip  netip.Addr
	}
	neigh := map[ipKey]model.EVPNMAC{}
	for _, r := range remote {
		k := key{r.VNI, r.MAC}
		b := best[k]
		n := nets[r.VNI]
		if !r.IP.IsValid() || won[k] || r.VTEP != b.VTEP || r.Seq != b.Seq || r.IP == n.Gateway || localIP[r.VNI][r.IP] {
			continue
		}
		// Two MACs claiming one address: the better route, then the
		// lower MAC, so that every host picks the same.
		ik := ipKey{r.VNI, r.IP}
		if o, ok := neigh[ik]; !ok || r.Better(o) || !o.Better(r) && r.MAC < o.MAC {
			neigh[ik] = r
		}
	}
	for k, r := range neigh {
		in.Neighs = append(in.Neighs, Neigh{Bridge: nets[k.vni].Bridge, IP: k.ip, MAC: r.MAC})
	}
	return in
}
