package evpn

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestDecideModel replays long random histories on one host (vtepA):
// guests learned and forgotten locally, remote routes announced and
// withdrawn in any order, duplicated, with any Seq (late routes of a
// moved MAC's old host, a guest moving away with a higher Seq), and
// checks every decision against a brute-force reference (checkDecision).
// The kernel's side effect of a lost MAC is played too: the remote entry
// installed takes the stale local one over.
func TestDecideModel(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 16))
		h := &oneHost{local: map[string][]netip.Addr{}}
		for step := range 300 {
			op := h.step(rng)
			in := h.input()
			d := Decide(in)
			if err := checkDecision(in, d); err != nil {
				t.Fatalf("seed %d step %d (%s): %v\ninput %+v\ndecision %+v", seed, step, op, err, in, d)
			}
			h.apply(d)
		}
	}
}

type oneHost struct {
	local     map[string][]netip.Addr // MAC -> its addresses
	remote    []model.EVPNMAC
	flood     []model.EVPNFlood
	announced model.EVPN
}

func (h *oneHost) input() Input {
	in := Input{Networks: []Network{testNet(vtepA)}, Announced: h.announced}
	for _, m := range slices.Sorted(maps.Keys(h.local)) {
		in.Local = append(in.Local, Guest{VNI: 6000, MAC: m, IPs: h.local[m]})
	}
	in.Remote.MACs = slices.Clone(h.remote)
	in.Remote.Flood = slices.Clone(h.flood)
	return in
}

// apply plays what the sync does: what is announced is remembered, and a
// local MAC that lost to a remote route is now that route's (the kernel's
// ext-learned entry replaced the learned one).
func (h *oneHost) apply(d Decision) {
	h.announced = d.Announce
	for _, m := range d.Install.MACs {
		delete(h.local, m.MAC)
	}
}

func (h *oneHost) step(rng *rand.Rand) string {
	i := rng.IntN(8)
	vtep := []netip.Addr{vtepB, vtepC, vtepA}[rng.IntN(3)] // vtepA: this host's own routes reflected back
	switch op := rng.IntN(10); {
	case op < 2:
		var ips []netip.Addr
		switch rng.IntN(3) {
		case 1:
			ips = []netip.Addr{ip(i)}
		case 2:
			ips = []netip.Addr{ip(i), ip(i + 1), gw}
		}
		h.local[mac(i)] = ips
		return fmt.Sprintf("learn %s %v", mac(i), ips)
	case op < 3:
		delete(h.local, mac(i))
		return fmt.Sprintf("forget %s", mac(i))
	case op < 6:
		r := model.EVPNMAC{VNI: 6000, VTEP: vtep, MAC: mac(i), Seq: uint32(rng.IntN(4))}
		if rng.IntN(2) == 0 {
			r.IP = ip(i + rng.IntN(2))
		}
		if rng.IntN(4) == 0 {
			// The guest moves away: a route that beats this host's.
			for _, a := range h.announced.MACs {
				if a.MAC == r.MAC {
					r.Seq = a.Seq + uint32(rng.IntN(2))
				}
			}
		}
		if rng.IntN(10) == 0 {
			r.VNI = 7000 // a network this host does not carry
		}
		h.remote = append(h.remote, r)
		return fmt.Sprintf("announce %+v", r)
	case op < 8:
		if len(h.remote) == 0 {
			return "nothing to withdraw"
		}
		j := rng.IntN(len(h.remote))
		r := h.remote[j]
		if rng.IntN(2) == 0 {
			h.remote = slices.Delete(h.remote, j, j+1) // one path of a duplicate
		} else {
			h.remote = slices.DeleteFunc(h.remote, func(x model.EVPNMAC) bool { return x == r })
		}
		return fmt.Sprintf("withdraw %+v", r)
	case op < 9:
		if len(h.remote) == 0 {
			return "nothing to duplicate"
		}
		r := h.remote[rng.IntN(len(h.remote))]
		h.remote = append(h.remote, r)
		return fmt.Sprintf("duplicate %+v", r)
	default:
		f := model.EVPNFlood{VNI: 6000, VTEP: vtep}
		if j := slices.Index(h.flood, f); j >= 0 {
			h.flood = slices.Delete(h.flood, j, j+1)
			return fmt.Sprintf("withdraw flood %v", f)
		}
		h.flood = append(h.flood, f)
		return fmt.Sprintf("announce flood %v", f)
	}
}

// checkDecision is the reference: for each MAC on its own, by brute force.
func checkDecision(in Input, d Decision) error {
	n := in.Networks[0]
	own := n.VTEP
	var routes []model.EVPNMAC
	for _, r := range in.Remote.MACs {
		if r.VNI == n.VNI && r.VTEP != own {
			routes = append(routes, r)
		}
	}
	macs := map[string]bool{}
	for _, r := range routes {
		macs[r.MAC] = true
	}
	for _, g := range in.Local {
		macs[g.MAC] = true
	}
	localIPs := map[netip.Addr]bool{}
	for _, g := range in.Local {
		for _, a := range g.IPs {
			localIPs[a] = true
		}
	}
	var wantAnnounce []model.EVPNMAC
	wantMACs := map[string]netip.Addr{}
	wantNeigh := map[netip.Addr][]model.EVPNMAC{}
	for m := range macs {
		var of []model.EVPNMAC
		for _, r := range routes {
			if r.MAC == m {
				of = append(of, r)
			}
		}
		// The best remote route: the highest Seq, then the lowest VTEP.
		slices.SortFunc(of, func(a, b model.EVPNMAC) int {
			if a.Seq != b.Seq {
				return int(b.Seq) - int(a.Seq)
			}
			return a.VTEP.Compare(b.VTEP)
		})
		gi := slices.IndexFunc(in.Local, func(g Guest) bool { return g.MAC == m })
		prev := -1
		for _, a := range in.Announced.MACs {
			if a.MAC == m {
				prev = int(a.Seq)
			}
		}
		announce, seq := false, uint32(0)
		switch {
		case gi < 0:
		case len(of) == 0:
			announce, seq = true, uint32(max(prev, 0))
		case prev < 0:
			announce, seq = true, of[0].Seq+1
			for _, r := range of {
				if seq <= r.Seq {
					return fmt.Errorf("%s moved here with Seq %d, not above remote %+v", m, seq, r)
				}
			}
		default:
			lost := of[0].Seq > uint32(prev) || of[0].Seq == uint32(prev) && of[0].VTEP.Less(own)
			announce, seq = !lost, uint32(prev)
		}
		if announce {
			wantAnnounce = append(wantAnnounce, model.EVPNMAC{VNI: n.VNI, VTEP: own, MAC: m, Seq: seq})
			for _, a := range in.Local[gi].IPs {
				if a != n.Gateway && !slices.ContainsFunc(wantAnnounce, func(x model.EVPNMAC) bool { return x.MAC == m && x.IP == a }) {
					wantAnnounce = append(wantAnnounce, model.EVPNMAC{VNI: n.VNI, VTEP: own, MAC: m, IP: a, Seq: seq})
				}
			}
			continue
		}
		if len(of) == 0 {
			continue
		}
		wantMACs[m] = of[0].VTEP
		for _, r := range of {
			if r.VTEP == of[0].VTEP && r.Seq == of[0].Seq && r.IP.IsValid() && r.IP != n.Gateway && !localIPs[r.IP] {
				wantNeigh[r.IP] = append(wantNeigh[r.IP], r)
			}
		}
	}
	if !equalEVPN(d.Announce, model.EVPN{Flood: []model.EVPNFlood{{VNI: n.VNI, VTEP: own}}, MACs: wantAnnounce}) {
		return fmt.Errorf("announced %+v, want %+v", d.Announce.MACs, wantAnnounce)
	}
	got := map[string]netip.Addr{}
	for _, m := range d.Install.MACs {
		if _, dup := got[m.MAC]; dup || m.Device != n.VXLAN || m.Bridge != n.Bridge {
			return fmt.Errorf("installed MAC %+v twice or on the wrong device", m)
		}
		got[m.MAC] = m.VTEP
	}
	if !maps.Equal(got, wantMACs) {
		return fmt.Errorf("installed MACs %v, want %v (the best remote route of each MAC this host does not win)", got, wantMACs)
	}
	gotNeigh := map[netip.Addr]string{}
	for _, e := range d.Install.Neighs {
		gotNeigh[e.IP] = e.MAC
	}
	if len(gotNeigh) != len(wantNeigh) {
		return fmt.Errorf("neighbours %v, want one for each of %v", gotNeigh, wantNeigh)
	}
	for a, rs := range wantNeigh {
		if !slices.ContainsFunc(rs, func(r model.EVPNMAC) bool { return r.MAC == gotNeigh[a] }) {
			return fmt.Errorf("neighbour %s -> %q, want one of %v", a, gotNeigh[a], rs)
		}
	}
	wantFlood := map[netip.Addr]bool{}
	for _, f := range in.Remote.Flood {
		if f.VNI == n.VNI && f.VTEP != own {
			wantFlood[f.VTEP] = true
		}
	}
	gotFlood := map[netip.Addr]bool{}
	for _, f := range d.Install.Flood {
		gotFlood[f.VTEP] = true
	}
	if len(d.Install.Flood) != len(gotFlood) || !maps.Equal(gotFlood, wantFlood) {
		return fmt.Errorf("flood %v, want %v", d.Install.Flood, wantFlood)
	}
	return nil
}

// TestMobilityConverges runs three hosts that exchange their complete
// announced sets over per-pair ordered queues delivered in random order
// (so one host's withdraw arrives after another's announce) with
// coalescing, while guests move between them, sometimes leaving a stale
// learned entry on the host they left. Each host's every decision is
// checked against the reference; after each burst the system is quiesced
// (every guest sends a frame where it is, every message is delivered,
// every host syncs) and then each guest must be announced by its host
// alone and installed everywhere else pointing at that host.
func TestMobilityConverges(t *testing.T) {
	vteps := []netip.Addr{vtepA, vtepB, vtepC}
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 17))
		s := newSim(vteps)
		for burst := range 20 {
			for range 40 {
				op := s.step(rng)
				if err := s.lastErr; err != nil {
					t.Fatalf("seed %d burst %d after %s: %v", seed, burst, op, err)
				}
			}
			if err := s.quiesce(); err != nil {
				t.Fatalf("seed %d burst %d: %v", seed, burst, err)
			}
		}
	}
}

type simHost struct {
	vtep      netip.Addr
	local     map[string]bool
	announced model.EVPN
	seen      map[int]model.EVPN // the last set delivered from each peer
	installed Install
}

type sim struct {
	hosts   []*simHost
	queue   map[[2]int][]model.EVPN // from, to -> sets in flight, in order
	where   map[string]int          // guest -> its host
	lastErr error
}

const simGuests = 5

func newSim(vteps []netip.Addr) *sim {
	s := &sim{queue: map[[2]int][]model.EVPN{}, where: map[string]int{}}
	for _, v := range vteps {
		s.hosts = append(s.hosts, &simHost{vtep: v, local: map[string]bool{}, seen: map[int]model.EVPN{}})
	}
	for i := range vteps {
		for j := range vteps {
			if i != j {
				s.queue[[2]int{i, j}] = nil
			}
		}
	}
	for g := range simGuests {
		s.where[mac(g)] = g % len(vteps)
		s.hosts[g%len(vteps)].local[mac(g)] = true
	}
	return s
}

func (s *sim) sync(i int) {
	h := s.hosts[i]
	in := Input{Networks: []Network{testNet(h.vtep)}, Announced: h.announced}
	for _, m := range slices.Sorted(maps.Keys(h.local)) {
		in.Local = append(in.Local, Guest{VNI: 6000, MAC: m, IPs: []netip.Addr{ip(int(m[len(m)-1] - '0'))}})
	}
	for _, j := range slices.Sorted(maps.Keys(h.seen)) {
		in.Remote.MACs = append(in.Remote.MACs, h.seen[j].MACs...)
		in.Remote.Flood = append(in.Remote.Flood, h.seen[j].Flood...)
	}
	d := Decide(in)
	if err := checkDecision(in, d); err != nil && s.lastErr == nil {
		s.lastErr = fmt.Errorf("host %s: %w", h.vtep, err)
	}
	for _, m := range d.Install.MACs {
		delete(h.local, m.MAC) // the ext-learned entry takes the learned one over
	}
	h.installed = d.Install
	if !equalEVPN(d.Announce, h.announced) {
		for j := range s.hosts {
			if j != i {
				s.queue[[2]int{i, j}] = append(s.queue[[2]int{i, j}], d.Announce)
			}
		}
	}
	h.announced = d.Announce
}

func (s *sim) deliver(k [2]int, all bool) {
	q := s.queue[k]
	if len(q) == 0 {
		return
	}
	n := 1
	if all {
		n = len(q) // BGP coalesces: only the latest set matters
	}
	s.hosts[k[1]].seen[k[0]] = q[n-1]
	s.queue[k] = q[n:]
}

func (s *sim) step(rng *rand.Rand) string {
	g := mac(rng.IntN(simGuests))
	switch op := rng.IntN(10); {
	case op < 2:
		to := rng.IntN(len(s.hosts))
		from := s.where[g]
		if to == from {
			return "no move"
		}
		s.where[g] = to
		s.hosts[to].local[g] = true
		stale := rng.IntN(2) == 0
		if !stale {
			delete(s.hosts[from].local, g) // its port went with it
		}
		return fmt.Sprintf("move %s %d->%d stale=%v", g, from, to, stale)
	case op < 3:
		s.hosts[s.where[g]].local[g] = true
		return fmt.Sprintf("frame from %s at %d", g, s.where[g])
	case op < 7:
		keys := slices.SortedFunc(maps.Keys(s.queue), func(a, b [2]int) int { return a[0]*10 + a[1] - b[0]*10 - b[1] })
		k := keys[rng.IntN(len(keys))]
		s.deliver(k, rng.IntN(3) == 0)
		return fmt.Sprintf("deliver %v", k)
	default:
		i := rng.IntN(len(s.hosts))
		s.sync(i)
		return fmt.Sprintf("sync %d", i)
	}
}

// quiesce lets the guests keep sending frames where they are (a guest
// that came back to a host before that host heard it had left loses its
// entry there to the route of the host it left, until its next frame:
// RFC 7432's mobility has the same window), syncs and delivers until
// nothing changes, and checks the converged state.
func (s *sim) quiesce() error {
	for round := 0; ; round++ {
		if round > 20 {
			return fmt.Errorf("no convergence after 20 rounds")
		}
		for g, h := range s.where {
			s.hosts[h].local[g] = true
		}
		for i := range s.hosts {
			s.sync(i)
		}
		busy := false
		for k, q := range s.queue {
			if len(q) > 0 {
				busy = true
				s.deliver(k, true)
			}
		}
		if !busy {
			break
		}
	}
	if s.lastErr != nil {
		return s.lastErr
	}
	for g, at := range s.where {
		for i, h := range s.hosts {
			announced := slices.ContainsFunc(h.announced.MACs, func(r model.EVPNMAC) bool { return r.MAC == g })
			j := slices.IndexFunc(h.installed.MACs, func(m RemoteMAC) bool { return m.MAC == g })
			switch {
			case i == at && (!announced || j >= 0):
				return fmt.Errorf("%s is at host %d, which announces it: %v, installs it: %v", g, at, announced, j >= 0)
			case i != at && announced:
				return fmt.Errorf("%s is at host %d, but host %d announces it too", g, at, i)
			case i != at && (j < 0 || h.installed.MACs[j].VTEP != s.hosts[at].vtep):
				return fmt.Errorf("%s is at host %d (%s), host %d installs %+v", g, at, s.hosts[at].vtep, i, h.installed.MACs)
			case i != at && h.local[g]:
				return fmt.Errorf("%s is at host %d, host %d still has it as local", g, at, i)
			}
		}
	}
	return nil
}
