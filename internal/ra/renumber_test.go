package ra

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/guestnet/guestnet/internal/model"
)

// movingClock is a clock the test moves.
type movingClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *movingClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *movingClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// prefixes are the prefix options of an RA, by prefix.
func prefixes(m *ndp.RouterAdvertisement) map[netip.Prefix]*ndp.PrefixInformation {
	out := map[netip.Prefix]*ndp.PrefixInformation{}
	for _, o := range m.Options {
		if p, ok := o.(*ndp.PrefixInformation); ok {
			out[netip.PrefixFrom(p.Prefix, int(p.PrefixLength))] = p
		}
	}
	return out
}

// TestRenumbering: a reload that changes the network's prefix goes on
// advertising the old one with preferred and valid lifetime 0 (RFC 8978
// §3: guests stop choosing their old addresses as sources at once, drop
// the old on-link route, and the kernel keeps the old address at most 2
// hours, RFC 4862 §5.5.3 e), instead of leaving it preferred for up to
// PrefixPreferred with no route behind it. A network that is removed
// (Withdraw) says the same of its prefix in the final RA; a daemon that
// only stops (Stop: a restart follows) keeps its guests' addresses.
func TestRenumbering(t *testing.T) {
	for _, withdraw := range []bool{false, true} {
		c := newFakeConn()
		clk := &movingClock{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
		open := func() (Conn, net.HardwareAddr, error) { return c, mac, nil }
		r := testRA()
		a := start(r, open, slog.New(slog.NewTextHandler(io.Discard, nil)), clk.now)
		old := r.Prefix
		if p := prefixes(c.next(t).ra)[old]; p == nil || p.PreferredLifetime != model.PrefixPreferred {
			t.Fatalf("first RA: %+v", p)
		}
		clk.add(time.Minute) // past MinDelayBetweenRAs: the change goes out at once
		r.Prefix = netip.MustParsePrefix("fd42:2::/64")
		a.Set(r)
		ps := prefixes(c.next(t).ra)
		if p := ps[r.Prefix]; p == nil || p.PreferredLifetime != model.PrefixPreferred || p.ValidLifetime != model.PrefixValid {
			t.Errorf("the new prefix: %+v", p)
		}
		if p := ps[old]; p == nil || p.PreferredLifetime != 0 || p.ValidLifetime != 0 {
			t.Errorf("the old prefix after renumbering: %+v, want it advertised with lifetimes 0", p)
		}
		if withdraw {
			a.Withdraw()
		} else {
			a.Stop()
		}
		var final *ndp.RouterAdvertisement
		for len(c.out) > 0 {
			if s := <-c.out; s.ra.RouterLifetime == 0 {
				final = s.ra
			}
		}
		if final == nil {
			t.Fatalf("withdraw %v: no final RA", withdraw)
		}
		p := prefixes(final)[r.Prefix]
		switch {
		case p == nil:
			t.Errorf("withdraw %v: no prefix in the final RA", withdraw)
		case withdraw && (p.PreferredLifetime != 0 || p.ValidLifetime != 0):
			t.Errorf("the final RA of a removed network: prefix lifetimes %v/%v, want 0/0", p.PreferredLifetime, p.ValidLifetime)
		case !withdraw && p.PreferredLifetime != model.PrefixPreferred:
			t.Errorf("the final RA of a stopping daemon: preferred %v, want %v (guests keep their addresses over a restart)", p.PreferredLifetime, model.PrefixPreferred)
		}
	}
}
