package ra

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/guestnet/guestnet/internal/model"
)

// RFC 4861 §10 router constants.
const (
	// MaxInitialInterval and MaxInitialAdverts: the first RAs of a
	// network come at most this far apart, so that a guest that missed
	// the first hears the next soon.
	MaxInitialInterval = 16 * time.Second
	MaxInitialAdverts  = 3
	// MinDelayBetweenRAs is the least time between two multicast RAs.
	MinDelayBetweenRAs = 3 * time.Second
)

// UnicastPerSecond bounds the unicast answers to solicitations a bridge
// sends in a second; past it, solicitations share the next multicast RA
// (at most one per MinDelayBetweenRAs). A guest that floods solicitations
// costs the host a few packets a second, not one per solicitation.
const UnicastPerSecond = 20

// AllNodes and AllRouters are the link-local multicast groups of RAs and
// RSs.
var (
	AllNodes   = netip.MustParseAddr("ff02::1")
	AllRouters = netip.MustParseAddr("ff02::2")
)

// Conn is a bridge's ICMPv6 socket (*ndp.Conn), bound to its link-local
// address and joined to AllRouters.
type Conn interface {
	ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error)
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	Close() error
}

// ErrNotReady is what an Opener returns while the bridge has no usable
// link-local address (none yet: a bridge with no port up has none; or
// still tentative, in duplicate address detection). The advertiser tries
// again RetryOpen later.
var ErrNotReady = errors.New("the bridge's link-local address is not ready")

// RetryOpen is how long the advertiser waits before it opens the socket
// again after a failure.
const RetryOpen = 250 * time.Millisecond

// Opener opens the bridge's socket and says the bridge's hardware address.
type Opener func() (Conn, net.HardwareAddr, error)

// Advertiser sends one bridge's router advertisements until Stop.
type Advertiser struct {
	open Opener
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	ra       model.RA
	changed  chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // the last failure to open or send, nil once it works
	sent     uint64
	old      []deprecated // former prefixes, announced with lifetimes 0
	withdraw bool         // the final RA deprecates the prefix too
}

// Start begins advertising r on the bridge that open opens.
func Start(r model.RA, open Opener, log *slog.Logger) *Advertiser {
	return start(r, open, log, time.Now)
}

// start is Start with a clock (tests freeze it).
func start(r model.RA, open Opener, log *slog.Logger, now func() time.Time) *Advertiser {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Advertiser{open: open, log: log, now: now, ra: r, changed: make(chan struct{}, 1),
		cancel: cancel, done: make(chan struct{})}
	go a.run(ctx)
	return a
}

// Set changes what the RAs say; the new RA goes out at once (as far as
// MinDelayBetweenRAs allows), followed by MaxInitialAdverts quick ones
// (RFC 4861 §6.2.4).
func (a *Advertiser) Set(r model.RA) {
	a.mu.Lock()
	same := equalRA(a.ra, r)
	if was := a.ra.Prefix; was.IsValid() && was != r.Prefix {
		// Renumbered: the guests' addresses in the old prefix are
		// deprecated by the next RAs for as long as they could live.
		a.old = slices.DeleteFunc(a.old, func(d deprecated) bool { return d.prefix == was || d.prefix == r.Prefix })
		a.old = append(a.old, deprecated{prefix: was, until: a.now().Add(model.PrefixValid)})
		if len(a.old) > MaxDeprecated {
			a.old = a.old[len(a.old)-MaxDeprecated:]
		}
	}
	a.old = slices.DeleteFunc(a.old, func(d deprecated) bool { return d.prefix == r.Prefix })
	a.ra = r
	a.mu.Unlock()
	if !same {
		select {
		case a.changed <- struct{}{}:
		default:
		}
	}
}

// Stop sends the final RA (router lifetime 0) if the socket is open, closes
// it and waits for the advertiser to end.
func (a *Advertiser) Stop() {
	a.cancel()
	<-a.done
}

// Err is the last failure to open the socket or send, nil once it works.
func (a *Advertiser) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Sent counts the RAs sent.
func (a *Advertiser) Sent() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent
}

func (a *Advertiser) setErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && (a.err == nil || a.err.Error() != err.Error()) && !errors.Is(err, ErrNotReady) {
		a.log.Warn("router advertisements", "err", err)
	}
	a.err = err
}

func (a *Advertiser) current() model.RA {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ra
}

func (a *Advertiser) run(ctx context.Context) {
	defer close(a.done)
	for {
		c, mac, err := a.open()
		if err != nil {
			a.setErr(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(RetryOpen):
				continue
			}
		}
		a.setErr(nil)
		if !a.serve(ctx, c, mac) {
			return
		}
	}
}

// serve advertises on one open socket; it returns false when the
// advertiser stops, true when the socket failed (open it again).
func (a *Advertiser) serve(ctx context.Context, c Conn, mac net.HardwareAddr) bool {
	defer c.Close()
	rs := make(chan Solicitation, 64)
	readErr := make(chan error, 1)
	go read(c, rs, readErr, a.log)

	var (
		initial   = MaxInitialAdverts
		lastMulti time.Time
		window    time.Time // start of the current second of unicast answers
		unicasts  int
	)
	periodic := time.NewTimer(0) // the first RA at once
	defer periodic.Stop()
	soon := time.NewTimer(time.Hour) // a multicast answer held back by MinDelayBetweenRAs
	soon.Stop()
	defer soon.Stop()
	pending := false

	multicast := func() {
		if err := a.send(c, mac, AllNodes, false); err != nil {
			a.setErr(err)
		}
		lastMulti = a.now()
	}
	// answerSoon sends a multicast RA now if MinDelayBetweenRAs allows,
	// else once it does (one RA for every solicitation meanwhile).
	answerSoon := func() {
		if pending {
			return
		}
		if wait := MinDelayBetweenRAs - a.now().Sub(lastMulti); wait > 0 {
			pending = true
			soon.Reset(wait)
			return
		}
		multicast()
	}
	for {
		select {
		case <-ctx.Done():
			if err := a.send(c, mac, AllNodes, true); err != nil {
				a.log.Warn("router advertisements: the final RA", "err", err)
			}
			return false
		case err := <-readErr:
			a.setErr(err)
			return true
		case <-periodic.C:
			multicast()
			next := interval()
			if initial > 0 {
				initial--
				next = min(next, MaxInitialInterval)
			}
			periodic.Reset(next)
		case <-soon.C:
			pending = false
			multicast()
		case <-a.changed:
			initial = MaxInitialAdverts
			answerSoon()
		case s := <-rs:
			now := a.now()
			if now.Sub(window) >= time.Second {
				window, unicasts = now, 0
			}
			if s.Unicast() && unicasts < UnicastPerSecond {
				unicasts++
				if err := a.send(c, mac, s.From, false); err != nil {
					a.setErr(err)
				}
				continue
			}
			answerSoon()
		}
	}
}

// interval is the time to the next unsolicited RA: uniformly random
// between RAMinInterval and RAMaxInterval (RFC 4861 §6.2.4), so that
// routers on one link do not fall into step.
func interval() time.Duration {
	return model.RAMinInterval + rand.N(model.RAMaxInterval-model.RAMinInterval)
}

func (a *Advertiser) send(c Conn, mac net.HardwareAddr, dst netip.Addr, final bool) error {
	m := Build(a.current(), mac, final)
	a.mu.Lock()
	all := final && a.withdraw
	a.mu.Unlock()
	a.deprecate(m, all)
	if err := c.WriteTo(m, nil, dst); err != nil {
		return err
	}
	a.mu.Lock()
	a.sent++
	a.mu.Unlock()
	return nil
}

// read passes the valid solicitations to rs; an invalid one is dropped
// (logged at debug level), a full rs drops the solicitation (the next RA
// answers it too), and a socket error ends it.
func read(c Conn, rs chan<- Solicitation, fail chan<- error, log *slog.Logger) {
	b := make([]byte, 1500)
	for {
		n, cm, src, err := c.ReadRaw(b)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fail <- err
			}
			return
		}
		hop := -1
		if cm != nil {
			hop = cm.HopLimit
		}
		s, err := ParseRS(b[:n], hop, src)
		if err != nil {
			log.Debug("router advertisements: dropped", "from", src, "err", err)
			continue
		}
		select {
		case rs <- s:
		default:
		}
	}
}

func equalRA(a, b model.RA) bool {
	return a.RouterLifetime == b.RouterLifetime && a.Managed == b.Managed && a.Other == b.Other &&
		a.Prefix == b.Prefix && a.Autonomous == b.Autonomous && a.MTU == b.MTU &&
		slices.Equal(a.RDNSS, b.RDNSS) && slices.Equal(a.DNSSL, b.DNSSL)
}

// Withdraw is Stop for a network that goes away: its final RA also gives
// the prefix lifetimes 0 (guests stop using their addresses in it as
// sources and drop its on-link route; RFC 8978 §3).
func (a *Advertiser) Withdraw() {
	a.mu.Lock()
	a.withdraw = true
	a.mu.Unlock()
	a.Stop()
}

// MaxDeprecated bounds the former prefixes an advertiser still
// announces with lifetimes 0 (an operator renumbering over and over).
const MaxDeprecated = 8

// deprecated is a former prefix of the network, announced with lifetimes
// 0 until the guests' last addresses in it would have expired anyway.
type deprecated struct {
	prefix netip.Prefix
	until  time.Time
}

// deprecate adds a prefix option with lifetimes 0 to m for each former
// prefix still announced; all: the current prefix's lifetimes go to 0 too
// (Withdraw).
func (a *Advertiser) deprecate(m *ndp.RouterAdvertisement, all bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.old = slices.DeleteFunc(a.old, func(d deprecated) bool { return !now.Before(d.until) })
	if all {
		for _, o := range m.Options {
			if p, ok := o.(*ndp.PrefixInformation); ok {
				p.PreferredLifetime, p.ValidLifetime = 0, 0
			}
		}
	}
	for _, d := range a.old {
		m.Options = append(m.Options, &ndp.PrefixInformation{
			PrefixLength: uint8(d.prefix.Bits()), OnLink: true, AutonomousAddressConfiguration: d.prefix.Bits() == 64,
			Prefix: d.prefix.Masked().Addr(),
		})
	}
}
