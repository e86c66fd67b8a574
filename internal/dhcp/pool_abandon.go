package dhcp

import "net/netip"

// Minimal versions of what the pool rewrite adds (the lead reconciles
// them): Abandon for an address found in use by someone who holds no
// lease, and Unrecorded to tell which addresses need that check.

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

// Unrecorded reports whether the pool knows nothing of a range address:
// no lease, live or expired, bound, declined or abandoned, for anyone,
// and no static host. Such an address is checked with ARP before it is
// offered: a guest may hold it from a lease the store lost, or have set
// it by hand.
func (p *Pool) Unrecorded(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, rec := p.byIP[a]
	return !rec && p.inRange(a) && !p.fixed[a]
}
