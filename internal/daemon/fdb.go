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

	// The links as last listed, by index: naming a port costs a map
	// lookup, not a dump of every link per request (which, under a burst
	// of new clients on many ports, queued the DHCP handlers behind one
	// netlink socket). Every sync of the learned sets lists them again
	// (masters), and so does a lookup the table cannot answer.
	linkMu  sync.Mutex // one listing at a time; later misses reuse it
	linkTab atomic.Pointer[map[int]model.Link]

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
	ev.WatchNeigh(ctx, f.update, f.lost)
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
// if none). The port's link comes from the table of the last listing; a
// port that table does not know in bridge (new, or moved between bridges)
// makes a new listing. A port renamed in place keeps its old name until
// the next sync of the learned sets, which every link event causes: the
// name a lease binds is then judged again by its index and address, as
// Holders judges it.
func (f *fdb) port(bridge, mac string) dhcp.PortID {
	e, ok := f.lookup(mac)
	if !ok && f.refresh() {
		e, ok = f.lookup(mac)
	}
	if !ok {
		return dhcp.PortID{}
	}
	tab := f.linkTab.Load()
	if tab == nil || !inBridge(*tab, e, bridge) {
		var err error
		if tab, err = f.relist(tab); err != nil {
			return dhcp.PortID{}
		}
	}
	if !inBridge(*tab, e, bridge) {
		return dhcp.PortID{}
	}
	return portID((*tab)[e.port])
}

// inBridge reports whether the entry's bridge is named bridge and its
// port is a port of it, by the links of tab.
func inBridge(tab map[int]model.Link, e fdbEntry, bridge string) bool {
	br, okb := tab[e.bridge]
	p, okp := tab[e.port]
	return okb && okp && br.Name == bridge && p.Master == bridge
}

// relist lists the links into the table, unless another caller did since
// seen was loaded: a burst of misses costs one listing.
func (f *fdb) relist(seen *map[int]model.Link) (*map[int]model.Link, error) {
	f.linkMu.Lock()
	defer f.linkMu.Unlock()
	if tab := f.linkTab.Load(); tab != nil && tab != seen {
		return tab, nil
	}
	_, tab, err := f.list()
	return tab, err
}

// list lists the kernel's links and keeps them as the table.
func (f *fdb) list() ([]model.Link, *map[int]model.Link, error) {
	links, err := f.links()
	if err != nil {
		return nil, nil, err
	}
	tab := make(map[int]model.Link, len(links))
	for _, l := range links {
		tab[l.Index] = l
	}
	f.linkTab.Store(&tab)
	return links, &tab, nil
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
//
// A lookup that finds a dump under way does not wait for it (false): a
// dump of a bridge with thousands of learned MACs takes long, and under a
// burst of new clients every handler queued behind it; the caller looks
// again after its short wait (Handler.locateID), when the dump or the
// notification has filled the table.
func (f *fdb) refresh() bool {
	if !f.nlmu.TryLock() {
		return false
	}
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

// masters maps the name of every interface with a master to its master's
// name and its own identity, and renews the table port reads.
func (f *fdb) masters() (map[string]portLink, error) {
	f.linkMu.Lock()
	links, _, err := f.list()
	f.linkMu.Unlock()
	if err != nil {
		return nil, err
	}
	out := map[string]portLink{}
	for _, l := range links {
		if l.Master != "" {
			out[l.Name] = portLink{bridge: l.Master, id: portID(l)}
		}
	}
	return out, nil
}
