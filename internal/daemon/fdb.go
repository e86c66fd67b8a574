package daemon

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
)

// fdb knows on which bridge port each MAC was last learned, from the
// kernel's forwarding-database notifications, so that naming a DHCP
// client's port costs a map lookup, not a netlink dump per request.
type fdb struct {
	mu    sync.RWMutex
	where map[string]fdbEntry // by MAC

	nlmu   sync.Mutex
	links  func() ([]model.Link, error)    // the kernel's links
	dump   func() ([]netlink.Neigh, error) // the kernel's table, on a miss
	now    func() time.Time
	dumped time.Time

	// synced are the links as last read (by masters, at each sync of the
	// leased bindings, or by port), by index: naming a request's port
	// costs no dump of every link when the port was there then.
	synced atomic.Pointer[map[int]model.Link]
	linkMu sync.Mutex // one dump at a time for port's misses

	// tap, when set, sees every notification too, and lost true when
	// the subscription was lost (the evpn service: one subscription per
	// daemon, as a second one's listing request reaches the first as a
	// message from a wrong sender and ends it).
	tap atomic.Pointer[func(u netlink.NeighUpdate, lost bool)]

	log      *slog.Logger
	lostWarn struct {
		last time.Time
		held int // subscriptions lost since the last warning
	}
}

// lostEvery bounds the warnings about a lost subscription: a guest that
// keeps flooding MACs makes one every few seconds.
const lostEvery = 10 * time.Second

// dumpEvery bounds the dumps that misses cause: clients behind a relay or
// a test tool all miss, and one dump per request is what the cache is for.
const dumpEvery = time.Second

type fdbEntry struct{ bridge, port int }

func newFDB(k engine.Kernel, log *slog.Logger) *fdb {
	return &fdb{links: k.Links, dump: k.FDB, where: map[string]fdbEntry{}, now: time.Now, log: log}
}

// watch keeps the table until ctx ends. A lost subscription (a guest
// flooding source MACs overflows its buffer) is taken up again, and the
// table is forgotten meanwhile: a MAC that moved while notifications were
// lost must not be placed on its old port. Until the new subscription's
// listing arrives, a lookup misses and reads the kernel's table.
func (f *fdb) watch(ctx context.Context, ev Events) {
	ev.WatchNeigh(ctx, func(u netlink.NeighUpdate) {
		f.update(u)
		if t := f.tap.Load(); t != nil {
			(*t)(u, false)
		}
	}, func(err error, retryIn time.Duration) {
		f.lost(err, retryIn)
		if t := f.tap.Load(); t != nil {
			(*t)(netlink.NeighUpdate{}, true)
		}
	})
}

// lost forgets the table and warns, at most once per lostEvery.
func (f *fdb) lost(err error, retryIn time.Duration) {
	f.mu.Lock()
	clear(f.where)
	f.mu.Unlock()
	f.nlmu.Lock()
	f.dumped = time.Time{} // the next miss reads the kernel's table at once
	w := &f.lostWarn
	w.held++
	now := f.now()
	if !w.last.IsZero() && now.Sub(w.last) < lostEvery {
		f.nlmu.Unlock()
		return
	}
	n := w.held
	w.last, w.held = now, 0
	f.nlmu.Unlock()
	f.log.Warn("anti-spoofing: lost the bridges' forwarding-database notifications (a guest flooding source MACs?); subscribing again",
		"err", err, "retry_in", retryIn, "lost_since_last_warning", n)
}

func (f *fdb) update(u netlink.NeighUpdate) {
	if u.Family != unix.AF_BRIDGE || u.MasterIndex == 0 || u.State&netlink.NUD_PERMANENT != 0 || len(u.HardwareAddr) != 6 {
		return // not a learned entry of a bridge port
	}
	mac := u.HardwareAddr.String()
	e := fdbEntry{bridge: u.MasterIndex, port: u.LinkIndex}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case u.Type != unix.RTM_DELNEIGH:
		f.where[mac] = e
	case f.where[mac] == e:
		delete(f.where, mac)
	}
}

// port identifies the port of bridge on which mac was learned (Name ""
// if none).
func (f *fdb) port(bridge, mac string) dhcp.PortID {
	e, ok := f.lookup(mac)
	if !ok && f.refresh() {
		e, ok = f.lookup(mac)
	}
	if !ok {
		return dhcp.PortID{}
	}
	seen := f.synced.Load()
	if id, ok := portIn(seen, e, bridge); ok {
		return id
	}
	// A port made since the last sync (or none yet): the kernel says,
	// and what it says serves the next requests too. Requests that miss
	// together share one dump.
	f.linkMu.Lock()
	defer f.linkMu.Unlock()
	if now := f.synced.Load(); now != seen {
		if id, ok := portIn(now, e, bridge); ok {
			return id
		}
	}
	links, err := f.links()
	if err != nil {
		return dhcp.PortID{}
	}
	f.remember(links)
	var br, p *model.Link
	for i := range links {
		switch links[i].Index {
		case e.bridge:
			br = &links[i]
		case e.port:
			p = &links[i]
		}
	}
	if br == nil || br.Name != bridge || p == nil || p.Master != bridge {
		return dhcp.PortID{}
	}
	return portID(*p)
}

// portID is a link's identity as a bridge port.
func portID(l model.Link) dhcp.PortID {
	return dhcp.PortID{Name: l.Name, Index: l.Index, HW: l.MAC}
}

func (f *fdb) lookup(mac string) (fdbEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e, ok := f.where[mac]
	return e, ok
}

// refresh reads the kernel's table into the cache, unless it did so less
// than dumpEvery ago. The bridge learns a returning client's MAC before
// its request reaches the DHCP socket, but the notification of that may
// still be unread when the request is handled.
func (f *fdb) refresh() bool {
	f.nlmu.Lock()
	defer f.nlmu.Unlock()
	if now := f.now(); now.Sub(f.dumped) >= dumpEvery {
		f.dumped = now
	} else {
		return false
	}
	ns, err := f.dump()
	if err != nil {
		return false
	}
	for _, n := range ns {
		f.update(netlink.NeighUpdate{Type: unix.RTM_NEWNEIGH, Neigh: n})
	}
	return true
}

// portIn is the port of entry e on bridge in m, if m has it there.
func portIn(m *map[int]model.Link, e fdbEntry, bridge string) (dhcp.PortID, bool) {
	if m == nil {
		return dhcp.PortID{}, false
	}
	br, okb := (*m)[e.bridge]
	p, okp := (*m)[e.port]
	if okb && okp && br.Name == bridge && p.Master == bridge {
		return portID(p), true
	}
	return dhcp.PortID{}, false
}

// remember keeps links, by index, for port.
func (f *fdb) remember(links []model.Link) {
	m := make(map[int]model.Link, len(links))
	for _, l := range links {
		m[l.Index] = l
	}
	f.synced.Store(&m)
}

// masters maps the name of every interface with a master to its master's
// name and its own identity.
func (f *fdb) masters() (map[string]portLink, error) {
	links, err := f.links()
	if err != nil {
		return nil, err
	}
	f.remember(links)
	out := map[string]portLink{}
	for _, l := range links {
		if l.Master != "" {
			out[l.Name] = portLink{bridge: l.Master, id: portID(l)}
		}
	}
	return out, nil
}
