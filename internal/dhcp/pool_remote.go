package dhcp

import (
	"net/netip"
	"time"
)

// Remote updates: a stretched network's leases live in a cluster that
// every host watches (etcdlease). What another host wrote reaches this
// pool through Apply and Forget, which keep the pool's invariants (see
// Pool) as Bind and Release do.

// Apply makes l the record of its address, as the cluster holds it: a
// lease another host wrote (its address is taken here too), or this
// host's own write coming back. The client's record at another address
// ends (one address per client), and no offer of another client survives
// on the address. A record of another host binds no port here (its port
// is that host's): Apply drops its port identity. A host name a live
// lease of another client or a static host already carries here is
// dropped from this pool's copy (names are unique per pool; the cluster
// does not lock names).
func (p *Pool) Apply(l Lease) {
	if !l.IP.IsValid() {
		return
	}
	l.Hostname, _ = CleanHostname(l.Hostname)
	if l.Host != p.cfg.Host {
		l.Port, l.PortIndex, l.PortHW = "", 0, ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.byIP[l.IP]; ok && sameLease(cur, l) {
		return // this host's own write, or a repeat
	}
	now := p.now()
	if l.Hostname != "" && !l.Declined && l.live(now) && p.nameHeld(l.Hostname, l.MAC, now) {
		l.Hostname = ""
	}
	p.set(l)
}

// Forget removes the record of a, which the cluster no longer holds (a
// release, or a client that moved on). An outstanding offer of a stays:
// it is this host's, and the address is free.
func (p *Pool) Forget(a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if ok {
		p.drop(a)
	}
	return l, ok
}

// Replace makes the pool's records those of leases (the cluster's whole
// set, after a watch that had to start again): records the cluster no
// longer has are forgotten, the others applied. Offers stay.
func (p *Pool) Replace(leases []Lease) {
	keep := make(map[netip.Addr]bool, len(leases))
	for _, l := range leases {
		keep[l.IP] = true
	}
	for _, l := range p.Leases() {
		if !keep[l.IP] {
			p.Forget(l.IP)
		}
	}
	for _, l := range leases {
		p.Apply(l)
	}
}

// Remaining is how long the live lease of mac at a has left, for an ACK
// that renews nothing (the cluster is out of reach): 0 when the pool has
// no such lease written by this host, or it has expired.
func (p *Pool) Remaining(mac string, a netip.Addr) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	now := p.now()
	if !ok || l.MAC != mac || l.Declined || l.Host != p.cfg.Host || !l.live(now) {
		return 0
	}
	return l.Expiry.Sub(now)
}

// sameLease reports whether two records are equal, their expiries as
// instants (a record read back from the cluster has no monotonic clock
// reading).
func sameLease(a, b Lease) bool {
	a.Expiry, b.Expiry = a.Expiry.UTC().Round(0), b.Expiry.UTC().Round(0)
	return a == b
}
