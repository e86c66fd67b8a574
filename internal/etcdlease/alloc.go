package etcdlease

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// ErrNoBlock is Grow's answer when every block of the range has an owner
// that is alive, or still holds live leases: the pool then borrows an
// address in another host's block (dhcp.ErrNoSpan).
var ErrNoBlock = dhcp.ErrNoSpan

// ErrTaken is Put's answer when the address is another client's live
// lease (or a live quarantine) in the cluster: the pool learns of it, and
// the client gets no ACK.
var ErrTaken = errors.New("the address is held by another client's live lease in etcd")

// flight is one claim of a block, which concurrent callers share.
type flight struct {
	done chan struct{}
	err  error
}

// aheadPause is how long claims ahead rest after one found no block free:
// every offer of a host low on addresses would otherwise read the
// cluster's blocks again.
const aheadPause = 5 * time.Second

// Grow (dhcp.Allocator) claims one more block, single-flight: a caller
// that comes while a claim is in flight (another DISCOVER's, or a claim
// ahead) waits for it and returns its answer without claiming, and the
// pool looks again. So a burst of DISCOVERs claims one block, and a host
// does not hoard blocks that another host then lacks.
func (n *Network) Grow() error {
	f, lead := n.join()
	if !lead {
		<-f.done
		return f.err
	}
	n.land(f, n.grow(1))
	return f.err
}

// Reserve (dhcp.Allocator) is a quarter of a block: the pool calls Ahead
// when an offer leaves fewer free addresses in this host's blocks.
func (n *Network) Reserve() int { return max(1, n.c.cfg.Block/4) }

// Ahead (dhcp.Allocator) claims the next block in the background unless a
// claim is in flight (or the last claim ahead found none free, less than
// aheadPause ago). It does not block: the pool calls it under its lock.
func (n *Network) Ahead() {
	n.mu.Lock()
	if n.flight != nil || n.c.cfg.Now().Before(n.aheadRest) || n.ctx.Err() != nil {
		n.mu.Unlock()
		return
	}
	f := &flight{done: make(chan struct{})}
	n.flight = f
	n.bg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.bg.Done()
		err := n.grow(n.Reserve())
		if errors.Is(err, ErrNoBlock) {
			n.mu.Lock()
			n.aheadRest = n.c.cfg.Now().Add(aheadPause)
			n.mu.Unlock()
		}
		if err != nil {
			n.c.cfg.Log.Debug("leases: no block claimed ahead", "network", n.name, "err", err)
		}
		n.land(f, err)
	}()
}

// join returns the claim in flight, or starts one (lead).
func (n *Network) join() (f *flight, lead bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.flight != nil {
		return n.flight, false
	}
	n.flight = &flight{done: make(chan struct{})}
	return n.flight, true
}

// land ends the claim f with err and wakes its waiters.
func (n *Network) land(f *flight, err error) {
	n.mu.Lock()
	f.err = err
	if n.flight == f {
		n.flight = nil
	}
	n.mu.Unlock()
	close(f.done)
}

// grow claims a block when this host's blocks are really full: fewer
// than want free addresses in them, as the pool counts (leases,
// quarantines and outstanding offers are not free). A claim that ended
// just before may have brought them.
func (n *Network) grow(want int) error {
	n.mu.Lock()
	sink := n.sink
	n.mu.Unlock()
	if s, ok := sink.(interface{ Spare(int) int }); ok && s.Spare(want) >= want {
		return nil
	}
	return n.claimOne()
}

// claimOne claims the first block that no one owns, with a
// create-if-absent; else the first whose owner's liveness key is gone
// and whose leases have all expired (reclaim), with a transaction that
// fails if the block's owner, the owner's liveness or any lease inside
// changed since they were read.
func (n *Network) claimOne() error {
	if err := n.c.waitNamed(); err != nil {
		return err
	}
	ctx, cancel := n.c.op()
	defer cancel()
	resp, err := n.c.cli.Get(ctx, n.c.keys.blocks(n.name), clientv3.WithPrefix())
	if err != nil {
		return n.c.unreachable("claim a block of "+n.name, err)
	}
	owned := map[netip.Addr]*blockSeen{}
	for _, kv := range resp.Kvs {
		_, _, a, ok := n.c.keys.parse(string(kv.Key))
		var b blockRec
		if ok && json.Unmarshal(kv.Value, &b) == nil {
			owned[a] = &blockSeen{rec: b, rev: kv.ModRevision}
		}
	}
	for _, b := range n.blocks {
		if s, ok := owned[b.From]; ok {
			if s.rec.Host == n.c.cfg.Host && !n.known(b.From) {
				n.setOwner(b.From, s.rec) // this host's already (a restart): the watch has not said yet
				return nil
			}
			continue
		}
		if n.foreign(b, owned) {
			continue
		}
		won, err := n.claim(b, clientv3.Compare(clientv3.CreateRevision(n.c.keys.block(n.name, b.From)), "=", 0))
		if err != nil || won {
			return err
		}
	}
	return n.reclaim(owned)
}

// span is the range of addresses a block key in etcd stands for: from
// its key to its record's last address (the owner's cut of the range).
func (s *blockSeen) span(first netip.Addr) model.Range {
	last, err := netip.ParseAddr(s.rec.Last)
	if err != nil || last.Less(first) {
		last = first
	}
	return model.Range{From: first, To: last}
}

// foreign reports whether b overlaps a block in etcd that is not b
// itself: one cut with another leases.block or dhcp range (an operator
// changed it on one host of a live cluster). Such a b is never claimed,
// and the mismatch is logged once.
func (n *Network) foreign(b model.Range, owned map[netip.Addr]*blockSeen) bool {
	for first, s := range owned {
		o := s.span(first)
		if o == b || o.To.Less(b.From) || b.To.Less(o.From) {
			continue
		}
		if !n.layoutWarned.Swap(true) {
			n.c.cfg.Log.Warn("leases: blocks in etcd were cut with another leases.block or dhcp range than this host's; blocks that overlap them are not claimed (give every host the same leases.block and range, or a new leases.prefix)",
				"network", n.name, "block", fmt.Sprintf("%s-%s", b.From, b.To), "overlaps", fmt.Sprintf("%s-%s", o.From, o.To), "owner", s.rec.Host, "block_size", n.c.cfg.Block)
		}
		return true
	}
	return false
}

// blockSeen is a block key as Grow read it.
type blockSeen struct {
	rec blockRec
	rev int64
}

// reclaim takes the first block whose owner is dead and whose leases have
// all expired.
func (n *Network) reclaim(owned map[netip.Addr]*blockSeen) error {
	ctx, cancel := n.c.op()
	defer cancel()
	hosts, err := n.c.cli.Get(ctx, n.c.keys.hosts(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return n.c.unreachable("claim a block of "+n.name, err)
	}
	alive := map[string]bool{}
	for _, kv := range hosts.Kvs {
		alive[string(kv.Key)] = true
	}
	now := n.c.cfg.Now()
	for _, b := range n.blocks {
		s, ok := owned[b.From]
		if !ok || alive[n.c.keys.host(s.rec.Host)] || s.span(b.From) != b {
			continue // alive, or cut another way: its leases are not all in b
		}
		start, end := n.c.keys.leaseRange(n.name, b)
		ls, err := n.c.cli.Get(ctx, start, clientv3.WithRange(end))
		if err != nil {
			return n.c.unreachable("claim a block of "+n.name, err)
		}
		if liveInside(ls.Kvs, now) {
			continue
		}
		won, err := n.claim(b,
			clientv3.Compare(clientv3.ModRevision(n.c.keys.block(n.name, b.From)), "=", s.rev),
			clientv3.Compare(clientv3.CreateRevision(n.c.keys.host(s.rec.Host)), "=", 0),
			clientv3.Compare(clientv3.ModRevision(start), "<", ls.Header.Revision+1).WithRange(end))
		if err != nil || won {
			if won {
				n.c.cfg.Log.Info("leases: reclaimed a block of a host that is gone, its leases expired",
					"network", n.name, "first", b.From, "last", b.To, "from", s.rec.Host)
			}
			return err
		}
	}
	return fmt.Errorf("claim a block of %s (%d blocks of %d addresses): %w", n.name, len(n.blocks), n.c.cfg.Block, ErrNoBlock)
}

// liveInside reports whether any of the lease records is live at now.
func liveInside(kvs []*mvccpb.KeyValue, now time.Time) bool {
	for _, kv := range kvs {
		var l dhcp.Lease
		if json.Unmarshal(kv.Value, &l) == nil && now.Before(l.Expiry) {
			return true
		}
	}
	return false
}

// claim writes this host as b's owner if cmps hold; won says whether they
// did.
func (n *Network) claim(b model.Range, cmps ...clientv3.Cmp) (won bool, err error) {
	rec := blockRec{Host: n.c.cfg.Host, Claimed: n.c.cfg.Now().UTC(), Last: b.To.String()}
	v, _ := json.Marshal(rec)
	ctx, cancel := n.c.op()
	defer cancel()
	resp, err := n.c.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(n.c.keys.block(n.name, b.From), string(v))).Commit()
	if err != nil {
		return false, n.c.unreachable("claim a block of "+n.name, err)
	}
	if resp.Succeeded {
		n.setOwner(b.From, rec)
		n.c.cfg.Log.Info("leases: claimed a block", "network", n.name, "first", b.From, "last", b.To, "host", rec.Host)
	}
	return resp.Succeeded, nil
}

// known reports whether the block at first is this host's in the cache.
func (n *Network) known(first netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.owners[first].Host == n.c.cfg.Host
}

func (n *Network) setOwner(first netip.Addr, rec blockRec) {
	n.mu.Lock()
	n.owners[first] = rec
	n.mine = nil
	n.mu.Unlock()
}

// Put writes l (a lease, a renewal, a quarantine) before its ACK, with
// this host as its writer. The transaction compares the key's revision
// with the one last seen; when someone wrote it meanwhile, the record
// there decides: another client's live lease or a live quarantine fails
// the write (ErrTaken, and the pool learns the record); else the write is
// tried again over it.
func (n *Network) Put(l dhcp.Lease) error {
	l.Host = n.c.cfg.Host
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	k := n.c.keys.lease(n.name, l.IP)
	n.mu.Lock()
	rev, seen := n.revs[l.IP], n.leases[l.IP]
	n.mu.Unlock()
	if rev != 0 && holds(seen, l, n.c.cfg.Now()) {
		// The watch saw another client's live lease at that revision, but
		// the pool had not when it bound the address (two hosts that
		// believe they own one block): comparing the revision alone would
		// write over it.
		n.learn(seen, rev)
		return fmt.Errorf("store the lease of %s for %s: %w (%s, written by %s, until %s)",
			l.IP, l.MAC, ErrTaken, describe(seen), seen.Host, seen.Expiry.Format("15:04:05"))
	}
	for range 3 {
		ctx, cancel := n.c.op()
		resp, err := n.c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
			Then(clientv3.OpPut(k, string(v))).Else(clientv3.OpGet(k)).Commit()
		cancel()
		if err != nil {
			return n.c.unreachable(fmt.Sprintf("store the lease of %s (%s)", l.IP, l.MAC), err)
		}
		if resp.Succeeded {
			n.mu.Lock()
			if r := resp.Header.Revision; r > n.floor[l.IP] {
				n.leases[l.IP], n.revs[l.IP], n.floor[l.IP] = l, r, r
			}
			n.mu.Unlock()
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			rev = 0
			continue
		}
		cur, ok := decodeLease(l.IP, kvs[0].Value)
		if ok && holds(cur, l, n.c.cfg.Now()) {
			n.learn(cur, kvs[0].ModRevision)
			return fmt.Errorf("store the lease of %s for %s: %w (%s, written by %s, until %s)",
				l.IP, l.MAC, ErrTaken, describe(cur), cur.Host, cur.Expiry.Format("15:04:05"))
		}
		rev = kvs[0].ModRevision
	}
	return fmt.Errorf("store the lease of %s for %s: the key kept changing under the write; try again", l.IP, l.MAC)
}

// holds reports whether the record cur keeps l from being written: it is
// live and another client's lease, or a quarantine.
func holds(cur, l dhcp.Lease, now time.Time) bool {
	return now.Before(cur.Expiry) && (cur.Declined || cur.MAC != l.MAC)
}

func describe(l dhcp.Lease) string {
	if l.Declined {
		return "quarantined"
	}
	return "held by " + l.MAC
}

// learn records cur (read by a write that lost) and gives it to the sink.
func (n *Network) learn(cur dhcp.Lease, rev int64) {
	n.mu.Lock()
	if rev > n.floor[cur.IP] {
		n.leases[cur.IP], n.revs[cur.IP], n.floor[cur.IP] = cur, rev, rev
	}
	sink := n.sink
	n.mu.Unlock()
	if sink != nil {
		sink.Apply(cur)
	}
}

// Delete removes the record of a (a release, a client that moved, a
// reclaimed quarantine) if it is still the one last seen; a record
// someone wrote meanwhile stays, and the pool learns it.
func (n *Network) Delete(a netip.Addr) error {
	k := n.c.keys.lease(n.name, a)
	n.mu.Lock()
	rev := n.revs[a]
	n.mu.Unlock()
	if rev == 0 {
		return nil // nothing stored that this host knows of
	}
	ctx, cancel := n.c.op()
	defer cancel()
	resp, err := n.c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpDelete(k)).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return n.c.unreachable("delete the lease of "+a.String(), err)
	}
	if resp.Succeeded {
		n.mu.Lock()
		if r := resp.Header.Revision; r > n.floor[a] {
			delete(n.leases, a)
			delete(n.revs, a)
			n.floor[a] = r // a late event of the old record is older
		}
		n.mu.Unlock()
		return nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if cur, ok := decodeLease(a, kvs[0].Value); ok {
			n.learn(cur, kvs[0].ModRevision)
		}
	}
	return nil
}
