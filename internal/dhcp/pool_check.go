package dhcp

import "net/netip"

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
	return !rec || (l.Declined && !l.live(p.now()))
}
