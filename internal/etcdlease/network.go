package etcdlease

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// Sink is where a network's leases go as the watch sees them: the
// network's DHCP pool (*dhcp.Pool).
type Sink interface {
	Apply(dhcp.Lease)
	Forget(netip.Addr) (dhcp.Lease, bool)
	Replace([]dhcp.Lease)
}

var _ Sink = (*dhcp.Pool)(nil)

// Network is one stretched network's share of the cluster: the blocks of
// its range, their owners, the leases and their key revisions, as the
// watch keeps them. It is the pool's dhcp.Allocator.
type Network struct {
	c      *Client
	name   string
	ranges []model.Range
	blocks []model.Range // every block of the ranges
	ctx    context.Context
	stop   context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	sink   Sink
	owners map[netip.Addr]blockRec // block's first address -> owner
	leases map[netip.Addr]dhcp.Lease
	revs   map[netip.Addr]int64 // lease key -> its mod revision, as last seen
	// floor: lease key -> the revision of the last change seen (a write,
	// a delete): a watch event older than it is stale.
	floor map[netip.Addr]int64
	// flight is the claim of a block in progress (Grow, Ahead), nil when
	// none: one at a time, its callers share its answer.
	flight    *flight
	aheadRest time.Time // no claim ahead before then (none was free)
	// mine: the blocks this host owns, in range order, as Blocks last
	// computed them; nil when owners changed since.
	mine []model.Range
	bg   sync.WaitGroup
	// layoutWarned: ErrLayout was logged once (Grow runs per DISCOVER
	// while the pool is full).
	layoutWarned atomic.Bool
}

var _ dhcp.Allocator = (*Network)(nil)

func newNetwork(c *Client, name string, ranges []model.Range) *Network {
	ctx, stop := context.WithCancel(c.ctx)
	n := &Network{c: c, name: name, ranges: slices.Clone(ranges), blocks: Blocks(ranges, c.cfg.Block),
		ctx: ctx, stop: stop, done: make(chan struct{}),
		owners: map[netip.Addr]blockRec{}, leases: map[netip.Addr]dhcp.Lease{}, revs: map[netip.Addr]int64{}, floor: map[netip.Addr]int64{}}
	go n.watch()
	return n
}

func (n *Network) close() {
	n.stop()
	<-n.done
	n.bg.Wait()
}

// Attach makes s the network's sink (its pool) and gives it the leases
// known so far.
func (n *Network) Attach(s Sink) {
	n.mu.Lock()
	n.sink = s
	ls := n.list()
	n.mu.Unlock()
	s.Replace(ls)
}

// Leases returns the leases as last seen, by address.
func (n *Network) Leases() []dhcp.Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.list()
}

func (n *Network) list() []dhcp.Lease {
	out := make([]dhcp.Lease, 0, len(n.leases))
	for _, l := range n.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b dhcp.Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// Held lists every block of the network with an owner, and the live
// leases inside each.
func (n *Network) Held() []model.LeaseBlock {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.c.cfg.Now()
	var out []model.LeaseBlock
	for _, b := range n.blocks {
		o, ok := n.owners[b.From]
		if !ok {
			continue
		}
		lb := model.LeaseBlock{Network: n.name, First: b.From, Last: b.To, Host: o.Host}
		for a, l := range n.leases {
			if b.Contains(a) && now.Before(l.Expiry) {
				lb.Leases++
			}
		}
		out = append(out, lb)
	}
	return out
}

// Blocks (dhcp.Allocator) are the blocks this host owns. It reads memory
// only (the pool calls it under its lock, on every DISCOVER): the list is
// kept as owners change (mineNow), not walked from all the range's blocks.
func (n *Network) Blocks() []model.Range {
	if !n.c.named.Load() {
		return nil // another process may hold this host's name: its blocks are not ours yet
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mine == nil {
		n.mine = []model.Range{}
		for _, b := range n.blocks {
			if o, ok := n.owners[b.From]; ok && o.Host == n.c.cfg.Host {
				n.mine = append(n.mine, b)
			}
		}
	}
	return slices.Clone(n.mine)
}

// blockOf is the block that holds a.
func (n *Network) blockOf(a netip.Addr) (model.Range, bool) {
	for _, b := range n.blocks {
		if b.Contains(a) {
			return b, true
		}
	}
	return model.Range{}, false
}

// decodeLease reads a lease value; its address must be its key's.
func decodeLease(a netip.Addr, v []byte) (dhcp.Lease, bool) {
	var l dhcp.Lease
	if err := json.Unmarshal(v, &l); err != nil || l.IP != a {
		return l, false
	}
	return l, true
}

// watch keeps the network's state: a full read, then the changes from the
// revision after it; on any end of the watch (an error, a compaction, a
// lost leader), a full read again.
func (n *Network) watch() {
	defer close(n.done)
	for n.ctx.Err() == nil {
		rev, err := n.reload()
		if err != nil {
			n.c.cfg.Log.Debug("leases: read of a network's leases failed; trying again", "network", n.name, "err", err)
			sleep(n.ctx, time.Second)
			continue
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
		for resp := range n.c.cli.Watch(wctx, n.c.keys.net(n.name), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				n.c.cfg.Log.Debug("leases: watch ended; reading everything again", "network", n.name, "err", resp.Err())
				break
			}
			for _, ev := range resp.Events {
				n.event(ev)
			}
		}
		cancel()
		sleep(n.ctx, 200*time.Millisecond)
	}
}

// reload reads the network's blocks and leases whole and hands the leases
// to the sink.
func (n *Network) reload() (int64, error) {
	ctx, cancel := n.c.op()
	defer cancel()
	resp, err := n.c.cli.Get(ctx, n.c.keys.net(n.name), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	owners, leases, revs := map[netip.Addr]blockRec{}, map[netip.Addr]dhcp.Lease{}, map[netip.Addr]int64{}
	for _, kv := range resp.Kvs {
		_, kind, a, ok := n.c.keys.parse(string(kv.Key))
		if !ok {
			continue
		}
		switch kind {
		case "block":
			var b blockRec
			if json.Unmarshal(kv.Value, &b) == nil {
				owners[a] = b
			}
		case "lease":
			if l, ok := decodeLease(a, kv.Value); ok {
				leases[a], revs[a] = l, kv.ModRevision
			}
		}
	}
	n.mu.Lock()
	n.owners, n.leases, n.revs, n.floor = owners, leases, revs, maps.Clone(revs)
	n.mine = nil
	sink, ls := n.sink, n.list()
	n.mu.Unlock()
	if sink != nil {
		sink.Replace(ls)
	}
	return resp.Header.Revision, nil
}

// event applies one change seen by the watch.
func (n *Network) event(ev *clientv3.Event) {
	_, kind, a, ok := n.c.keys.parse(string(ev.Kv.Key))
	if !ok {
		return
	}
	put := ev.Type == mvccpb.PUT
	n.mu.Lock()
	switch kind {
	case "block":
		var b blockRec
		if put && json.Unmarshal(ev.Kv.Value, &b) == nil {
			n.owners[a] = b
		} else {
			delete(n.owners, a)
		}
		n.mine = nil
		n.mu.Unlock()
		return
	case "lease":
	default:
		n.mu.Unlock()
		return
	}
	if ev.Kv.ModRevision < n.floor[a] {
		n.mu.Unlock()
		return // older than what a write of this host already saw
	}
	var l dhcp.Lease
	if put {
		if l, ok = decodeLease(a, ev.Kv.Value); !ok {
			n.mu.Unlock()
			return
		}
		n.leases[a], n.revs[a] = l, ev.Kv.ModRevision
	} else {
		delete(n.leases, a)
		delete(n.revs, a)
	}
	n.floor[a] = ev.Kv.ModRevision
	sink := n.sink
	n.mu.Unlock()
	if sink == nil {
		return
	}
	if put {
		sink.Apply(l)
	} else {
		sink.Forget(a)
	}
}
