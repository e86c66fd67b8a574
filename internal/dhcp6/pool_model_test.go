package dhcp6

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// refHold is the reference's record of an address: who holds it until
// when (declined: nobody, until then).
type refHold struct {
	c        client
	until    time.Time
	declined bool
}

// TestPoolModel runs random sequences of offers, binds, renewals,
// releases, declines and time jumps against the pool and a reference that
// keeps only who holds which address until when, and checks after every
// step that the pool agrees: no address held by two clients, a bind
// granted exactly when the reference allows it, an offer refused only
// when every address of the range is held, a client that holds an address
// offered that address again, and a restart from the pool's own records
// (what the store keeps) changes nothing.
func TestPoolModel(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runPoolModel(t, seed) })
	}
}

func runPoolModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	rng := model.Range{From: netip.MustParseAddr("fd42:61::ff"), To: netip.MustParseAddr("fd42:61::106")} // 8 addresses, across a byte boundary
	static := netip.MustParseAddr("fd42:61::102")                                                         // a static host's address inside the range (the operator moves it)
	cfg := Config{Network: "m", Prefix: prefix, DHCP6: model.DHCP6{Ranges: []model.Range{rng}, Lease: time.Hour,
		Hosts: []model.StaticHost6{{DUID: "st", IP: static, Name: "st"}}}}
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := NewPool(cfg, c.now, nil)
	ref := map[netip.Addr]refHold{}
	clients := make([]client, 12)
	for i := range clients {
		clients[i] = client{fmt.Sprintf("c%d", i), uint32(i % 2)}
	}
	addrAt := func(i int) netip.Addr {
		a := rng.From
		for range i {
			a = a.Next()
		}
		return a
	}
	heldBy := func(a netip.Addr) (client, bool) {
		h, ok := ref[a]
		if !ok || !c.t.Before(h.until) {
			return client{}, false
		}
		return h.c, true
	}
	for step := range 300 {
		cl := clients[r.IntN(len(clients))]
		switch op := r.IntN(10); {
		case op < 4: // a Request for the offered address, or a hint
			hint := netip.Addr{}
			if r.IntN(3) == 0 {
				hint = addrAt(r.IntN(9)) // sometimes one past the range
			}
			a, ok := p.Offer(cl.duid, cl.iaid, "", hint)
			free := 0
			for i := range 8 {
				if _, held := heldBy(addrAt(i)); !held && addrAt(i) != static {
					free++
				}
			}
			mine := false
			for i := range 8 {
				if h, held := heldBy(addrAt(i)); held && h == cl && addrAt(i) != static { // one made static under it moves
					mine = true
					if !ok || a != addrAt(i) {
						t.Fatalf("step %d: %v holds %v but is offered %v (%v)", step, cl, addrAt(i), a, ok)
					}
				}
			}
			if !ok {
				if free > 0 || mine {
					t.Fatalf("step %d: no offer for %v with %d addresses free", step, cl, free)
				}
				continue
			}
			if !rng.Contains(a) || a == static {
				t.Fatalf("step %d: offered %v: outside the range or the static host's", step, a)
			}
			if h, held := heldBy(a); held && h != cl {
				t.Fatalf("step %d: offered %v to %v, held by %v", step, a, cl, h)
			}
			l, _, ok := p.Bind(dhcp.Lease6{DUID: cl.duid, IAID: cl.iaid, IP: a})
			if !ok {
				t.Fatalf("step %d: bind of the offered %v failed", step, a)
			}
			for x, h := range ref { // the client moves: its old address goes
				if h.c == cl && x != a && !h.declined {
					delete(ref, x)
				}
			}
			ref[a] = refHold{c: cl, until: l.Expiry}
		case op < 5: // a Request for any address at all
			a := addrAt(r.IntN(9))
			_, _, ok := p.Bind(dhcp.Lease6{DUID: cl.duid, IAID: cl.iaid, IP: a})
			h, held := heldBy(a)
			want := rng.Contains(a) && a != static && (!held || h == cl)
			if ok != want {
				t.Fatalf("step %d: bind of %v by %v: %v, want %v (held %v by %v)", step, a, cl, ok, want, held, h)
			}
			if ok {
				for x, h := range ref {
					if h.c == cl && x != a && !h.declined {
						delete(ref, x)
					}
				}
				ref[a] = refHold{c: cl, until: c.t.Add(time.Hour)}
			}
		case op < 6: // Release
			a := addrAt(r.IntN(8))
			_, ok := p.Release(cl.duid, cl.iaid, a)
			h, has := ref[a]
			if want := has && !h.declined && h.c == cl; ok != want {
				t.Fatalf("step %d: release of %v by %v: %v, want %v", step, a, cl, ok, want)
			}
			if ok {
				delete(ref, a) // forgotten (the client comes back to it by its hash)
			}
		case op < 7: // Decline
			a := addrAt(r.IntN(8))
			_, ok := p.Decline(cl.duid, cl.iaid, a)
			h, has := ref[a]
			if want := has && !h.declined && h.c == cl; ok != want {
				t.Fatalf("step %d: decline of %v by %v: %v, want %v", step, a, cl, ok, want)
			}
			if ok {
				ref[a] = refHold{until: c.t.Add(Quarantine), declined: true}
			}
		case op < 9: // time passes: minutes, or past every lease
			if r.IntN(4) == 0 {
				c.t = c.t.Add(2 * time.Hour)
			} else {
				c.t = c.t.Add(time.Duration(r.IntN(40)) * time.Minute)
			}
		default:
			switch r.IntN(3) {
			case 0: // a restart from the stored records
				p = NewPool(cfg, c.now, p.Leases())
			case 1: // the operator moves the static host, perhaps under a live lease
				static = addrAt(r.IntN(8))
				cfg.Hosts = []model.StaticHost6{{DUID: "st", IP: static, Name: "st"}}
				p = NewPool(cfg, c.now, p.Leases())
			default: // the static host asks for its address
				l, _, ok := p.Bind(dhcp.Lease6{DUID: "st", IAID: 0, IP: static})
				h, has := ref[static]
				busy := has && c.t.Before(h.until) && (h.declined || h.c != (client{"st", 0}))
				if ok == busy {
					t.Fatalf("step %d: the static host's bind of %v: %v, want %v (record %+v)", step, static, ok, !busy, h)
				}
				if ok {
					for x, h := range ref {
						if h.c == (client{"st", 0}) && x != static && !h.declined {
							delete(ref, x)
						}
					}
					ref[static] = refHold{c: client{"st", 0}, until: l.Expiry}
				}
			}
		}
		checkPool(t, step, p, ref, c.t)
	}
}

// checkPool compares the pool's live leases with the reference's.
func checkPool(t *testing.T, step int, p *Pool, ref map[netip.Addr]refHold, now time.Time) {
	t.Helper()
	live := map[client]netip.Addr{}
	for _, l := range p.Leases() {
		if l.Declined || !now.Before(l.Expiry) {
			continue
		}
		k := client{l.DUID, l.IAID}
		if a, dup := live[k]; dup {
			t.Fatalf("step %d: %v holds %v and %v", step, k, a, l.IP)
		}
		live[k] = l.IP
		h, ok := ref[l.IP]
		if !ok || h.c != k || !now.Before(h.until) {
			t.Fatalf("step %d: pool has %v live for %v; reference %+v", step, l.IP, k, h)
		}
	}
	for a, h := range ref {
		if !h.declined && now.Before(h.until) && live[h.c] != a {
			t.Fatalf("step %d: reference has %v live for %v; pool has %v", step, a, h.c, live[h.c])
		}
	}
}

// TestPoolHugeRange: a /64 range allocates without a record per address,
// and the same client lands on the same address from a fresh pool.
func TestPoolHugeRange(t *testing.T) {
	cfg := Config{Network: "big", Prefix: prefix, DHCP6: model.DHCP6{Lease: time.Hour, Ranges: []model.Range{{
		From: netip.MustParseAddr("fd42:61::"), To: netip.MustParseAddr("fd42:61::ffff:ffff:ffff:ffff")}}}}
	c := &clock{time.Now()}
	p := NewPool(cfg, c.now, nil)
	seen := map[netip.Addr]bool{}
	for i := range 1000 {
		a, ok := p.Offer(fmt.Sprint("d", i), 1, "", netip.Addr{})
		if !ok || seen[a] || !prefix.Contains(a) {
			t.Fatalf("client %d: %v %v (dup %v)", i, a, ok, seen[a])
		}
		seen[a] = true
		if _, _, ok := p.Bind(dhcp.Lease6{DUID: fmt.Sprint("d", i), IAID: 1, IP: a}); !ok {
			t.Fatalf("bind %v failed", a)
		}
	}
	a1, _ := NewPool(cfg, c.now, nil).Offer("d1", 1, "", netip.Addr{})
	a2, _ := NewPool(cfg, c.now, nil).Offer("d1", 1, "", netip.Addr{})
	if a1 != a2 {
		t.Errorf("the same client got %v and %v from two fresh pools", a1, a2)
	}
	if n := len(p.Leases()); n != 1000 {
		t.Errorf("%d records for 1000 clients", n)
	}
}
