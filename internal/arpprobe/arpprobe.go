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

// Prober probes one bridge. It is safe for concurrent use: concurrent
// probes share one socket, and one reader hands each answer to every
// probe waiting for that address.
type Prober struct {
	c    *arp.Client
	hw   net.HardwareAddr
	wait time.Duration
	now  func() time.Time

	mu      sync.Mutex
	waiting map[netip.Addr][]chan string
	cache   map[netip.Addr]result
	closed  bool
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
		hw = ifi.HardwareAddr
		c, err = arp.Dial(ifi) // binds AF_PACKET to the bridge, ETH_P_ARP
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("arp socket on %s: %w", bridge, err)
	}
	p := &Prober{c: c, hw: hw, wait: wait, now: time.Now,
		waiting: map[netip.Addr][]chan string{}, cache: map[netip.Addr]result{}}
	go p.read()
	return p, nil
}

// Close closes the socket; probes under way return what they have.
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
	ch := make(chan string, 1)
	p.mu.Lock()
	if r, ok := p.cache[a]; ok && p.now().Before(r.until) {
		p.mu.Unlock()
		return r.mac, nil
	}
	if p.closed {
		p.mu.Unlock()
		return "", errors.New("arp probe: socket closed")
	}
	p.waiting[a] = append(p.waiting[a], ch)
	p.mu.Unlock()

	req, err := arp.NewPacket(arp.OperationRequest, p.hw, netip.IPv4Unspecified(), zeroMAC, a)
	if err == nil {
		err = p.c.WriteTo(req, ethernet.Broadcast)
	}
	if err != nil {
		p.forget(a, ch)
		return "", fmt.Errorf("arp probe %v: %w", a, err)
	}
	again := time.NewTimer(p.wait / 2)
	defer again.Stop()
	done := time.NewTimer(p.wait)
	defer done.Stop()
	for {
		select {
		case mac := <-ch:
			return mac, nil
		case <-again.C:
			p.c.WriteTo(req, ethernet.Broadcast) // the first may have been lost
		case <-done.C:
			p.forget(a, ch)
			select {
			case mac := <-ch: // answered as the wait ended
				return mac, nil
			default:
			}
			p.remember(a, "")
			return "", nil
		}
	}
}

func (p *Prober) forget(a netip.Addr, ch chan string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiting[a]
	for i, c := range w {
		if c == ch {
			w = append(w[:i], w[i+1:]...)
			break
		}
	}
	if len(w) == 0 {
		delete(p.waiting, a)
	} else {
		p.waiting[a] = w
	}
}

func (p *Prober) remember(a netip.Addr, mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rememberLocked(a, mac)
}

func (p *Prober) rememberLocked(a netip.Addr, mac string) {
	now := p.now()
	if len(p.cache) > 4096 {
		for k, r := range p.cache {
			if !now.Before(r.until) {
				delete(p.cache, k)
			}
		}
	}
	p.cache[a] = result{mac: mac, until: now.Add(CacheFor)}
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
		p.answer(pkt.SenderIP, pkt.SenderHardwareAddr.String())
	}
}

func (p *Prober) answer(a netip.Addr, mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.waiting[a]
	if !ok {
		return
	}
	for _, ch := range w {
		select {
		case ch <- mac:
		default:
		}
	}
	delete(p.waiting, a)
	p.rememberLocked(a, mac)
}
