package dhcp

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Prober tells whether someone on the network's link already uses an
// address (internal/arpprobe asks with ARP on the bridge). Probe returns
// the MAC of whoever answered for a, or "" when no one did. It may block
// for the probe's wait; each request runs in its own goroutine, so other
// clients do not wait for it. Prefetch starts probes without waiting, so
// that the next clients find their result ready; a Probe of an address
// being prefetched joins that probe.
type Prober interface {
	Probe(a netip.Addr) (mac string, err error)
	Prefetch(as []netip.Addr)
}

// PrefetchAhead is how many addresses after a checked one are probed in
// advance at least: a stream of new clients (160 in a row in the e2e test)
// then waits for no probe but the first. A faster stream gets more (see
// ahead): as many as arrive within twice a probe's wait, up to
// MaxPrefetchAhead, so that at 1,000 new clients a second a DISCOVER
// still finds its address checked already instead of waiting a probe's
// 200 ms.
const PrefetchAhead = 8

// MaxPrefetchAhead bounds the addresses probed in advance.
const MaxPrefetchAhead = 2048

// prefetchState follows the stream of DISCOVERs that need a probe: the
// mean gap between them, the mean wait of a probe that was not ready,
// and how far the probes already started reach.
type prefetchState struct {
	mu   sync.Mutex
	last time.Time
	gap  time.Duration // moving average
	wait time.Duration // moving average of the probes that waited
	to   netip.Addr    // the last address prefetched
}

// ahead is how many addresses to probe in advance of a stream whose mean
// gap and probe wait are as measured.
func (s *prefetchState) ahead() int {
	if s.gap <= 0 || s.wait <= 0 {
		return PrefetchAhead
	}
	return min(max(PrefetchAhead, int(2*s.wait/s.gap)+1), MaxPrefetchAhead)
}

// observe records a probe asked for at now that took took.
func (s *prefetchState) observe(now time.Time, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() {
		s.gap = avg(s.gap, now.Sub(s.last))
	}
	s.last = now
	if took > time.Millisecond { // a result not ready yet: a real wait
		s.wait = avg(s.wait, took)
	}
}

// avg moves a mean towards x by 1/8 (the first x is taken as it is).
func avg(mean, x time.Duration) time.Duration {
	if mean == 0 {
		return x
	}
	return mean + (x-mean)/8
}

// MaxProbes bounds the addresses one DISCOVER checks. When all of them
// answer, the client gets no offer this time; its next DISCOVER goes on
// with the addresses after them.
const MaxProbes = 4

// ProbeStats counts the ARP checks made before offers. Liar counts the
// answers not believed: the answering MAC claims too many addresses.
type ProbeStats struct {
	Probes, InUse, Errors, Liar atomic.Uint64
}

// LiarAfter is how many distinct addresses one MAC may answer ARP for,
// within Quarantine, and have each abandoned. A guest that answers for
// every address (`ip route add local 10.78.0.0/24 dev eth0 table local`
// does it), or a proxy-ARP device, would otherwise make the server
// abandon the whole pool in seconds: from its third address on, its
// answers are not believed and the address is offered unverified (the
// client still checks it with ARP itself, RFC 2131 3.1.5, and DECLINEs
// it if someone really holds it).
const LiarAfter = 2

// maxAnswerers bounds the MACs remembered for LiarAfter.
const maxAnswerers = 4096

// believe records that by answered ARP for a and reports whether that
// answer is believed: by has answered for at most LiarAfter distinct
// addresses within Quarantine (this one included).
func (h *Handler) believe(by string, a netip.Addr) bool {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	now := h.Pool.now()
	if h.answers == nil {
		h.answers = map[string]map[netip.Addr]time.Time{}
	}
	if len(h.answers) >= maxAnswerers {
		for m, as := range h.answers {
			prune(as, now)
			if len(as) == 0 {
				delete(h.answers, m)
			}
		}
	}
	as := h.answers[by]
	if as == nil {
		if len(h.answers) >= maxAnswerers {
			return false // a flood of answering MACs: none of them is believed
		}
		as = map[netip.Addr]time.Time{}
		h.answers[by] = as
	}
	prune(as, now)
	as[a] = now
	return len(as) <= LiarAfter
}

// prune forgets the answers older than Quarantine.
func prune(as map[netip.Addr]time.Time, now time.Time) {
	for a, t := range as {
		if now.Sub(t) >= Quarantine {
			delete(as, a)
		}
	}
}

// probed checks the address the pool picked for mac before it is offered
// (as ISC dhcpd and dnsmasq ping, we ARP), when the pool has no record of
// it (Pool.NeedsCheck). An address someone answers for is abandoned (quarantined and
// persisted) and the pool asked again, at most MaxProbes times. ok is
// false when every address tried was in use. Without a Prober, or when
// the probe itself fails, the address is offered unchecked: DHCP keeps
// serving, and the client's own ARP check (RFC 2131 3.1.5) remains. So is
// an address whose answer came from a MAC that answers for more than
// LiarAfter addresses (believe).
func (h *Handler) probed(mac string, requested netip.Addr, port string, a netip.Addr) (netip.Addr, bool) {
	if h.Prober == nil {
		return a, true
	}
	for i := 0; ; i++ {
		if !h.Pool.NeedsCheck(a) {
			return a, true
		}
		h.Probes.Probes.Add(1)
		start := time.Now()
		by, err := h.Prober.Probe(a)
		h.prefetching.observe(start, time.Since(start))
		h.Log.Debug("dhcp: ARP check", "ip", a, "answered_by", by, "took", time.Since(start), "client", mac)
		if err != nil {
			h.Probes.Errors.Add(1)
			h.Log.Warn("dhcp: ARP check failed, offering unchecked", "ip", a, "err", err)
			return a, true
		}
		if by == "" || by == mac { // no one, or the client itself already uses it
			h.prefetch(a)
			return a, true
		}
		if !h.believe(by, a) {
			h.Probes.Liar.Add(1)
			if n, ok := h.liarWarn.allow(h.now()); ok {
				h.Log.Warn("dhcp: a MAC answers ARP for many addresses (a guest lying, or a proxy-ARP device): its answers no longer abandon addresses; offering unverified",
					"answered_by", by, "ip", a, "client", mac, "more_than", LiarAfter, "ignored_since_last_warning", n)
			}
			return a, true
		}
		h.Probes.InUse.Add(1)
		l, ok := h.Pool.Abandon(a)
		if ok {
			h.store(func() error { return h.Store.Put(h.Pool.cfg.Network, l) })
		}
		h.Log.Warn("dhcp: address answers ARP but has no lease: abandoned, not offered",
			"ip", a, "used_by", by, "client", mac, "until", l.Expiry)
		if i+1 == MaxProbes {
			h.Log.Warn("dhcp: every address checked for this DISCOVER is in use; no offer this time", "client", mac, "checked", MaxProbes)
			return netip.Addr{}, false
		}
		if a, ok = h.offer(mac, requested, port); !ok {
			return a, false
		}
	}
}

// prefetch starts probes of the addresses after a that the pool would
// offer next without a record of them (ranges are walked in order), as
// many as ahead says. Addresses already prefetched by an earlier call are
// not walked again: a stream of DISCOVERs costs each one or two new
// probes, not a walk of the whole window.
func (h *Handler) prefetch(a netip.Addr) {
	s := &h.prefetching
	s.mu.Lock()
	n := s.ahead()
	if s.to.Is4() && a.Is4() && s.to.Compare(a) > 0 && countBetween(a, s.to) < 2*n {
		n -= countBetween(a, s.to)
		a = s.to // the window up to s.to is under way already
	}
	var next []netip.Addr
	for i := 0; i < 2*n && len(next) < n; i++ {
		if a = a.Next(); !a.IsValid() {
			break
		}
		if h.Pool.NeedsCheck(a) {
			next = append(next, a)
		}
	}
	if len(next) > 0 {
		s.to = next[len(next)-1]
	}
	s.mu.Unlock()
	if len(next) > 0 {
		h.Prober.Prefetch(next)
	}
}

// countBetween is the number of addresses after a up to b (b > a, both
// IPv4 and at most a window apart).
func countBetween(a, b netip.Addr) int {
	x, y := a.As4(), b.As4()
	return int(uint32(y[0])<<24|uint32(y[1])<<16|uint32(y[2])<<8|uint32(y[3])) -
		int(uint32(x[0])<<24|uint32(x[1])<<16|uint32(x[2])<<8|uint32(x[3]))
}
