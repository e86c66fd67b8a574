package dhcp

// The pool model (pool_model_test.go) run as a stretched network's pool:
// new addresses only from the blocks an allocator grants (granted one at a
// time as the pool asks), and the leases other hosts write arriving as
// remote updates (Apply, Forget), with the same reference and invariants.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// testBlocks grants the blocks of all one by one, up to max: the others
// are other hosts' (only remote writes and a client's own record reach
// them).
type testBlocks struct {
	mu    sync.Mutex
	all   []model.Range
	n     int
	max   int
	grows int
}

var _ Allocator = (*testBlocks)(nil)

func (b *testBlocks) Blocks() []model.Range {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.all[:b.n])
}

func (b *testBlocks) Grow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.grows++
	if b.n == b.max {
		return errors.New("no block left")
	}
	b.n++
	return nil
}

// blocksConfig is modelConfig with blocks of two addresses, three of them
// granted on demand, as host h1 of a cluster.
func blocksConfig() (Config, *testBlocks) {
	cfg := modelConfig()
	b := &testBlocks{all: []model.Range{{From: addr("10.96.0.1"), To: addr("10.96.0.2")}, {From: addr("10.96.0.3"), To: addr("10.96.0.4")},
		{From: addr("10.96.0.5"), To: addr("10.96.0.5")}, {From: addr("10.96.0.20"), To: addr("10.96.0.21")}, {From: addr("10.96.0.22"), To: addr("10.96.0.22")}}, max: 3}
	cfg.Blocks, cfg.Host = b, "h1"
	return cfg, b
}

// remotePut is another host's write of a lease for one of the clients,
// at an address no other client's live lease or quarantine holds (the
// cluster refuses those), live or already expired.
func (s *sim) remotePut(next func(int) int) string {
	now := s.clk.t
	m := s.clients[next(12)].String() // not the static hosts'
	var free []netip.Addr
	for _, a := range s.ref.candidates() {
		x, ok := s.ref.recs[a]
		if s.ref.dynamic(a) && !(ok && now.Before(x.exp) && (x.declined || x.mac != m)) {
			free = append(free, a)
		}
	}
	if len(free) == 0 {
		return "no remote write"
	}
	a := free[next(len(free))]
	exp := now.Add([]time.Duration{s.ref.cfg.Lease, 5 * time.Second, -time.Second}[next(3)])
	host := hostnames[next(len(hostnames))]
	s.h.Pool.Apply(Lease{MAC: m, IP: a, Hostname: host, Expiry: exp, Host: "h2"})
	if now.Before(exp) && host != "" && s.ref.nameTaken(host, m, now) {
		host = "" // the pool keeps names unique among its live leases
	}
	for b, x := range s.ref.recs {
		if b != a && x.mac == m && !x.declined {
			delete(s.ref.recs, b)
			s.st.Delete("model", b) // the cluster's copy ends too
		}
	}
	s.ref.recs[a] = rec{mac: m, host: host, exp: exp, writer: "h2"}
	s.remotes++
	delete(s.ref.offers, m)
	s.ref.dropOffersAt(a)
	if l, ok := s.h.Pool.byIP[a]; ok {
		s.st.Put("model", l) // the store is the cluster: it holds the record
	}
	return fmt.Sprintf("remote write %s %s %q until %s", m, a, host, exp.Format(time.TimeOnly))
}

func TestPoolModelBlocks(t *testing.T) {
	steps, seeds := 5000, 6
	if testing.Short() {
		steps, seeds = 1500, 2
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 0xb10c5))
			cfg, b := blocksConfig()
			s := newSimWith(t, cfg)
			for range steps {
				s.step(rng.IntN)
			}
			t.Logf("%d steps: %d ACK, %d NAK, %d remote updates, %d restarts, %d blocks granted (%d asked)", s.steps, s.acks, s.naks, s.remotes, s.restart, b.n, b.grows)
			if s.acks < steps/50 || s.naks == 0 || b.grows < 2 || s.remotes < steps/20 {
				t.Errorf("the sequence did not exercise the pool: %d ACK, %d NAK, %d grows", s.acks, s.naks, b.grows)
			}
		})
	}
}
