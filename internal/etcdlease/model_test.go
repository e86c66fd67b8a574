package etcdlease

// A model-based test of the allocator against a real etcd: several hosts
// (each a Client, a Network, a dhcp.Pool and a dhcp.Handler, as the daemon
// wires them) answer real DHCP messages from a set of clients, in long
// random sequences of allocations, renewals (on the client's host or on
// another: a guest that moved), releases, time jumps past lease expiry,
// host deaths, liveness lapses and restarts. After every step the hosts
// are let to converge (their watches) and checked against a plain
// reference: no address ACKed to two clients at once, every ACKed lease
// in etcd, every pool equal to etcd, blocks disjoint and each host's
// blocks those etcd says it owns.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	testServer = netip.MustParsePrefix("10.60.0.1/24")
	testRanges = []model.Range{{From: netip.MustParseAddr("10.60.0.10"), To: netip.MustParseAddr("10.60.0.33")},
		{From: netip.MustParseAddr("10.60.0.100"), To: netip.MustParseAddr("10.60.0.105")}}
	testLease = 60 * time.Second
	quiet     = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// tHost is one host of the test, wired as the daemon wires a stretched
// network's DHCP.
type tHost struct {
	name string
	c    *Client
	n    *Network
	h    *dhcp.Handler
}

// startHost starts a host whose liveness lapses ttl after it stops. A
// host started again under a name is the same instance (as the daemon's
// state folder keeps it).
func startHost(t testing.TB, eps []string, prefix, name string, ttl time.Duration, clk *fakeClock, log *slog.Logger) *tHost {
	return startInstance(t, eps, prefix, name, "instance-of-"+name, ttl, clk, log)
}

// startInstance starts a host with its instance (another machine under
// the same name has another).
func startInstance(t testing.TB, eps []string, prefix, name, instance string, ttl time.Duration, clk *fakeClock, log *slog.Logger) *tHost {
	t.Helper()
	c, err := Open(Config{Leases: model.Leases{Etcd: eps, Prefix: prefix, Block: 4, Host: name}, TTL: ttl, Now: clk.now, Log: log, Instance: instance})
	if err != nil {
		t.Fatal(err)
	}
	n := c.Network("s", testRanges)
	pool := dhcp.NewPool(dhcp.Config{Network: "s", Server: testServer, Host: name, Blocks: n,
		DHCP: model.DHCP{Ranges: testRanges, Lease: testLease}}, clk.now, nil)
	n.Attach(pool)
	return &tHost{name: name, c: c, n: n, h: &dhcp.Handler{Pool: pool, Store: c, Log: log, Now: clk.now}}
}

// etcdState is what etcd holds for the network.
type etcdState struct {
	leases map[netip.Addr]dhcp.Lease
	owners map[netip.Addr]string
	alive  map[string]clientv3.LeaseID
}

func readEtcd(t testing.TB, cli *clientv3.Client, k keys) etcdState {
	t.Helper()
	resp, err := cli.Get(context.Background(), k.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	st := etcdState{leases: map[netip.Addr]dhcp.Lease{}, owners: map[netip.Addr]string{}, alive: map[string]clientv3.LeaseID{}}
	for _, kv := range resp.Kvs {
		if h, ok := cutPrefix(string(kv.Key), k.hosts()); ok {
			st.alive[h] = clientv3.LeaseID(kv.Lease)
			continue
		}
		_, kind, a, ok := k.parse(string(kv.Key))
		if !ok {
			t.Fatalf("a key guestnet did not write: %s", kv.Key)
		}
		switch kind {
		case "lease":
			l, ok := decodeLease(a, kv.Value)
			if !ok {
				t.Fatalf("lease key %s holds %s", kv.Key, kv.Value)
			}
			st.leases[a] = l
		case "block":
			var b blockRec
			if err := json.Unmarshal(kv.Value, &b); err != nil {
				t.Fatal(err)
			}
			st.owners[a] = b.Host
		}
	}
	return st
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// core is the part of a lease the cluster agrees on.
type core struct {
	mac      string
	exp      time.Time
	declined bool
	host     string
}

func coreOf(l dhcp.Lease) core { return core{l.MAC, l.Expiry.UTC(), l.Declined, l.Host} }

func cores(ls []dhcp.Lease) map[netip.Addr]core {
	m := map[netip.Addr]core{}
	for _, l := range ls {
		m[l.IP] = coreOf(l)
	}
	return m
}

type acked struct {
	ip  netip.Addr
	exp time.Time
}

// world is the test: etcd, the hosts, the clients and the reference.
type world struct {
	t       testing.TB
	eps     []string
	cli     *clientv3.Client
	k       keys
	clk     *fakeClock
	hosts   map[string]*tHost // alive
	dead    []string
	names   int
	clients []net.HardwareAddr
	ref     map[string]acked // by MAC: the last ACK each client got
	fresh   map[string]bool  // clients that never had an address
	steps   int
	stats   struct {
		acks, moved, released, refused, deaths, lapses, restarts, reclaims, bursts, borrowed int
	}
}

func newWorld(t testing.TB, eps []string, prefix string) *world {
	w := &world{t: t, eps: eps, cli: rawClient(t, eps), k: keys{prefix}, clk: &fakeClock{t: time.Unix(2e9, 0)},
		hosts: map[string]*tHost{}, ref: map[string]acked{}, fresh: map[string]bool{}}
	for i := range 36 { // more clients than the 30 addresses: the range runs dry
		hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i + 1)}
		w.clients = append(w.clients, hw)
		w.fresh[hw.String()] = true
	}
	for range 3 {
		w.start("")
	}
	t.Cleanup(func() {
		for _, h := range w.hosts {
			h.c.Close()
		}
	})
	return w
}

func (w *world) start(name string) {
	if name == "" {
		w.names++
		name = fmt.Sprintf("h%d", w.names)
	}
	// A long TTL: a dead host's liveness lapses when the test says
	// (revoke), never by itself between two checks.
	w.hosts[name] = startHost(w.t, w.eps, w.k.prefix, name, time.Minute, w.clk, quiet)
}

func (w *world) alive() []*tHost {
	var out []*tHost
	for _, h := range w.hosts {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b *tHost) int { return cmpStr(a.name, b.name) })
	return out
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func msg(t testing.TB, hw net.HardwareAddr, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func addrOf(ip net.IP) netip.Addr { a, _ := netip.AddrFromSlice(ip.To4()); return a }

// ack records an ACK of a to hw with lease time d, checking that no other
// client holds a live ACK of the same address.
func (w *world) ack(h *tHost, hw net.HardwareAddr, r *dhcpv4.DHCPv4) {
	a, d := addrOf(r.YourIPAddr), r.IPAddressLeaseTime(0)
	now := w.clk.now()
	m := hw.String()
	for other, x := range w.ref {
		if other != m && x.ip == a && now.Before(x.exp) {
			w.t.Fatalf("step %d: %s ACKed %s to %s, but %s holds it until %s", w.steps, h.name, a, m, other, x.exp)
		}
	}
	if w.fresh[m] && !slices.ContainsFunc(h.n.Blocks(), func(b model.Range) bool { return b.Contains(a) }) {
		// Borrowed: only when no block was left to claim.
		if st := readEtcd(w.t, w.cli, w.k); len(st.owners) < len(Blocks(testRanges, 4)) {
			w.t.Fatalf("step %d: %s gave a new client %s, outside its blocks %v, with a block free (owners %v)", w.steps, h.name, a, h.n.Blocks(), st.owners)
		}
		w.stats.borrowed++
	}
	delete(w.fresh, m)
	w.ref[m] = acked{ip: a, exp: now.Add(d)}
	w.stats.acks++
}

func (w *world) step(rng *rand.Rand) string {
	w.steps++
	hs := w.alive()
	h := hs[rng.IntN(len(hs))]
	hw := w.clients[rng.IntN(len(w.clients))]
	m := hw.String()
	now := w.clk.now()
	switch op := rng.IntN(16); {
	case op >= 14: // a burst: clients ask on several hosts at once
		return w.burst(rng)
	case op < 5: // a client asks for an address (DISCOVER, REQUEST)
		off := h.h.Handle(msg(w.t, hw, dhcpv4.MessageTypeDiscover))
		if off == nil {
			w.stats.refused++
			w.rangeFull(h)
			return "DISCOVER " + m + " on " + h.name + ": no offer"
		}
		r := h.h.Handle(msg(w.t, hw, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServer.Addr().AsSlice()))))
		if r != nil && r.MessageType() == dhcpv4.MessageTypeAck {
			w.ack(h, hw, r)
		}
		return fmt.Sprintf("DISCOVER+REQUEST %s on %s: offer %s, reply %v", m, h.name, off.YourIPAddr, reply(r))
	case op < 8: // a client renews its lease, perhaps on another host (it moved)
		x, ok := w.ref[m]
		if !ok || !now.Before(x.exp) {
			return "no renewal"
		}
		before := w.writer(x.ip)
		r := h.h.Handle(msg(w.t, hw, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(x.ip.AsSlice())))
		if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || addrOf(r.YourIPAddr) != x.ip {
			w.t.Fatalf("step %d: %s renewing its live lease of %s on %s got %v", w.steps, m, x.ip, h.name, reply(r))
		}
		if before != h.name {
			w.stats.moved++
		}
		w.ack(h, hw, r)
		return fmt.Sprintf("renew %s %s on %s", m, x.ip, h.name)
	case op < 9: // a client releases its address
		x, ok := w.ref[m]
		if !ok {
			return "no release"
		}
		h.h.Handle(msg(w.t, hw, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(x.ip.AsSlice())))
		w.converge()
		if _, held := readEtcd(w.t, w.cli, w.k).leases[x.ip]; !held {
			delete(w.ref, m)
			w.stats.released++
		}
		return fmt.Sprintf("release %s %s on %s", m, x.ip, h.name)
	case op < 10:
		w.clk.add(10 * time.Second)
		return "clock +10s"
	case op < 11:
		w.clk.add(testLease + time.Second)
		return "clock past the lease time"
	case op < 12: // a host dies (its liveness key stays until its TTL)
		if len(hs) < 2 {
			return "no death"
		}
		h.c.Close()
		delete(w.hosts, h.name)
		w.dead = append(w.dead, h.name)
		w.stats.deaths++
		return "death of " + h.name
	case op < 13: // a dead host's liveness TTL passes (etcd revokes its lease)
		st := readEtcd(w.t, w.cli, w.k)
		for _, d := range w.dead {
			if id, ok := st.alive[d]; ok {
				if _, err := w.cli.Revoke(context.Background(), id); err != nil {
					w.t.Fatal(err)
				}
				w.stats.lapses++
				return "liveness of " + d + " lapsed"
			}
		}
		return "no lapse"
	default: // a host starts: a dead one again, or a new one
		if len(hs) >= 4 {
			return "no start"
		}
		name := ""
		if len(w.dead) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(w.dead))
			name = w.dead[i]
			w.dead = slices.Delete(w.dead, i, i+1)
		}
		w.start(name)
		w.stats.restarts++
		return "start " + name
	}
}

// rangeFull checks a DISCOVER left unanswered: every address of the range
// holds a live lease or quarantine in etcd, or a live offer of a host
// (the cluster never refuses a client while its range has a free
// address and etcd has a quorum).
func (w *world) rangeFull(h *tHost) {
	st := readEtcd(w.t, w.cli, w.k)
	now := w.clk.now()
	for _, r := range testRanges {
		for a := r.From; r.Contains(a); a = a.Next() {
			if l, ok := st.leases[a]; ok && now.Before(l.Expiry) {
				continue
			}
			if slices.ContainsFunc(w.alive(), func(o *tHost) bool { return o.h.Pool.Offered(a) }) {
				continue
			}
			w.t.Fatalf("step %d: %s left a DISCOVER unanswered with %s free (owners %v)", w.steps, h.name, a, st.owners)
		}
	}
}

// burst runs DISCOVER and REQUEST of up to 12 clients at once, each on a
// random host. A client that got no ACK asks again on its own afterwards,
// as a real one does (a lost race for a borrowed address is a NAK); then
// it may be refused only when the range is full.
func (w *world) burst(rng *rand.Rand) string {
	w.stats.bursts++
	hs := w.alive()
	type ask struct {
		h  *tHost
		hw net.HardwareAddr
		r  *dhcpv4.DHCPv4
	}
	var asks []*ask
	seen := map[string]bool{}
	for range 1 + rng.IntN(12) {
		hw := w.clients[rng.IntN(len(w.clients))]
		if !seen[hw.String()] {
			seen[hw.String()] = true
			asks = append(asks, &ask{h: hs[rng.IntN(len(hs))], hw: hw})
		}
	}
	var wg sync.WaitGroup
	for _, x := range asks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := x.h.h.Handle(msg(w.t, x.hw, dhcpv4.MessageTypeDiscover))
			if off != nil {
				x.r = x.h.h.Handle(msg(w.t, x.hw, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServer.Addr().AsSlice()))))
			}
		}()
	}
	wg.Wait()
	acks, again := 0, 0
	for _, x := range asks { // a client ACKed again holds only its new address
		if x.r != nil && x.r.MessageType() == dhcpv4.MessageTypeAck {
			delete(w.ref, x.hw.String())
		}
	}
	for _, x := range asks {
		if x.r != nil && x.r.MessageType() == dhcpv4.MessageTypeAck {
			w.ack(x.h, x.hw, x.r)
			acks++
		}
	}
	w.converge()
	for _, x := range asks {
		if x.r != nil && x.r.MessageType() == dhcpv4.MessageTypeAck {
			continue
		}
		again++
		off := x.h.h.Handle(msg(w.t, x.hw, dhcpv4.MessageTypeDiscover))
		if off == nil {
			w.stats.refused++
			w.rangeFull(x.h)
			continue
		}
		r := x.h.h.Handle(msg(w.t, x.hw, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServer.Addr().AsSlice()))))
		if r != nil && r.MessageType() == dhcpv4.MessageTypeAck {
			w.ack(x.h, x.hw, r)
		}
	}
	return fmt.Sprintf("burst of %d clients: %d ACKed at once, %d asked again", len(asks), acks, again)
}

func reply(r *dhcpv4.DHCPv4) string {
	if r == nil {
		return "none"
	}
	return r.MessageType().String() + " " + r.YourIPAddr.String()
}

// writer is the host that wrote the lease of a in etcd.
func (w *world) writer(a netip.Addr) string { return readEtcd(w.t, w.cli, w.k).leases[a].Host }

// converge waits until every live host's view (its Network and its pool)
// is etcd's.
func (w *world) converge() etcdState {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := readEtcd(w.t, w.cli, w.k)
		bad := ""
		want := map[netip.Addr]core{}
		for a, l := range st.leases {
			want[a] = coreOf(l)
		}
		for _, h := range w.alive() {
			if got := cores(h.n.Leases()); !mapsEqual(got, want) {
				bad = fmt.Sprintf("%s's watch has %v, etcd %v", h.name, got, want)
			} else if got := cores(h.h.Pool.Leases()); !mapsEqual(got, want) {
				bad = fmt.Sprintf("%s's pool has %v, etcd %v", h.name, got, want)
			} else if got, want := h.n.Blocks(), ownedBy(st, h.name); !slices.Equal(got, want) {
				bad = fmt.Sprintf("%s's blocks are %v, etcd says %v", h.name, got, want)
			}
		}
		if bad == "" {
			return st
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("step %d: the hosts did not converge: %s", w.steps, bad)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func ownedBy(st etcdState, host string) []model.Range {
	var out []model.Range
	for _, b := range Blocks(testRanges, 4) {
		if st.owners[b.From] == host {
			out = append(out, b)
		}
	}
	return out
}

// check compares etcd with the reference after the hosts converged.
func (w *world) check(what string, prev etcdState) etcdState {
	w.t.Helper()
	st := w.converge()
	now := w.clk.now()
	for m, x := range w.ref {
		if !now.Before(x.exp) {
			continue
		}
		l, ok := st.leases[x.ip]
		if !ok || l.MAC != m || !l.Expiry.Equal(x.exp) {
			w.t.Fatalf("step %d (%s): %s was ACKed %s until %s, etcd holds %+v", w.steps, what, m, x.ip, x.exp, l)
		}
	}
	blocks := Blocks(testRanges, 4)
	for first, owner := range st.owners {
		if !slices.ContainsFunc(blocks, func(b model.Range) bool { return b.From == first }) {
			w.t.Fatalf("step %d (%s): block %s is not one of the range's", w.steps, what, first)
		}
		if was, ok := prev.owners[first]; ok && was != owner {
			if _, alive := st.alive[was]; alive {
				w.t.Fatalf("step %d (%s): block %s went from %s to %s while %s is alive", w.steps, what, first, was, owner, was)
			}
			for a, l := range prev.leases { // as they were before the step: the new owner may have written one since
				if b := blocks[slices.IndexFunc(blocks, func(b model.Range) bool { return b.From == first })]; b.Contains(a) && l.Expiry.After(now) {
					w.t.Fatalf("step %d (%s): block %s reclaimed from %s with its live lease %+v", w.steps, what, first, was, l)
				}
			}
			w.stats.reclaims++
		}
	}
	return st
}

func TestAllocatorModel(t *testing.T) {
	ms := startCluster(t, 1)
	steps, seeds := 400, 3
	if testing.Short() {
		steps, seeds = 400, 1
	}
	borrowed := 0
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
			w := newWorld(t, endpoints(ms), fmt.Sprintf("/model%d/", seed))
			var st etcdState
			for range steps {
				what := w.step(rng)
				waitIdle(w.alive()) // a claim ahead lands in the step that started it
				st = w.check(what, st)
			}
			s := w.stats
			t.Logf("%d steps: %d ACKs (%d renewals on another host, %d borrowed), %d bursts, %d releases, %d DISCOVERs unanswered, %d deaths, %d lapses, %d starts, %d blocks reclaimed",
				w.steps, s.acks, s.moved, s.borrowed, s.bursts, s.released, s.refused, s.deaths, s.lapses, s.restarts, s.reclaims)
			if s.acks < steps/10 || s.moved == 0 || s.deaths == 0 || s.reclaims == 0 || s.released == 0 || s.bursts == 0 {
				t.Errorf("the sequence did not exercise the allocator: %+v", s)
			}
			borrowed += s.borrowed
		})
	}
	// Bursts run concurrently: which host borrows varies from run to run,
	// but over the seeds some must (TestBorrowWhenNoBlockLeft is the
	// deterministic case).
	if !testing.Short() && borrowed == 0 {
		t.Errorf("no host borrowed an address in %d seeds", seeds)
	}
}
