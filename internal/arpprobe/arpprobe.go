// Package arpprobe asks a bridge whether anyone answers for an IPv4
// address, before the DHCP server offers an address it has no record of
// (ISC dhcpd and dnsmasq ping; ARP reaches a guest whose firewall drops
// pings). Requests are RFC 5227 probes: sender address 0.0.0.0, so no
// neighbour cache on the link learns anything from them, and Linux and
// Windows guests answer them like any request.
package arpprobe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/guestnet/guestnet/internal/netns"
)

// Wait is how long a probe waits for an answer. A guest on a local bridge
// answers within a millisecond (the e2e test logs it); the rest is margin
// for a loaded VM. Two requests go out, at 0 and Wait/2, against a lost
// frame.
const Wait = 200 * time.Millisecond

// CacheFor is how long an answer (or a silence) is remembered, so that
// a client's repeated DISCOVER does not probe again.
const CacheFor = 5 * time.Second

// minPruneAt is the cache size below which stale results are not swept.
const minPruneAt = 4096

// Prober probes one bridge. It is safe for concurrent use: probes share
// one socket, one reader hands each answer to the probe of that address,
// and a probe asked for while one of the same address is under way joins
// it.
type Prober struct {
	c    *arp.Client
	hw   net.HardwareAddr
	wait time.Duration
	now  func() time.Time

	mu       sync.Mutex
	inflight map[netip.Addr]*probe
	cache    map[netip.Addr]result
	pruneAt  int // the cache size that makes finish sweep out stale results
	closed   bool
}

// probe is one address's check under way; done closes when someone
// answered, the wait ran out, or the request could not be sent.
type probe struct {
	done chan struct{}
	mac  string
	err  error
}

type result struct {
	mac   string
	until time.Time
}

// Open opens a raw ARP socket on bridge inside ns (the socket stays in the
// namespace it was made in). wait is Wait unless a test says otherwise.
func Open(ns *netns.NS, bridge string, wait time.Duration) (*Prober, error) {
	var c *arp.Client
	var hw net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(bridge)
		if err != nil {
			return err
		}
		// The MAC is a slice of the whole link dump Go's net package read
		// (every link of the namespace): a copy keeps only its 6 bytes.
		hw = slices.Clone(ifi.HardwareAddr)
		ifc := *ifi
		ifc.HardwareAddr = hw
		c, err = arp.Dial(&ifc) // binds AF_PACKET to the bridge, ETH_P_ARP
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("arp socket on %s: %w", bridge, err)
	}
	return newProber(c, hw, wait), nil
}

// newProber starts the reader of c; hw is the bridge's MAC, the sender of
// the probes.
func newProber(c *arp.Client, hw net.HardwareAddr, wait time.Duration) *Prober {
	p := &Prober{c: c, hw: hw, wait: wait, now: time.Now, pruneAt: minPruneAt,
		inflight: map[netip.Addr]*probe{}, cache: map[netip.Addr]result{}}
	go p.read()
	return p
}

// Close closes the socket; probes under way end at their wait.
func (p *Prober) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.c.Close()
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// Probe returns the MAC of whoever answers ARP for a within the wait, ""
// when no one does.
func (p *Prober) Probe(a netip.Addr) (string, error) {
	if !a.Is4() {
		return "", fmt.Errorf("arp probe %v: not an IPv4 address", a)
	}
	pr, r, cached := p.start(a)
	if cached {
		return r.mac, nil
	}
	<-pr.done
	return pr.mac, pr.err
}

// Prefetch starts probes of the addresses without waiting for them: their
// results are cached for the Probe that comes when they are offered.
func (p *Prober) Prefetch(as []netip.Addr) {
	for _, a := range as {
		if a.Is4() {
			p.start(a)
		}
	}
}

// start returns the cached result for a, or the probe of a under way,
// starting it if there is none.
func (p *Prober) start(a netip.Addr) (*probe, result, bool) {
	p.mu.Lock()
	if r, ok := p.cache[a]; ok && p.now().Before(r.until) {
		p.mu.Unlock()
		return nil, r, true
	}
	if pr, ok := p.inflight[a]; ok {
		p.mu.Unlock()
		return pr, result{}, false
	}
	pr := &probe{done: make(chan struct{})}
	if p.closed {
		p.mu.Unlock()
		pr.err = errors.New("arp probe: socket closed")
		close(pr.done)
		return pr, result{}, false
	}
	p.inflight[a] = pr
	p.mu.Unlock()

	req, err := arp.NewPacket(arp.OperationRequest, p.hw, netip.IPv4Unspecified(), zeroMAC, a)
	if err == nil {
		err = p.c.WriteTo(req, ethernet.Broadcast)
	}
	if err != nil {
		p.finish(a, pr, "", fmt.Errorf("arp probe %v: %w", a, err))
		return pr, result{}, false
	}
	time.AfterFunc(p.wait/2, func() {
		select {
		case <-pr.done:
		default:
			p.c.WriteTo(req, ethernet.Broadcast) // the first may have been lost
		}
	})
	time.AfterFunc(p.wait, func() { p.finish(a, pr, "", nil) })
	return pr, result{}, false
}

// finish ends the probe of a, if it is still under way: with the MAC that
// answered, with "" when the wait ran out, or with an error (not cached).
func (p *Prober) finish(a netip.Addr, pr *probe, mac string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight[a] != pr {
		return
	}
	delete(p.inflight, a)
	pr.mac, pr.err = mac, err
	if err == nil {
		now := p.now()
		if len(p.cache) > p.pruneAt {
			for k, r := range p.cache {
				if !now.Before(r.until) {
					delete(p.cache, k)
				}
			}
			// The next sweep waits until the cache has doubled: at 1,000
			// probes a second the live results alone exceed 4,096, and a
			// sweep at every probe (under the lock every probe takes)
			// queued the DHCP handlers behind it.
			p.pruneAt = max(minPruneAt, 2*len(p.cache))
		}
		p.cache[a] = result{mac: mac, until: now.Add(CacheFor)}
	}
	close(pr.done)
}

// read takes every ARP frame on the bridge. Any frame whose sender claims
// an address being probed, from another MAC than ours, is an answer:
// a reply, but also a gratuitous ARP or the holder's own request.
func (p *Prober) read() {
	for {
		pkt, _, err := p.c.Read()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// A frame that is not ARP over Ethernet/IPv4, or a bridge
			// that went away (syncDHCP closes us then): do not spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !pkt.SenderIP.Is4() || pkt.SenderIP.IsUnspecified() || pkt.SenderHardwareAddr.String() == p.hw.String() {
			continue
		}
		p.mu.Lock()
		pr := p.inflight[pkt.SenderIP]
		p.mu.Unlock()
		if pr != nil {
			p.finish(pkt.SenderIP, pr, pkt.SenderHardwareAddr.String(), nil)
		}
	}
}
