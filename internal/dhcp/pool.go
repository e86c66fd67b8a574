// Package dhcp is guestnet's DHCPv4 server: an address pool per network
// (pure, with an injected clock), the protocol handler that turns requests
// into replies, a durable lease store (bbolt, group commit) and the socket
// loop bound to one bridge. A lease is on disk before its ACK leaves.
package dhcp

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// Lease is one address bound to a client (or quarantined after DECLINE).
type Lease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
	Expiry   time.Time  `json:"expiry"`
	Declined bool       `json:"declined,omitempty"`
	// Port is the bridge port the client sent its REQUEST from, when
	// known: anti-spoofing binds that port to the lease.
	Port string `json:"port,omitempty"`
}

// Config is what a network's pool serves.
type Config struct {
	Network string
	Server  netip.Prefix // the bridge address: server identifier, router, subnet
	model.DHCP
}

// Quarantine is how long a declined address is kept out of the pool.
const Quarantine = 10 * time.Minute

// OfferHold is how long an offered address stays reserved for its client.
const OfferHold = 60 * time.Second

type offer struct {
	ip    netip.Addr
	until time.Time
}

// Pool hands out the addresses of one network. It is safe for concurrent
// use; it does no I/O.
type Pool struct {
	mu     sync.Mutex
	cfg    Config
	now    func() time.Time
	byIP   map[netip.Addr]Lease
	byMAC  map[string]netip.Addr
	offers map[string]offer // by MAC
	held   map[netip.Addr]string
	static map[string]model.StaticHost // by MAC
	fixed  map[netip.Addr]bool         // static addresses
	cursor netip.Addr                  // next never-tried address
}

// NewPool makes a pool holding the given leases (from the store).
func NewPool(cfg Config, now func() time.Time, leases []Lease) *Pool {
	p := &Pool{cfg: cfg, now: now, byIP: map[netip.Addr]Lease{}, byMAC: map[string]netip.Addr{},
		offers: map[string]offer{}, held: map[netip.Addr]string{}, static: map[string]model.StaticHost{}, fixed: map[netip.Addr]bool{}}
	for _, h := range cfg.Hosts {
		p.static[h.MAC] = h
		p.fixed[h.IP] = true
	}
	for _, l := range leases {
		p.byIP[l.IP] = l
		if !l.Declined {
			p.byMAC[l.MAC] = l.IP
		}
	}
	if len(cfg.Ranges) > 0 {
		p.cursor = cfg.Ranges[0].From
	}
	return p
}

// Config returns the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// inRange reports whether a is one of the range addresses.
func (p *Pool) inRange(a netip.Addr) bool {
	return slices.ContainsFunc(p.cfg.Ranges, func(r model.Range) bool { return r.Contains(a) })
}

// usable reports whether a may go to mac now.
func (p *Pool) usable(a netip.Addr, mac string, now time.Time) bool {
	if h, ok := p.static[mac]; ok {
		return a == h.IP
	}
	if !p.inRange(a) || a == p.cfg.Server.Addr() || p.fixed[a] {
		return false
	}
	if l, ok := p.byIP[a]; ok && l.MAC != mac && now.Before(l.Expiry) {
		return false // bound to another client, or quarantined
	}
	if m, ok := p.held[a]; ok && m != mac && now.Before(p.offers[m].until) {
		return false
	}
	return true
}

// Offer picks an address for a DISCOVER and holds it for the client. ok is
// false when the pool is exhausted.
func (p *Pool) Offer(mac string, requested netip.Addr) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	a, ok := p.pick(mac, requested, now)
	if !ok {
		return a, false
	}
	if o, had := p.offers[mac]; had && o.ip != a {
		delete(p.held, o.ip)
	}
	p.offers[mac] = offer{ip: a, until: now.Add(OfferHold)}
	p.held[a] = mac
	return a, true
}

func (p *Pool) pick(mac string, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if h, ok := p.static[mac]; ok {
		return h.IP, true
	}
	if a, ok := p.byMAC[mac]; ok && p.usable(a, mac, now) {
		return a, true // the same client gets its address back
	}
	if o, ok := p.offers[mac]; ok && p.usable(o.ip, mac, now) {
		return o.ip, true
	}
	if requested.IsValid() && p.usable(requested, mac, now) {
		if l, taken := p.byIP[requested]; !taken || l.MAC == mac {
			return requested, true
		}
	}
	if a, ok := p.fresh(mac, now); ok {
		return a, true
	}
	// No never-used address left: take the longest-expired lease.
	var best netip.Addr
	var bestExp time.Time
	for a, l := range p.byIP {
		if p.usable(a, mac, now) && (!best.IsValid() || l.Expiry.Before(bestExp)) {
			best, bestExp = a, l.Expiry
		}
	}
	return best, best.IsValid()
}

// fresh walks the ranges from the cursor for an address no one has held.
func (p *Pool) fresh(mac string, now time.Time) (netip.Addr, bool) {
	total := 0
	for _, r := range p.cfg.Ranges {
		total += span(r)
	}
	a := p.cursor
	for i := 0; i < total && a.IsValid(); i++ {
		_, leased := p.byIP[a]
		if !leased && p.usable(a, mac, now) {
			p.cursor = p.next(a)
			return a, true
		}
		a = p.next(a)
	}
	return netip.Addr{}, false
}

func span(r model.Range) int {
	f, t := r.From.As4(), r.To.As4()
	return int(u32(t)-u32(f)) + 1
}

func u32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// next is the address after a in range order, wrapping to the first range.
func (p *Pool) next(a netip.Addr) netip.Addr {
	for i, r := range p.cfg.Ranges {
		if r.Contains(a) {
			if n := a.Next(); r.Contains(n) {
				return n
			}
			return p.cfg.Ranges[(i+1)%len(p.cfg.Ranges)].From
		}
	}
	return p.cfg.Ranges[0].From
}

// Bind makes a the client's lease (REQUEST). ok is false when a may not
// go to mac, which the server answers with a NAK. The lease is in the pool
// at once; the caller persists it and calls Unbind if that fails. port
// is the bridge port the REQUEST came from; "" (not known) keeps the port
// of the lease being renewed.
func (p *Pool) Bind(mac string, a netip.Addr, hostname, port string) (Lease, Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.usable(a, mac, now) {
		return Lease{}, Lease{}, false
	}
	prev := p.byIP[a]
	if port == "" && prev.MAC == mac && !prev.Declined {
		port = prev.Port
	}
	if old, ok := p.byMAC[mac]; ok && old != a {
		delete(p.byIP, old) // a client holds one address per network
	}
	if o, ok := p.offers[mac]; ok {
		delete(p.held, o.ip)
		delete(p.offers, mac)
	}
	l := Lease{MAC: mac, IP: a, Hostname: hostname, Expiry: now.Add(p.cfg.Lease), Port: port}
	p.byIP[a], p.byMAC[mac] = l, a
	return l, prev, true
}

// Unbind undoes a Bind whose lease could not be stored.
func (p *Pool) Unbind(l, prev Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byIP, l.IP)
	delete(p.byMAC, l.MAC)
	if prev.IP.IsValid() {
		p.byIP[prev.IP] = prev
		if !prev.Declined {
			p.byMAC[prev.MAC] = prev.IP
		}
	}
}

// Release frees a client's address (RELEASE). It returns the lease that
// was removed, if any.
func (p *Pool) Release(mac string, a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if !ok || l.MAC != mac || l.Declined {
		return Lease{}, false
	}
	delete(p.byIP, a)
	delete(p.byMAC, mac)
	return l, true
}

// Decline quarantines an address a client found in use (DECLINE).
func (p *Pool) Decline(mac string, a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inRange(a) {
		return Lease{}, false
	}
	if cur, ok := p.byMAC[mac]; ok && cur == a {
		delete(p.byMAC, mac)
	}
	l := Lease{MAC: mac, IP: a, Expiry: p.now().Add(Quarantine), Declined: true}
	p.byIP[a] = l
	return l, true
}

// Lookup returns the lease bound to mac, if any.
func (p *Pool) Lookup(mac string) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.byMAC[mac]
	if !ok {
		return Lease{}, false
	}
	return p.byIP[a], true
}

// Leases returns every lease, sorted by address.
func (p *Pool) Leases() []Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Lease, 0, len(p.byIP))
	for _, l := range p.byIP {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// Size is the number of addresses the ranges hold.
func (p *Pool) Size() int {
	n := 0
	for _, r := range p.cfg.Ranges {
		n += span(r)
	}
	return n
}
