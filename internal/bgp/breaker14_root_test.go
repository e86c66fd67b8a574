package bgp

import (
	"github.com/guestnet/guestnet/internal/model"
	"strings"

	"context"
	"errors"
	"fmt"
	"github.com/guestnet/guestnet/internal/plan"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// floodPrefixes are n /32s inside 10.0.0.0/8 (the default import).
func floodPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range n {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
	}
	return out
}

func countOurs(t *testing.T, k Kernel) int {
	t.Helper()
	rs, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rs {
		if ours(r) {
			n++
		}
	}
	return n
}

func heapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// TestFloodPeer: a peer announces a flood of prefixes (10,000; set
// GUESTNET_BGP_FLOOD for more). Every one is installed, the speaker keeps
// answering Status and Configure while it works, and a withdrawal takes
// them all away. The figures (time, heap, the time Configure and Status
// take in the middle of the flood) are logged.
func TestFloodPeer(t *testing.T) {
	needRoot(t)
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("GUESTNET_BGP_FLOOD")); err == nil {
		n = v
	}
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	heap0 := heapMB()
	ca := conf(port, 1, 2)
	ca.Peers[0].MaxPrefixes = max(n, model.BGPMaxPrefixes)
	lines := &countHandler{Handler: testLog(t, "A").Handler()}
	a := New(kA, slog.New(lines))
	a.Protect([]netip.Prefix{pfx("10.1.0.0/24")})
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(false)
	b := start(t, kB, conf(port, 2, 1), "B", pfx("10.2.0.0/24"))
	defer b.Stop(false)
	waitFor(t, "A established", 30*time.Second, func() (bool, string) { return established(a) })

	ps := floodPrefixes(n)
	begin := time.Now()
	if err := b.Announce(ps); err != nil {
		t.Fatal(err)
	}
	t.Logf("B's Announce of %d prefixes returned in %s", n, time.Since(begin).Round(time.Millisecond))
	// In the middle of the flood: what the daemon calls with its lock
	// held (Status for health, Configure after each apply).
	var worstStatus, worstConf time.Duration
	for countOurs(t, kA) < n {
		if time.Since(begin) > 10*time.Minute {
			t.Fatalf("after %s A installed %d of %d", time.Since(begin), countOurs(t, kA), n)
		}
		s0 := time.Now()
		a.Status()
		worstStatus = max(worstStatus, time.Since(s0))
		s0 = time.Now()
		if err := a.Configure(context.Background(), ca); err != nil {
			t.Fatal(err)
		}
		worstConf = max(worstConf, time.Since(s0))
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(begin)
	heap1 := heapMB()
	waitFor(t, "A's status counts the flood", time.Minute, func() (bool, string) {
		st := a.Status()
		return len(st.Peers) == 1 && st.Peers[0].Installed == n && st.Peers[0].Received == n, fmt.Sprintf("%+v", st.Peers)
	})
	t.Logf("%d prefixes installed on A in %s; heap (both speakers, in process) %.0f MB -> %.0f MB; during the flood Status took at most %s, Configure (unchanged) %s",
		n, took.Round(time.Millisecond), heap0, heap1, worstStatus.Round(time.Microsecond), worstConf.Round(time.Microsecond))

	// A pass in the steady state (the 10 s timer makes one).
	s0 := time.Now()
	if err := a.pass(context.Background(), a.srv); err != nil {
		t.Fatal(err)
	}
	t.Logf("one install pass over %d installed routes: %s", n, time.Since(s0).Round(time.Millisecond))

	begin = time.Now()
	if err := b.Announce(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A removes the withdrawn flood", 10*time.Minute, func() (bool, string) {
		c := countOurs(t, kA)
		return c == 0, fmt.Sprintf("%d left", c)
	})
	t.Logf("withdrawal of %d: all removed from A in %s", n, time.Since(begin).Round(time.Millisecond))
	// The daemon's log (journald drops a service's lines past 10,000 in
	// 30 s by default, the other services' with them) says the flood in a
	// few lines, not one per route.
	if got := lines.n.Load(); got > 200 {
		t.Errorf("A logged %d lines at info or above for a flood of %d prefixes in and out: want a summary per pass", got, n)
	} else {
		t.Logf("A logged %d lines at info or above for the flood in and out", got)
	}
}

// countHandler counts the records at info and above.
type countHandler struct {
	slog.Handler
	n atomic.Int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		h.n.Add(1)
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *countHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countHandler{Handler: h.Handler.WithAttrs(as)}
}

// TestFlapPeer: a peer announces and withdraws one prefix 2,000 times
// as fast as it can; A ends with the peer's last word, both ways.
func TestFlapPeer(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	a := start(t, kA, conf(port, 1, 2), "A")
	defer a.Stop(false)
	b := start(t, kB, conf(port, 2, 1), "B")
	defer b.Stop(false)
	waitFor(t, "A established", 30*time.Second, func() (bool, string) { return established(a) })
	begin := time.Now()
	for i := range 2000 {
		if i%2 == 0 {
			announce(t, b, "10.2.0.0/24", "10.3.0.0/24")
		} else {
			announce(t, b, "10.2.0.0/24")
		}
	}
	t.Logf("2,000 flaps sent in %s", time.Since(begin).Round(time.Millisecond))
	waitFor(t, "A holds B's last word (10.3 withdrawn)", 30*time.Second, tableIs(t, kA, "10.2.0.0/24 via 127.0.0.2 dev v0 metric 186"))
	announce(t, b, "10.2.0.0/24", "10.3.0.0/24")
	waitFor(t, "A holds 10.3 again", 30*time.Second, tableIs(t, kA, "10.2.0.0/24 via 127.0.0.2 dev v0 metric 186", "10.3.0.0/24 via 127.0.0.2 dev v0 metric 186"))
	if st := a.Status(); len(st.Peers) != 1 || st.Peers[0].State != StateEstablished {
		t.Errorf("A's peer after the flaps: %+v", st.Peers)
	}
}

// slowKernel is a kernel whose route writes are refused while refuse is
// set, then take a millisecond each (a busy host).
type slowKernel struct {
	Kernel
	refuse atomic.Bool
}

func (k *slowKernel) Do(a plan.Action) error {
	if k.refuse.Load() {
		return errors.New("refused by the test")
	}
	time.Sleep(time.Millisecond)
	return k.Kernel.Do(a)
}

// TestStopDuringFlood: Stop (what a reload that changes the ASN or drops
// the bgp section, and the daemon's shutdown, call with the daemon's lock
// held) does not wait for the install pass to write a flood's routes.
// The kernel refuses every write until A's passes have seen the whole
// flood, so the pass Stop meets has all of it to write.
func TestStopDuringFlood(t *testing.T) {
	needRoot(t)
	const n = 5000
	port := freePort(t)
	k := &slowKernel{Kernel: hostNS(t)}
	k.refuse.Store(true)
	kA, kB := Kernel(k), hostNS(t)
	a := start(t, kA, conf(port, 1, 2), "A")
	b := start(t, kB, conf(port, 2, 1), "B")
	defer b.Stop(false)
	waitFor(t, "A established", 30*time.Second, func() (bool, string) { return established(a) })
	if err := b.Announce(floodPrefixes(n)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A's last pass saw the whole flood", 2*time.Minute, func() (bool, string) {
		st := a.Status()
		return len(st.Learned) == n, fmt.Sprintf("%d learned", len(st.Learned))
	})
	k.refuse.Store(false)
	a.wake()
	waitFor(t, "A installs some of the flood", 2*time.Minute, func() (bool, string) {
		c := countOurs(t, kA)
		return c >= 500, fmt.Sprintf("%d installed", c)
	})
	s0 := time.Now()
	a.Stop(true)
	took := time.Since(s0)
	at := countOurs(t, kA)
	t.Logf("Stop(true) in the middle of a %d-route install pass took %s; %d routes installed then", n, took.Round(time.Millisecond), at)
	if at == n {
		t.Errorf("Stop returned once all %d routes were written: it waited %s for the install pass", n, took.Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	if c := countOurs(t, kA); c != at {
		t.Errorf("%d routes after Stop returned, %d a second later: something still writes", at, c)
	}
	// The next speaker takes the partial set over and writes the rest.
	a2 := start(t, kA, conf(port, 1, 2), "A2")
	defer a2.Stop(false)
	waitFor(t, "A2 installs the rest", 2*time.Minute, func() (bool, string) {
		c := countOurs(t, kA)
		return c == n, fmt.Sprintf("%d installed", c)
	})
}

// TestMaxPrefixes: a peer that announces one prefix more than its
// max_prefixes has its session shut down, as routers do (RFC 4486): its
// routes go, the session stays down (no reconnect loop that would install
// the flood again and again), and guestnet bgp says why and what to do.
// Raising the limit brings it back with everything it announces.
func TestMaxPrefixes(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	ca := conf(port, 1, 2)
	ca.Peers[0].MaxPrefixes = 100
	a := start(t, kA, ca, "A", pfx("10.1.0.0/24"))
	defer a.Stop(false)
	b := start(t, kB, conf(port, 2, 1), "B", pfx("10.2.0.0/24"))
	defer b.Stop(false)
	waitFor(t, "A established", 30*time.Second, func() (bool, string) { return established(a) })

	if err := b.Announce(floodPrefixes(100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A installs B's 100 prefixes (at the limit)", 30*time.Second, func() (bool, string) {
		n := countOurs(t, kA)
		return n == 100, fmt.Sprint(n)
	})
	if err := b.Announce(floodPrefixes(101)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A shuts the session down and removes B's routes", 30*time.Second, func() (bool, string) {
		st := a.Status()
		n := countOurs(t, kA)
		p := st.Peers[0]
		return n == 0 && p.State != StateEstablished && strings.Contains(p.LastError, "max_prefixes (100)"), fmt.Sprintf("%d routes, %+v", n, p)
	})
	// It stays down: no reconnect that installs the flood again.
	time.Sleep(3 * idleHoldAfterReset * time.Second)
	if n, st := countOurs(t, kA), a.Status().Peers[0].State; n != 0 || st == StateEstablished {
		t.Fatalf("after %d s: %d routes, session %s; want it shut down", 3*idleHoldAfterReset, n, st)
	}
	ca.Peers[0].MaxPrefixes = 1000
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "A, its limit raised, installs B's 101 prefixes", 30*time.Second, func() (bool, string) {
		n := countOurs(t, kA)
		return n == 101, fmt.Sprint(n)
	})
	t.Logf("limit raised: B's 101 prefixes installed after %s", took.Round(time.Millisecond))
}
