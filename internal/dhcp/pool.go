// Package dhcp is guestnet's DHCPv4 server: an address pool per network
// (pure, with an injected clock), the protocol handler that turns requests
// into replies, a durable lease store (bbolt, group commit) and the socket
// loop bound to one bridge. A lease is on disk before its ACK leaves.
package dhcp

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// Lease is one address bound to a client, or kept out of the pool
// (Declined: quarantined after a DECLINE, or abandoned with MAC "" after
// an unknown host answered for it).
type Lease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
	Expiry   time.Time  `json:"expiry"`
	Declined bool       `json:"declined,omitempty"`
	// Port is the bridge port the client sent its REQUEST from, when
	// known: anti-spoofing binds that port to the lease. PortIndex and
	// PortHW tell that link from a later one of the same name (libvirt
	// reuses vnetN names): the binding holds only while a port of that
	// name has that ifindex and address. A lease without them (written
	// before they were kept) binds nothing until the client renews.
	Port      string `json:"port,omitempty"`
	PortIndex int    `json:"port_index,omitempty"`
	PortHW    string `json:"port_hw,omitempty"`
	// Host is the host that wrote the lease, for a stretched network's
	// leases kept in etcd (Config.Host); "" for a local network.
	Host string `json:"host,omitempty"`
}

// PortID is one link's identity as a bridge port: its name, ifindex and
// own hardware address. An ifindex is not reused while its namespace
// lives; the address tells apart links of namespaces that did not (a
// host's reboot), libvirt deriving a TAP's from its guest's MAC.
type PortID struct {
	Name  string
	Index int
	HW    string
}

// PortID is the port identity l was bound with.
func (l Lease) PortID() PortID { return PortID{Name: l.Port, Index: l.PortIndex, HW: l.PortHW} }

// live reports whether l still holds its address at now.
func (l Lease) live(now time.Time) bool { return now.Before(l.Expiry) }

// Config is what a network's pool serves.
type Config struct {
	Network string
	Server  netip.Prefix // the bridge address: server identifier, router, subnet
	model.DHCP
	// NameHeld reports whether a host name belongs to a guest other than
	// the one with this MAC in the network's other family (DHCPv6 leases
	// and static hosts): a name is one guest's in A and AAAA. nil: no
	// other family. Called without the pool's lock.
	NameHeld func(name, mac string) bool `json:"-"`
	// Host is this host's name in a lease cluster (a stretched network):
	// the pool's leases carry it (Lease.Host). "" for a local network.
	Host string
	// Blocks, when set, restricts the addresses the pool gives to new
	// clients to the blocks it grants (a stretched network's share of
	// the range). nil: the whole range.
	Blocks Allocator `json:"-"`
}

// Allocator grants a pool the parts of its ranges it may hand out to new
// clients (etcdlease claims blocks of a stretched network's range in etcd).
// An address outside them is given only to the client whose record it
// already is (a guest that moved here renews with its address), or, when
// Grow says no span is left (ErrNoSpan), borrowed: see OfferFrom.
type Allocator interface {
	// Blocks are the spans the pool may allocate from now. It is called
	// with the pool's lock held: it MUST NOT block on I/O nor call the
	// pool.
	Blocks() []model.Range
	// Grow claims one more span; the pool calls it, without its lock,
	// when no address of its spans is free for a new client, and looks
	// again when it returns. It is single-flight: a caller that comes
	// while a claim is in flight waits for that claim and claims nothing
	// itself (a burst of DISCOVERs claims one span, not one each). It
	// returns an error when no span could be had: wrapping ErrNoSpan when
	// every span has an owner, else why (the cluster is out of reach).
	Grow() error
	// Reserve is how many free addresses the pool keeps in its spans: when
	// an offer leaves fewer, the pool calls Ahead. 0: no claim ahead.
	Reserve() int
	// Ahead claims one more span in the background (so that a DISCOVER
	// rarely waits for the cluster), unless a claim is in flight. It is
	// called with the pool's lock held: it MUST NOT block nor call the
	// pool in its own goroutine.
	Ahead()
}

// ErrNoSpan is an Allocator's answer when every span of the range has an
// owner: the pool may then borrow a free address in another host's span.
var ErrNoSpan = errors.New("no block of the range is free: each has a live owner or live leases inside")

// growTries bounds OfferFrom's rounds of Grow and look again: in a burst
// the span one claim brought may be taken by the clients that waited for
// it.
const growTries = 4

// Quarantine is how long a declined or abandoned address is kept out of
// the pool.
const Quarantine = 10 * time.Minute

// OfferHold is how long an offered address stays reserved for its client.
const OfferHold = 60 * time.Second

type offer struct {
	ip    netip.Addr
	until time.Time
	port  string // the bridge port the DISCOVER came from, "" if unknown
	// borrowed: an address outside the allocator's spans, which the pool
	// borrowed for this client (OfferFrom): its REQUEST may take it.
	borrowed bool
}

// Pool hands out the addresses of one network. It is safe for concurrent
// use; it does no I/O.
//
// It keeps one record per address (a live lease, an expired one that
// remembers its last client, or a quarantine) and these invariants, which
// every method preserves:
//   - byIP and byMAC agree: byMAC[m] == a exactly when byIP[a] is a
//     client record (not Declined) of m. So a client has at most one
//     address per network, live or expired, and an address at most one
//     client: a record that is overwritten or removed takes its byMAC
//     entry with it.
//   - offers and held agree the same way (one outstanding offer per
//     client, one client per held address).
//   - no address is under a live record and a live offer of two
//     different clients, and static and server addresses never go to
//     anyone but their owner (a lease loaded from a store written before
//     a static host was added keeps its address until it expires; its
//     renewal is NAKed).
//   - byName indexes every record's host name, in lower case; no two
//     live client leases carry one name, nor one a static host of another
//     MAC has.
//
// Expiry needs no timer: a record counts as live only while now is
// before its Expiry, in every decision and in Free, Resolve and Reverse.
type Pool struct {
	mu     sync.Mutex
	cfg    Config
	now    func() time.Time
	byIP   map[netip.Addr]Lease
	byMAC  map[string]netip.Addr
	byName map[string][]netip.Addr // lower-case host name -> the records carrying it
	offers map[string]offer        // by MAC
	held   map[netip.Addr]string
	// portRecs and portOffers index records and offers by their port, so
	// that the per-port cap (portFull) reads one port's entries, not the
	// whole pool's: the cap is checked on every DISCOVER and REQUEST.
	portRecs   map[string]map[netip.Addr]struct{}
	portOffers map[string]map[string]struct{} // port -> MACs
	static     map[string]model.StaticHost    // by MAC
	fixed      map[netip.Addr]bool            // static addresses
	cursor     netip.Addr                     // next never-tried address
}

// NewPool makes a pool holding the given leases (from the store). A store
// written by an older guestnet may hold two client records for one MAC or
// one host name on two live leases: the record with the later expiry
// stays the client's (the others are dropped), and a name stays on the
// lowest address that holds it (a static host's name on the static host).
func NewPool(cfg Config, now func() time.Time, leases []Lease) *Pool {
	p := &Pool{cfg: cfg, now: now, byIP: map[netip.Addr]Lease{}, byMAC: map[string]netip.Addr{}, byName: map[string][]netip.Addr{},
		offers: map[string]offer{}, held: map[netip.Addr]string{},
		portRecs: map[string]map[netip.Addr]struct{}{}, portOffers: map[string]map[string]struct{}{}, static: map[string]model.StaticHost{}, fixed: map[netip.Addr]bool{}}
	for _, h := range cfg.Hosts {
		p.static[h.MAC] = h
		p.fixed[h.IP] = true
	}
	leases = slices.Clone(leases)
	slices.SortStableFunc(leases, func(a, b Lease) int { return a.Expiry.Compare(b.Expiry) })
	for _, l := range leases {
		if !l.IP.IsValid() {
			continue
		}
		// A store written before host names were checked may hold any
		// bytes: only a name CleanHostname keeps is served.
		l.Hostname, _ = CleanHostname(l.Hostname)
		p.set(l) // a later expiry replaces the client's earlier record
	}
	t := now()
	names := map[string]bool{}
	for _, a := range p.addrs() {
		l := p.byIP[a]
		if l.Hostname == "" || !l.live(t) {
			continue // an expired lease's name is checked again when renewed
		}
		k := strings.ToLower(l.Hostname)
		if l.Declined || names[k] || p.staticName(l.Hostname, l.MAC) {
			p.drop(a)
			l.Hostname = ""
			p.put(l)
		} else {
			names[k] = true
		}
	}
	if len(cfg.Ranges) > 0 {
		p.cursor = cfg.Ranges[0].From
	}
	return p
}

// Config returns the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// addrs returns the addresses that have a record, in order.
func (p *Pool) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(p.byIP))
	for a := range p.byIP {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// set stores l as the record of its address, keeping the indexes in
// step. It returns the client's earlier record at another address, which
// a client record ends (one address per client); the caller tells the
// store.
func (p *Pool) set(l Lease) (ended Lease) {
	p.drop(l.IP)
	if !l.Declined {
		if old, ok := p.byMAC[l.MAC]; ok {
			ended = p.byIP[old]
			p.drop(old)
		}
		p.byMAC[l.MAC] = l.IP
		p.unhold(l.MAC) // a bound client has no offer outstanding
	}
	if m, ok := p.held[l.IP]; ok {
		p.unhold(m) // no one else's offer survives on a bound or quarantined address
	}
	p.put(l)
	return ended
}

// put stores l at an address that has no record, with its index entries.
func (p *Pool) put(l Lease) {
	p.byIP[l.IP] = l
	index(p.portRecs, l.Port, l.IP)
	if !l.Declined {
		p.byMAC[l.MAC] = l.IP
	}
	if l.Hostname != "" {
		k := strings.ToLower(l.Hostname)
		p.byName[k] = append(p.byName[k], l.IP)
	}
}

// drop removes the record of a, with its index entries.
func (p *Pool) drop(a netip.Addr) {
	l, ok := p.byIP[a]
	if !ok {
		return
	}
	delete(p.byIP, a)
	unindex(p.portRecs, l.Port, a)
	if !l.Declined && p.byMAC[l.MAC] == a {
		delete(p.byMAC, l.MAC)
	}
	if l.Hostname != "" {
		k := strings.ToLower(l.Hostname)
		if rest := slices.DeleteFunc(p.byName[k], func(x netip.Addr) bool { return x == a }); len(rest) > 0 {
			p.byName[k] = rest
		} else {
			delete(p.byName, k)
		}
	}
}

// unhold withdraws mac's outstanding offer.
func (p *Pool) unhold(mac string) {
	if o, ok := p.offers[mac]; ok {
		delete(p.offers, mac)
		unindex(p.portOffers, o.port, mac)
		if p.held[o.ip] == mac {
			delete(p.held, o.ip)
		}
	}
}

// hold records mac's offer, which must be its only one (unhold first).
func (p *Pool) hold(mac string, o offer) {
	p.offers[mac], p.held[o.ip] = o, mac
	index(p.portOffers, o.port, mac)
}

// index adds k to the entries of port in idx; unindex removes it.
func index[K comparable](idx map[string]map[K]struct{}, port string, k K) {
	m := idx[port]
	if m == nil {
		m = map[K]struct{}{}
		idx[port] = m
	}
	m[k] = struct{}{}
}

func unindex[K comparable](idx map[string]map[K]struct{}, port string, k K) {
	if m := idx[port]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(idx, port)
		}
	}
}

// heldBy returns the client whose live offer holds a.
func (p *Pool) heldBy(a netip.Addr, now time.Time) (string, bool) {
	m, ok := p.held[a]
	return m, ok && now.Before(p.offers[m].until)
}

// inRange reports whether a is one of the range addresses.
func (p *Pool) inRange(a netip.Addr) bool {
	return slices.ContainsFunc(p.cfg.Ranges, func(r model.Range) bool { return r.Contains(a) })
}

// dynamic reports whether a is an address of the ranges the pool may give
// to any client: not the server's, not a static host's.
func (p *Pool) dynamic(a netip.Addr) bool {
	return p.inRange(a) && a != p.cfg.Server.Addr() && !p.fixed[a]
}

// usable reports whether a may go to mac now.
func (p *Pool) usable(a netip.Addr, mac string, now time.Time) bool {
	if h, ok := p.static[mac]; ok {
		if a != h.IP {
			return false
		}
	} else if !p.dynamic(a) {
		return false
	}
	l, rec := p.byIP[a]
	if rec && l.live(now) && (l.Declined || l.MAC != mac) {
		return false // bound to another client, or quarantined (even for its decliner)
	}
	if m, ok := p.heldBy(a, now); ok && m != mac {
		return false
	}
	if _, ok := p.static[mac]; !ok && p.cfg.Blocks != nil && !(rec && !l.Declined && l.MAC == mac) && !p.granted(a) && !p.offered(a, mac, now) {
		return false // not this host's to give: only to the client whose record it is, or a borrowed offer's
	}
	return true
}

// offered reports whether a is mac's live offer (outside the spans: an
// address the pool borrowed for it).
func (p *Pool) offered(a netip.Addr, mac string, now time.Time) bool {
	o, ok := p.offers[mac]
	return ok && o.borrowed && o.ip == a && now.Before(o.until)
}

// Offered reports whether a live offer of this pool holds a (offers are
// this host's alone: the cluster never sees them).
func (p *Pool) Offered(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, held := p.heldBy(a, p.now())
	return held
}

// granted reports whether a lies in a span the allocator granted.
func (p *Pool) granted(a netip.Addr) bool {
	return slices.ContainsFunc(p.cfg.Blocks.Blocks(), func(r model.Range) bool { return r.Contains(a) })
}

// Offer picks an address for a DISCOVER and holds it for the client. ok is
// false when the pool is exhausted. The order is ISC dhcpd's: a static
// host's address; the client's own lease, live or expired; its
// outstanding offer; the address it asks for, if no one has held it; a
// never-used address; the longest-expired record.
func (p *Pool) Offer(mac string, requested netip.Addr) (netip.Addr, bool) {
	a, err := p.OfferFrom(mac, requested, "")
	return a, err == nil
}

// ErrExhausted and ErrPortFull are why OfferFrom has no address.
var (
	ErrExhausted = errors.New("no address to offer")
	ErrPortFull  = errors.New("the port holds its share of the pool")
)

// OfferFrom is Offer for a client whose DISCOVER came from port. When the
// port already holds PerPort dynamic addresses for other clients (live
// leases and outstanding offers), the client gets nothing (ErrPortFull):
// one guest cannot empty the pool by inventing client MACs. A static host
// and a client that already has its address are never refused.
//
// port "" is a client the bridge cannot place: its chaddr is not a MAC the
// bridge learnt, as when a guest sends from its own MAC in the name of
// invented ones. All such clients share one share of PerPort, so that
// they cannot empty the pool either; an honest client is placed (the
// bridge learns its MAC from the DISCOVER itself).
func (p *Pool) OfferFrom(mac string, requested netip.Addr, port string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	a, ok := p.pick(mac, requested, now)
	borrowed := false
	for try := 0; !ok && p.cfg.Blocks != nil && try < growTries; try++ {
		// The granted spans are full: claim another, without the lock
		// (a round trip to the cluster), and look again.
		p.mu.Unlock()
		err := p.cfg.Blocks.Grow()
		p.mu.Lock()
		now = p.now()
		if errors.Is(err, ErrNoSpan) {
			if a, ok = p.pick(mac, requested, now); !ok {
				a, ok = p.borrow(mac, now)
				borrowed = ok
			}
			break
		}
		if err != nil {
			return netip.Addr{}, errors.Join(ErrExhausted, err)
		}
		a, ok = p.pick(mac, requested, now)
	}
	if !ok {
		return a, ErrExhausted
	}
	if p.portFull(port, mac, a, now) {
		return netip.Addr{}, ErrPortFull
	}
	if o, ok := p.offers[mac]; ok && o.ip == a && o.borrowed && now.Before(o.until) {
		borrowed = true // the client's borrowed offer, made again
	}
	p.unhold(mac)
	if m, ok := p.held[a]; ok {
		p.unhold(m) // an expired offer of another client
	}
	p.hold(mac, offer{ip: a, until: now.Add(OfferHold), port: port, borrowed: borrowed})
	p.ahead(now)
	return a, nil
}

// ahead asks the allocator to claim the next span in the background when
// an offer left fewer free addresses in the granted spans than its
// Reserve.
func (p *Pool) ahead(now time.Time) {
	if p.cfg.Blocks == nil {
		return
	}
	if r := p.cfg.Blocks.Reserve(); r > 0 && p.spare(r, now) < r {
		p.cfg.Blocks.Ahead()
	}
}

// spare counts the addresses of the granted spans a new client could be
// offered now, up to limit (the count stops there: a host with many
// spans does not walk them all on every offer). It walks the last spans
// first: spans are claimed in range order and filled from the first, so
// the free addresses are mostly in the last.
func (p *Pool) spare(limit int, now time.Time) int {
	n := 0
	for _, r := range slices.Backward(p.cfg.Blocks.Blocks()) {
		for a := r.From; a.IsValid() && r.Contains(a); a = a.Next() {
			if p.free(a, now) {
				if n++; n >= limit {
					return n
				}
			}
		}
	}
	return n
}

// free reports whether a new client could get a: a dynamic address with
// no live record (lease or quarantine) and no live offer.
func (p *Pool) free(a netip.Addr, now time.Time) bool {
	if !p.dynamic(a) {
		return false
	}
	if l, ok := p.byIP[a]; ok && l.live(now) {
		return false
	}
	_, held := p.heldBy(a, now)
	return !held
}

// Spare is how many addresses of the granted spans a new client could be
// offered now, counted up to limit: the allocator reads it before a claim
// (a span is claimed only when the host's are really full).
func (p *Pool) Spare(limit int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Blocks == nil {
		return 0
	}
	return p.spare(limit, p.now())
}

// borrow picks a free address outside this host's spans, in another
// host's, when no span is left to claim (Calico's IPAM with strict
// affinity off does the same): a cluster does not refuse a client while
// its range has a free address. The pool sees every host's leases (the
// cluster's watch), so it skips addresses with a live lease or
// quarantine anywhere, and its own live offers; another host's offers it
// cannot see. That is safe: the lease is written with a compare-and-swap
// on the address's key before the ACK, so of two hosts that offered one
// address, the second REQUEST is NAKed and its client starts again. To
// make such races rare, the walk starts at a random address (two
// borrowing hosts seldom pick the same one) and prefers addresses with no
// record over expired ones (the owner gives those first, from its spans'
// start).
func (p *Pool) borrow(mac string, now time.Time) (netip.Addr, bool) {
	if _, ok := p.static[mac]; ok {
		return netip.Addr{}, false
	}
	size := p.Size()
	if size == 0 {
		return netip.Addr{}, false
	}
	a := p.cfg.Ranges[0].From
	for skip := rand.IntN(size); skip > 0; skip-- {
		a = p.next(a)
	}
	var expired netip.Addr
	for range size {
		if p.free(a, now) {
			if _, rec := p.byIP[a]; !rec {
				return a, true
			}
			if !expired.IsValid() {
				expired = a
			}
		}
		a = p.next(a)
	}
	return expired, expired.IsValid()
}

// portFull reports whether giving a to mac from port would exceed the
// port's cap: the distinct other clients holding a dynamic address
// through port (a live lease or a live offer) number PerPort or more.
// The client's own live lease or offer at a is no new address: never
// refused. Port "" is the share of the clients no port is known for.
func (p *Pool) portFull(port, mac string, a netip.Addr, now time.Time) bool {
	if p.cfg.PerPort <= 0 || !p.dynamic(a) {
		return false
	}
	if _, ok := p.static[mac]; ok {
		return false
	}
	if l, ok := p.byIP[a]; ok && l.MAC == mac && !l.Declined && l.live(now) {
		return false // renewing
	}
	if o, ok := p.offers[mac]; ok && o.ip == a && now.Before(o.until) {
		return false // taking its own offer
	}
	// Each client has at most one record and one offer (the invariants):
	// the holders are counted without a set, a client with both a live
	// record and a live offer through port once, and the count stops at
	// the cap.
	n := 0
	for ip := range p.portRecs[port] {
		if l := p.byIP[ip]; l.MAC != mac && !l.Declined && l.live(now) && p.dynamic(ip) {
			if n++; n >= p.cfg.PerPort {
				return true
			}
		}
	}
	for m := range p.portOffers[port] {
		if o := p.offers[m]; m != mac && now.Before(o.until) && p.dynamic(o.ip) && !p.holdsThrough(m, port, now) {
			if n++; n >= p.cfg.PerPort {
				return true
			}
		}
	}
	return false
}

// holdsThrough reports whether mac's record is a live dynamic lease
// through port (portFull counts it there already).
func (p *Pool) holdsThrough(mac, port string, now time.Time) bool {
	a, ok := p.byMAC[mac]
	if !ok {
		return false
	}
	l := p.byIP[a]
	return l.Port == port && !l.Declined && l.live(now) && p.dynamic(a)
}

func (p *Pool) pick(mac string, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if h, ok := p.static[mac]; ok {
		return h.IP, p.usable(h.IP, mac, now)
	}
	if a, ok := p.byMAC[mac]; ok && p.usable(a, mac, now) {
		return a, true // the same client gets its address back
	}
	if o, ok := p.offers[mac]; ok && p.usable(o.ip, mac, now) {
		return o.ip, true
	}
	if requested.IsValid() && p.usable(requested, mac, now) {
		if l, taken := p.byIP[requested]; !taken || l.MAC == mac && !l.Declined {
			return requested, true
		}
	}
	if a, ok := p.fresh(mac, now); ok {
		return a, true
	}
	// No never-used address left: take the longest-expired record.
	var best netip.Addr
	var bestExp time.Time
	for a, l := range p.byIP {
		if p.usable(a, mac, now) && (!best.IsValid() || l.Expiry.Before(bestExp) || l.Expiry.Equal(bestExp) && a.Less(best)) {
			best, bestExp = a, l.Expiry
		}
	}
	return best, best.IsValid()
}

// fresh walks the ranges from the cursor for an address no one has held.
func (p *Pool) fresh(mac string, now time.Time) (netip.Addr, bool) {
	if p.cfg.Blocks != nil {
		// Only the granted spans: a small walk, whatever the ranges' size.
		// usable, for a granted address with no record and a client that
		// is not a static host (pick answered those), is dynamic and not
		// another client's offer: checked here without asking the
		// allocator for its spans again at every address.
		for _, r := range p.cfg.Blocks.Blocks() {
			for a := r.From; a.IsValid() && r.Contains(a); a = a.Next() {
				if _, leased := p.byIP[a]; leased || !p.dynamic(a) {
					continue
				}
				if m, held := p.heldBy(a, now); !held || m == mac {
					return a, true
				}
			}
		}
		return netip.Addr{}, false
	}
	a := p.cursor
	for i := 0; i < p.Size() && a.IsValid(); i++ {
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

// Binding is what a Bind changed, so that the caller can store it or undo
// it.
type Binding struct {
	Lease Lease // the new lease
	Prev  Lease // the record the lease replaced at its address, if any
	// Ended is the client's record at another address, which the new
	// lease ended (a client holds one address per network): the caller
	// deletes it from the store.
	Ended Lease
	// NameTaken is the host name the client asked for and did not get,
	// because another client's live lease or a static host holds it.
	NameTaken string
	// PortFull is why Bind refused: the port already holds its share of
	// the pool (OfferFrom).
	PortFull bool
	// offer is the client's outstanding offer the lease consumed: Unbind
	// gives it back, so that the client's retry finds its address held.
	offer *offer
}

// Bind makes a the client's lease (REQUEST). ok is false when a may not
// go to mac, which the server answers with a NAK: another client's live
// lease or outstanding offer holds it, it is quarantined, it is a static
// host's, the server's, or outside the ranges. A client that had a lease
// elsewhere moves (ISC dhcpd and Kea do the same). The lease is in the
// pool at once; the caller persists it and calls Unbind if that fails.
// port is the bridge port the REQUEST came from; "" (not known) keeps
// the port of the lease being renewed. A hostname of "" keeps the name
// of the lease being renewed; a name another client holds is not taken
// over (the lease gets none, and NameTaken says so).
func (p *Pool) Bind(mac string, a netip.Addr, hostname, port string) (Binding, bool) {
	return p.BindPort(mac, a, hostname, PortID{Name: port})
}

// BindPort is Bind with the port's whole identity (see Lease.PortIndex).
func (p *Pool) BindPort(mac string, a netip.Addr, hostname string, port PortID) (Binding, bool) {
	hostname, _ = CleanHostname(hostname) // the handler logs a refusal
	var elsewhere string
	if hostname != "" && p.cfg.NameHeld != nil && p.cfg.NameHeld(hostname, mac) {
		elsewhere, hostname = hostname, "" // another guest's AAAA: not this one's A
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.usable(a, mac, now) {
		return Binding{}, false
	}
	if p.portFull(port.Name, mac, a, now) {
		return Binding{PortFull: true}, false
	}
	prev, had := p.byIP[a]
	renew := had && prev.MAC == mac && !prev.Declined
	if port.Name == "" && renew {
		port = prev.PortID()
	}
	if hostname == "" && renew {
		hostname = prev.Hostname
	}
	b := Binding{Prev: prev}
	if o, ok := p.offers[mac]; ok {
		b.offer = &o
	}
	if hostname != "" && p.nameHeld(hostname, mac, now) {
		b.NameTaken, hostname = hostname, ""
	}
	if elsewhere != "" {
		b.NameTaken = elsewhere
	}
	b.Lease = Lease{MAC: mac, IP: a, Hostname: hostname, Expiry: now.Add(p.cfg.Lease),
		Port: port.Name, PortIndex: port.Index, PortHW: port.HW, Host: p.cfg.Host}
	b.Ended = p.set(b.Lease)
	return b, true
}

// NameHeld reports whether name belongs to a client other than mac ("":
// any client): a static host's name or another client's live lease. The
// DHCPv6 pool of the same network asks it (dhcp6.Config.NameHeld).
func (p *Pool) NameHeld(name, mac string) bool {
	if name == "" {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nameHeld(name, mac, p.now())
}

// nameHeld reports whether name belongs to a client other than mac: a
// static host's name or another client's live lease. Case-insensitive.
func (p *Pool) nameHeld(name, mac string, now time.Time) bool {
	if p.staticName(name, mac) {
		return true
	}
	for _, a := range p.byName[strings.ToLower(name)] {
		if l := p.byIP[a]; !l.Declined && l.MAC != mac && l.live(now) {
			return true
		}
	}
	return false
}

// staticName reports whether name is a static host's of a MAC other than mac.
func (p *Pool) staticName(name, mac string) bool {
	return slices.ContainsFunc(p.cfg.Hosts, func(h model.StaticHost) bool {
		return h.MAC != mac && h.Name != "" && strings.EqualFold(h.Name, name)
	})
}

// Unbind undoes a Bind whose lease could not be stored. It leaves alone
// what other requests changed meanwhile: only a record that is still the
// one Bind made is taken back, and a replaced record comes back only where
// nothing took its place.
func (p *Pool) Unbind(b Binding) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.byIP[b.Lease.IP]; !ok || cur != b.Lease {
		return
	}
	now := p.now()
	p.drop(b.Lease.IP)
	for _, l := range []Lease{b.Prev, b.Ended} {
		if !l.IP.IsValid() {
			continue
		}
		if _, taken := p.byIP[l.IP]; taken {
			continue
		}
		if _, has := p.byMAC[l.MAC]; has && !l.Declined {
			continue
		}
		if m, ok := p.heldBy(l.IP, now); ok && m != l.MAC && l.live(now) {
			continue // offered to someone else meanwhile
		}
		p.put(l) // as it was: another client's offer stays
	}
	if o, m := b.offer, b.Lease.MAC; o != nil {
		_, again := p.offers[m]
		_, taken := p.heldBy(o.ip, now)
		if !again && !taken {
			if other, ok := p.held[o.ip]; ok {
				p.unhold(other) // an expired offer
			}
			p.hold(m, *o)
		}
	}
}

// Release frees a client's address (RELEASE). It returns the lease that
// was removed, if any: only the client that holds the address can free it.
func (p *Pool) Release(mac string, a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byIP[a]
	if !ok || l.MAC != mac || l.Declined {
		return Lease{}, false
	}
	p.drop(a)
	return l, true
}

// Decline quarantines an address a client found in use (DECLINE). As in
// Kea, only the client that holds the address (its live lease or its
// outstanding offer) may decline it; a DECLINE from anyone else changes
// nothing and ok is false.
func (p *Pool) Decline(mac string, a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	l, leased := p.byIP[a]
	o, offered := p.offers[mac]
	owns := leased && !l.Declined && l.MAC == mac && l.live(now) ||
		offered && o.ip == a && now.Before(o.until)
	if !owns {
		return Lease{}, false
	}
	q := Lease{MAC: mac, IP: a, Expiry: now.Add(Quarantine), Declined: true, Host: p.cfg.Host}
	p.set(q)
	return q, true
}

// Abandon keeps a out of the pool for the Quarantine period because an
// unknown host uses it (an ARP probe before an offer got an answer). The
// record is Declined with MAC "". An address under a client's live lease
// is left alone (the host that answered is most likely that client), as
// are addresses the pool does not hand out. ok says whether a was
// abandoned; the caller stores the returned record.
func (p *Pool) Abandon(a netip.Addr) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if !p.dynamic(a) {
		return Lease{}, false
	}
	if l, ok := p.byIP[a]; ok && !l.Declined && l.live(now) {
		return Lease{}, false
	}
	q := Lease{IP: a, Expiry: now.Add(Quarantine), Declined: true, Host: p.cfg.Host}
	p.set(q)
	return q, true
}

// ReclaimAfter is how long an abandoned address stays out of the pool at
// least: when the pool runs dry, the oldest abandoned address past it is
// given back (Reclaim) instead of leaving clients without an address for
// the whole Quarantine.
const ReclaimAfter = time.Minute

// Reclaim is the last resort of an exhausted pool (ISC dhcpd reclaims
// abandoned leases the same way): it ends the quarantine of the address
// abandoned longest ago, at least ReclaimAfter ago, and holds it for mac
// as Offer does. The address then has no record, so NeedsCheck says to
// probe it again before the offer leaves. ErrExhausted when there is no
// such address (and for a static host, which has its own), ErrPortFull as
// for OfferFrom. Declined addresses are not reclaimed: a client said it
// found them in use.
func (p *Pool) Reclaim(mac, port string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.static[mac]; ok {
		return netip.Addr{}, ErrExhausted
	}
	now := p.now()
	var best netip.Addr
	var bestExp time.Time
	for a, l := range p.byIP {
		if !l.Declined || l.MAC != "" || !l.live(now) || !p.dynamic(a) || now.Sub(l.Expiry.Add(-Quarantine)) < ReclaimAfter ||
			p.cfg.Blocks != nil && !p.granted(a) {
			continue
		}
		if _, held := p.heldBy(a, now); held {
			continue
		}
		if !best.IsValid() || l.Expiry.Before(bestExp) || l.Expiry.Equal(bestExp) && a.Less(best) {
			best, bestExp = a, l.Expiry
		}
	}
	if !best.IsValid() {
		return best, ErrExhausted
	}
	if p.portFull(port, mac, best, now) {
		return netip.Addr{}, ErrPortFull
	}
	p.drop(best)
	p.unhold(mac)
	if m, ok := p.held[best]; ok {
		p.unhold(m)
	}
	p.hold(mac, offer{ip: best, until: now.Add(OfferHold), port: port})
	return best, nil
}

// Lookup returns the record of mac's address (live or expired), if any.
func (p *Pool) Lookup(mac string) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.byMAC[mac]
	if !ok {
		return Lease{}, false
	}
	return p.byIP[a], true
}

// Resolve returns the address of a guest name: a static host's, else the
// live lease that carries it. Case-insensitive.
func (p *Pool) Resolve(name string) (netip.Addr, bool) {
	if name == "" {
		return netip.Addr{}, false
	}
	for _, h := range p.cfg.Hosts {
		if strings.EqualFold(h.Name, name) {
			return h.IP, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, a := range p.byName[strings.ToLower(name)] {
		if l := p.byIP[a]; !l.Declined && l.live(now) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Reverse returns the guest name of an address: a static host's, else
// the one its live lease carries.
func (p *Pool) Reverse(a netip.Addr) (string, bool) {
	for _, h := range p.cfg.Hosts {
		if h.IP == a && h.Name != "" {
			return h.Name, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.byIP[a]; ok && !l.Declined && l.Hostname != "" && l.live(p.now()) {
		return l.Hostname, true
	}
	return "", false
}

// Leases returns every record, sorted by address: live and expired leases
// and quarantined addresses.
func (p *Pool) Leases() []Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Lease, 0, len(p.byIP))
	for _, a := range p.addrs() {
		out = append(out, p.byIP[a])
	}
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

// Free is the number of addresses that could be offered to a new client
// now: range addresses that are not the server's or a static host's, not
// under a live lease or quarantine, and not held by an outstanding offer.
// It is 0 exactly when a DISCOVER from a new client goes unanswered.
func (p *Pool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	n := 0
	for _, r := range p.cfg.Ranges {
		for a := r.From; a.IsValid() && r.Contains(a); a = a.Next() {
			if p.usable(a, "", now) {
				n++
			}
		}
	}
	return n
}
