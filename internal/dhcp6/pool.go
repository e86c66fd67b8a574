// Package dhcp6 is guestnet's stateful DHCPv6 server (RFC 8415, IA_NA
// only): an address pool per network (pure, with an injected clock), the
// handler that turns a client's message into the server's answer, and the
// socket loop on UDP [::]:547 that serves every bridge. Wire format:
// github.com/insomniacslk/dhcp/dhcpv6. Leases live in the DHCPv4 lease
// store's file (dhcp.BoltStore, bucket dhcp.Bucket6), on disk before the
// Reply that grants them leaves.
package dhcp6

import (
	"crypto/sha256"
	"encoding/binary"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// Config is what a network's DHCPv6 serves.
type Config struct {
	Network string
	Prefix  netip.Prefix // the on-link prefix (model.Network.Subnet6)
	model.DHCP6
	DNS    []netip.Addr // DNS servers (the gateway, when dns: is set)
	Domain string       // search list, "" for none
	// PerPort caps the dynamic addresses held through one bridge port at
	// once (DHCPv4's per_port); 0 is no cap.
	PerPort int
	// NameHeld reports whether a host name belongs to a guest other than
	// the one with this MAC ("" unknown) in the network's other family
	// (DHCPv4 leases and static hosts): a name is one guest's in both A
	// and AAAA. nil: no other family. Called without the pool's lock.
	NameHeld func(name, mac string) bool `json:"-"`
}

// Quarantine is how long a declined address is kept out of the pool.
const Quarantine = 10 * time.Minute

// ProbeSpan is how many consecutive addresses a client's allocation looks
// at from its starting point, and ProbeTries how many starting points it
// tries; a range no larger than ProbeSpan is searched whole, so its
// exhaustion is certain. An address is never allocated per address of
// the range: a /64 range has 2^64 of them.
const (
	ProbeSpan  = 1024
	ProbeTries = 16
)

// Pool hands out the addresses of one network's DHCPv6. It is safe for
// concurrent use and does no I/O.
//
// Invariants: byIP holds one record per address (a live lease, an expired
// one that remembers its client, or a quarantine); byClient[k] == a exactly
// when byIP[a] belongs to client k and is not declined.
type Pool struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	byIP     map[netip.Addr]dhcp.Lease6
	byClient map[client]netip.Addr
}

// client is one IA of one client.
type client struct {
	duid string
	iaid uint32
}

// NewPool makes a pool serving cfg, with the leases loaded from the store.
// A lease outside the prefix (the config changed) is dropped.
func NewPool(cfg Config, now func() time.Time, leases []dhcp.Lease6) *Pool {
	p := &Pool{cfg: cfg, now: now, byIP: map[netip.Addr]dhcp.Lease6{}, byClient: map[client]netip.Addr{}}
	for _, l := range leases {
		if !cfg.Prefix.Contains(l.IP) {
			continue
		}
		p.put(l)
	}
	return p
}

// Config is what the pool serves.
func (p *Pool) Config() Config { return p.cfg }

func (p *Pool) put(l dhcp.Lease6) {
	if old, ok := p.byIP[l.IP]; ok && !old.Declined {
		if p.byClient[client{old.DUID, old.IAID}] == l.IP {
			delete(p.byClient, client{old.DUID, old.IAID})
		}
	}
	if !l.Declined {
		c := client{l.DUID, l.IAID}
		if a, ok := p.byClient[c]; ok && a != l.IP {
			delete(p.byIP, a) // the client moves: its old record goes
		}
		p.byClient[c] = l.IP
	}
	p.byIP[l.IP] = l
}

// Static is the client's static host: by DUID, or by MAC when the client's
// MAC is known.
func (p *Pool) Static(duid, mac string) (model.StaticHost6, bool) {
	for _, h := range p.cfg.Hosts {
		if h.DUID != "" && h.DUID == duid {
			return h, true
		}
	}
	if mac == "" {
		return model.StaticHost6{}, false
	}
	for _, h := range p.cfg.Hosts {
		if h.MAC != "" && h.MAC == mac {
			return h, true
		}
	}
	return model.StaticHost6{}, false
}

func (p *Pool) isStatic(a netip.Addr) bool {
	return slices.ContainsFunc(p.cfg.Hosts, func(h model.StaticHost6) bool { return h.IP == a })
}

func (p *Pool) inRange(a netip.Addr) bool {
	return slices.ContainsFunc(p.cfg.Ranges, func(r model.Range) bool { return r.Contains(a) })
}

// free reports whether a may go to client c now: in a range, no static
// host's, and no record of another client that still holds it (a live
// lease or a quarantine).
func (p *Pool) free(a netip.Addr, c client, now time.Time) bool {
	if !p.inRange(a) || p.isStatic(a) {
		return false
	}
	l, ok := p.byIP[a]
	if !ok {
		return true
	}
	if !now.Before(l.Expiry) {
		return true
	}
	return !l.Declined && client{l.DUID, l.IAID} == c
}

// staticFree reports whether a static host's address a may go to its
// client c now: no other client's live lease of it (the operator added
// the host under a lease: that client is moved at its next Renew, and
// two guests must not use one address meanwhile) and no quarantine.
func (p *Pool) staticFree(a netip.Addr, c client, now time.Time) bool {
	l, ok := p.byIP[a]
	return !ok || !now.Before(l.Expiry) || (!l.Declined && client{l.DUID, l.IAID} == c)
}

// Offer is the address the pool would give the client's IA: its static
// host's, the one it holds (or last held, if still free), the hint it
// asked for when free, else a new one. ok is false when the ranges are
// full. Offer changes nothing.
func (p *Pool) Offer(duid string, iaid uint32, mac string, hint netip.Addr) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pick(duid, iaid, mac, hint, p.now())
}

func (p *Pool) pick(duid string, iaid uint32, mac string, hint netip.Addr, now time.Time) (netip.Addr, bool) {
	c := client{duid, iaid}
	if h, ok := p.Static(duid, mac); ok {
		return h.IP, p.staticFree(h.IP, c, now)
	}
	if a, ok := p.byClient[c]; ok && p.free(a, c, now) {
		return a, true
	}
	if hint.IsValid() && p.free(hint, c, now) {
		return hint, true
	}
	return p.fresh(c, now)
}

// fresh finds a free address for c: from a starting point derived from
// the client's DUID and IAID (the same client lands on the same address
// again while it is free, even after its lease is forgotten), then the
// next ProbeSpan addresses, in each range and up to ProbeTries starting
// points.
func (p *Pool) fresh(c client, now time.Time) (netip.Addr, bool) {
	for _, r := range p.cfg.Ranges {
		size := span(r)
		if size.Sign() <= 0 {
			continue
		}
		tries := ProbeTries
		if size.Cmp(big.NewInt(ProbeSpan)) <= 0 {
			tries = 1
		}
		for try := range tries {
			start := new(big.Int).Mod(seed(c, try), size)
			for i := int64(0); i < ProbeSpan && big.NewInt(i).Cmp(size) < 0; i++ {
				off := new(big.Int).Add(start, big.NewInt(i))
				off.Mod(off, size)
				if a := at(r.From, off); p.free(a, c, now) {
					return a, true
				}
			}
		}
	}
	return netip.Addr{}, false
}

// span is the number of addresses of r.
func span(r model.Range) *big.Int {
	from, to := toInt(r.From), toInt(r.To)
	return to.Sub(to, from).Add(to, big.NewInt(1))
}

func toInt(a netip.Addr) *big.Int { b := a.As16(); return new(big.Int).SetBytes(b[:]) }

func at(from netip.Addr, off *big.Int) netip.Addr {
	v := toInt(from)
	v.Add(v, off)
	var b [16]byte
	v.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

func seed(c client, try int) *big.Int {
	h := sha256.New()
	h.Write([]byte(c.duid))
	binary.Write(h, binary.BigEndian, c.iaid)
	binary.Write(h, binary.BigEndian, uint32(try))
	return new(big.Int).SetBytes(h.Sum(nil)[:16])
}

// Bind grants a the client's IA for the lease time (a Request, a Renew, a
// Rebind, a rapid-commit Solicit). It fails when a may not be the
// client's: not its static host's address, or outside the ranges, or held
// by another client. The caller stores the lease before it answers.
func (p *Pool) Bind(l dhcp.Lease6) (bound dhcp.Lease6, replaced []dhcp.Lease6, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	c := client{l.DUID, l.IAID}
	h, static := p.Static(l.DUID, l.MAC)
	if static {
		if l.IP != h.IP || !p.staticFree(l.IP, c, now) {
			return dhcp.Lease6{}, nil, false
		}
		l.Hostname = h.Name
	} else if !p.free(l.IP, c, now) || p.portFull(l.Port, c, l.IP, now) {
		return dhcp.Lease6{}, nil, false
	}
	if old, ok := p.byIP[l.IP]; ok && (client{old.DUID, old.IAID}) != c {
		replaced = append(replaced, old) // another client's expired lease, or a static address's stale one
	}
	if a, ok := p.byClient[c]; ok && a != l.IP {
		replaced = append(replaced, p.byIP[a])
	}
	if !static && l.Hostname != "" && p.nameTaken(l.Hostname, l.DUID, now) {
		l.Hostname = "" // another guest's name: the address is granted, the name is not
	}
	l.Expiry = now.Add(p.cfg.Lease)
	l.Declined = false
	p.put(l)
	return l, replaced, true
}

// PortFull reports whether giving a to the client's IA through port
// would exceed the port's cap (Config.PerPort): the live dynamic
// addresses other IAs hold through port, with the quarantines of the
// addresses declined through it, number PerPort or more. One guest
// inventing DUIDs, or asking for many IAs at once, cannot empty the range
// nor, with a /64 range that never runs dry, fill memory and leases.db.
// A static host, and an IA that holds a already (a renewal), is never
// refused. Port "" is the share of every client no port is known for.
func (p *Pool) PortFull(port, duid string, iaid uint32, mac string, a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.Static(duid, mac); ok {
		return false
	}
	return p.portFull(port, client{duid, iaid}, a, p.now())
}

func (p *Pool) portFull(port string, c client, a netip.Addr, now time.Time) bool {
	if p.cfg.PerPort <= 0 || p.isStatic(a) {
		return false
	}
	if l, ok := p.byIP[a]; ok && (client{l.DUID, l.IAID}) == c && !l.Declined && now.Before(l.Expiry) {
		return false // renewing
	}
	n := 0
	for _, l := range p.byIP {
		// A quarantine counts against the port of its decliner: a guest
		// declining every address it gets takes no more than its share.
		if l.Port == port && now.Before(l.Expiry) && (l.Declined || (client{l.DUID, l.IAID}) != c) && !p.isStatic(l.IP) {
			if n++; n >= p.cfg.PerPort {
				return true
			}
		}
	}
	return false
}

// NameHeld reports whether name belongs to a guest other than the one
// with mac ("" unknown: any holder is another): a static host's name, or
// a live lease's whose MAC is not mac. The DHCPv4 pool of the same
// network asks it (dhcp.Config.NameHeld): a name is one guest's in A and
// AAAA.
func (p *Pool) NameHeld(name, mac string) bool {
	if name == "" {
		return false
	}
	for _, h := range p.cfg.Hosts {
		if strings.EqualFold(h.Name, name) && (mac == "" || h.MAC != mac) {
			return true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, l := range p.byIP {
		if !l.Declined && now.Before(l.Expiry) && strings.EqualFold(l.Hostname, name) && (mac == "" || l.MAC != mac) {
			return true
		}
	}
	return false
}

// nameTaken reports whether name is a static host's or another client's
// live lease's (a guest cannot take over another guest's name).
func (p *Pool) nameTaken(name, duid string, now time.Time) bool {
	for _, h := range p.cfg.Hosts {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	for _, l := range p.byIP {
		if !l.Declined && l.DUID != duid && now.Before(l.Expiry) && strings.EqualFold(l.Hostname, name) {
			return true
		}
	}
	return false
}

// Lease is the live lease the client's IA holds, if any.
func (p *Pool) Lease(duid string, iaid uint32) (dhcp.Lease6, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.byClient[client{duid, iaid}]
	if !ok {
		return dhcp.Lease6{}, false
	}
	l := p.byIP[a]
	return l, !l.Declined && p.now().Before(l.Expiry)
}

// Holds reports whether the client's IA holds a now (a Renew or Rebind of
// an address it may keep).
func (p *Pool) Holds(duid string, iaid uint32, a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	return ok && !l.Declined && l.DUID == duid && l.IAID == iaid && p.now().Before(l.Expiry)
}

// Release ends the client's lease of a and forgets it: the caller
// deletes it from the store. Keeping the record would let a guest that
// takes and releases addresses with fresh DUIDs pile up records without
// bound (in a /64 range no address comes twice); the client gets the same
// address back while it is free all the same, from the hash of its DUID
// and IAID (fresh). The returned lease is the ended one (Expiry now).
func (p *Pool) Release(duid string, iaid uint32, a netip.Addr) (dhcp.Lease6, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if !ok || l.Declined || l.DUID != duid || l.IAID != iaid {
		return dhcp.Lease6{}, false
	}
	l.Expiry = p.now()
	delete(p.byIP, a)
	if p.byClient[client{duid, iaid}] == a {
		delete(p.byClient, client{duid, iaid})
	}
	return l, true
}

// Decline quarantines a, which the client found in use (duplicate
// address detection failed), for Quarantine.
func (p *Pool) Decline(duid string, iaid uint32, a netip.Addr) (dhcp.Lease6, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if !ok || l.Declined || l.DUID != duid || l.IAID != iaid {
		return dhcp.Lease6{}, false
	}
	q := dhcp.Lease6{DUID: "", IP: a, Expiry: p.now().Add(Quarantine), Declined: true,
		Port: l.Port, PortIndex: l.PortIndex, PortHW: l.PortHW} // the port's share (PortFull)
	delete(p.byClient, client{duid, iaid})
	p.byIP[a] = q
	return q, true
}

// Leases lists every record, by address.
func (p *Pool) Leases() []dhcp.Lease6 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]dhcp.Lease6, 0, len(p.byIP))
	for _, l := range p.byIP {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b dhcp.Lease6) int { return a.IP.Compare(b.IP) })
	return out
}

// Resolve is the address of a name: a static host's first, else a live
// lease's host name.
func (p *Pool) Resolve(name string) (netip.Addr, bool) {
	name = strings.ToLower(name)
	for _, h := range p.cfg.Hosts {
		if h.Name != "" && strings.ToLower(h.Name) == name {
			return h.IP, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resolveLocked(name)
}

// Reverse is the host name of an address: a static host's, else its live
// lease's.
func (p *Pool) Reverse(a netip.Addr) (string, bool) {
	for _, h := range p.cfg.Hosts {
		if h.IP == a && h.Name != "" {
			return h.Name, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if !ok || l.Declined || !p.now().Before(l.Expiry) || l.Hostname == "" {
		return "", false
	}
	if ip, ok := p.resolveLocked(l.Hostname); !ok || ip != a {
		return "", false // the name went to a newer lease
	}
	return l.Hostname, true
}

// resolveLocked is the live lease that holds name, the latest to expire
// when several do (the name's newest client).
func (p *Pool) resolveLocked(name string) (netip.Addr, bool) {
	if name == "" {
		return netip.Addr{}, false
	}
	now := p.now()
	var best dhcp.Lease6
	for _, l := range p.byIP {
		if !l.Declined && now.Before(l.Expiry) && strings.EqualFold(l.Hostname, name) &&
			(!best.IP.IsValid() || l.Expiry.After(best.Expiry)) {
			best = l
		}
	}
	return best.IP, best.IP.IsValid()
}
