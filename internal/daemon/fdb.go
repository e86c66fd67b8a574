package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
}

// dumpEvery bounds the dumps that misses cause: clients behind a relay or
// a test tool all miss, and one dump per request is what the cache is for.
const dumpEvery = time.Second

type fdbEntry struct{ bridge, port int }

func newFDB(k engine.Kernel) *fdb {
	return &fdb{links: k.Links, dump: k.FDB, where: map[string]fdbEntry{}, now: time.Now}
}

// watch keeps the table until ctx ends.
func (f *fdb) watch(ctx context.Context, ev Events) error {
	return ev.WatchNeigh(ctx, f.update)
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

// port names the port of bridge on which mac was learned, or "".
func (f *fdb) port(bridge, mac string) string {
	e, ok := f.lookup(mac)
	if !ok && f.refresh() {
		e, ok = f.lookup(mac)
	}
	if !ok {
		return ""
	}
	links, err := f.links()
	if err != nil {
		return ""
	}
	name := func(index int) string {
		for _, l := range links {
			if l.Index == index {
				return l.Name
			}
		}
		return ""
	}
	if name(e.bridge) != bridge {
		return ""
	}
	return name(e.port)
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

// masters maps every interface with a master to its master's name.
func (f *fdb) masters() (map[string]string, error) {
	links, err := f.links()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range links {
		if l.Master != "" {
			out[l.Name] = l.Master
		}
	}
	return out, nil
}
