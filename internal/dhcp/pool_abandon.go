package dhcp

import "net/netip"

// Minimal versions of what the pool rewrite adds (the lead reconciles
// them): Abandon for an address found in use by someone who holds no
// lease, and NeedsCheck to tell which addresses need that check.

// Abandon quarantines an address that answered ARP before it was offered:
// a declined lease with no MAC, for Quarantine, persisted by the caller
// like a declined one. ok is false for an address outside the ranges.
func (p *Pool) Abandon(a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inRange(a) || p.fixed[a] {
		return Lease{}, false
	}
	if m, ok := p.held[a]; ok {
		delete(p.held, a)
		if p.offers[m].ip == a {
			delete(p.offers, m)
		}
	}
	l := Lease{IP: a, Expiry: p.now().Add(Quarantine), Declined: true}
	p.byIP[a] = l
	return l, true
}

// NeedsCheck reports whether a range address must be checked with ARP
// before it is offered: the pool has no record of it (no lease, live or
// expired, for anyone: a guest may hold it from a lease the store lost, or
// have set it by hand), or only a declined or abandoned one whose
// quarantine is over (whoever used it may still be there). Static host
// addresses are never checked: they go to their host whatever answers.
func (p *Pool) NeedsCheck(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inRange(a) || p.fixed[a] || a == p.cfg.Server.Addr() {
		return false
	}
	l, rec := p.byIP[a]
	return !rec || (l.Declined && !p.now().Before(l.Expiry))
}
