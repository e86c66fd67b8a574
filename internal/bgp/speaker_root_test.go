package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
)

// These tests run real GoBGP speakers in the test process, on loopback
// addresses of its namespace (127.0.0.x, a port that is not 179), each
// installing into a test namespace of its own: a veth pair there holds
// 127.0.0.100/24, so the peers' next hops (127.0.0.x) are directly
// reachable and routes through them are real kernel routes.

// needRoot skips a test that needs network namespaces, or fails it when
// GUESTNET_E2E_REQUIRED=1 (CI) says it must run.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err == nil {
			return
		}
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatal("this test needs root and the ip command (network namespaces), and GUESTNET_E2E_REQUIRED=1")
	}
	t.Skip("SKIPPED: needs root and ip to make network namespaces")
}

var nsSeq atomic.Int32

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// hostNS makes a namespace with a connected subnet 127.0.0.0/24 (on a
// veth pair inside it) and returns its kernel; it is removed after.
func hostNS(t testing.TB) Kernel {
	t.Helper()
	ns := fmt.Sprintf("gn-bgptest-%d-%d", os.Getpid(), nsSeq.Add(1))
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	ipCmd(t, "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ipCmd(t, "-n", ns, "link", "set", "v0", "up")
	ipCmd(t, "-n", ns, "link", "set", "v1", "up")
	ipCmd(t, "-n", ns, "addr", "add", "127.0.0.100/24", "dev", "v0")
	e, err := engine.Open(ns, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	nsNames.Store(e.Kernel, ns)
	return e.Kernel
}

// freePort is a TCP port free on 127.0.0.1 (the speakers all use it).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testLog(t *testing.T, name string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("speaker", name)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// conf is the bgp section of speaker n (127.0.0.n, AS 6500n) peering
// with the others.
func conf(port int, n int, others ...int) model.BGP {
	c := model.BGP{
		ASN:      uint32(65000 + n),
		RouterID: netip.AddrFrom4([4]byte{10, 255, 0, byte(n)}),
		Listen:   []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, byte(n)})},
		Port:     port,
		Import:   model.DefaultImport,
	}
	for _, o := range others {
		c.Peers = append(c.Peers, model.BGPPeer{Address: netip.AddrFrom4([4]byte{127, 0, 0, byte(o)}), ASN: uint32(65000 + o), Hold: model.BGPMinHold})
	}
	return c
}

// bgpTable is the namespace's protocol-bgp routes, "dst via gw dev v0".
func bgpTable(t *testing.T, k Kernel) []string {
	t.Helper()
	rs, err := k.Routes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Proto == model.ProtoBGP {
			out = append(out, fmt.Sprintf("%s via %s dev %s metric %d", r.Dst, r.Gw, r.Dev, r.Metric))
		}
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond until it holds; the deadline only bounds a broken
// run (the conditions are outcomes, not speeds).
func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not after %s; last: %s", what, limit, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func established(s *Speaker) (bool, string) {
	st := s.Status()
	for _, p := range st.Peers {
		if p.State != StateEstablished {
			return false, fmt.Sprintf("%+v", st.Peers)
		}
	}
	return len(st.Peers) > 0, fmt.Sprintf("%+v", st.Peers)
}

func tableIs(t *testing.T, k Kernel, want ...string) func() (bool, string) {
	return func() (bool, string) {
		got := bgpTable(t, k)
		return slices.Equal(got, want), strings.Join(got, "; ")
	}
}

func start(t *testing.T, k Kernel, c model.BGP, name string, protect ...netip.Prefix) *Speaker {
	t.Helper()
	s := New(k, testLog(t, name))
	s.Protect(protect)
	if err := s.Configure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return s
}

func announce(t *testing.T, s *Speaker, ps ...string) {
	t.Helper()
	var pp []netip.Prefix
	for _, p := range ps {
		pp = append(pp, pfx(p))
	}
	if err := s.Announce(pp); err != nil {
		t.Fatal(err)
	}
}

// TestSpeakers: speakers establish, announce and withdraw; what one
// learns lands in its namespace as protocol bgp, metric 186, and what its
// policy refuses does not, with the reason in Status. A (AS 65001) peers
// with B over eBGP (AS 65002), then with C over iBGP (AS 65001, added by
// a later Configure that leaves B's session alone).
func TestSpeakers(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB, kC := hostNS(t), hostNS(t), hostNS(t)
	ca := conf(port, 1, 2)
	a := start(t, kA, ca, "A", pfx("10.1.0.0/24"))
	defer a.Stop(false)
	b := start(t, kB, conf(port, 2, 1), "B", pfx("10.2.0.0/24"))
	defer b.Stop(false)
	announce(t, a, "10.1.0.0/24")
	// B also announces what A must refuse: a default route, a prefix
	// inside A's network, one outside import.
	announce(t, b, "10.2.0.0/24", "0.0.0.0/0", "10.1.0.128/25", "198.51.100.0/24")

	took := waitFor(t, "sessions established", 30*time.Second, func() (bool, string) {
		ok, s := established(a)
		okB, sB := established(b)
		return ok && okB, s + " " + sB
	})
	t.Logf("sessions established after %s", took.Round(time.Millisecond))
	waitFor(t, "A installs B's subnet, and only it", 10*time.Second, tableIs(t, kA, "10.2.0.0/24 via 127.0.0.2 dev v0 metric 186"))
	waitFor(t, "B installs A's subnet", 10*time.Second, tableIs(t, kB, "10.1.0.0/24 via 127.0.0.1 dev v0 metric 186"))

	st := a.Status()
	why := map[string]Learned{}
	for _, l := range st.Learned {
		why[l.Prefix.String()] = l
	}
	for p, has := range map[string]string{
		"0.0.0.0/0":       "default route",
		"10.1.0.128/25":   "this host's network 10.1.0.0/24",
		"198.51.100.0/24": "outside import",
	} {
		if l, ok := why[p]; !ok || l.Installed || !l.Refused || !strings.Contains(l.Why, has) {
			t.Errorf("A's learned %s = %+v, want refused saying %q", p, l, has)
		}
	}
	if l := why["10.2.0.0/24"]; !l.Installed || l.NextHop != addr("127.0.0.2") || l.Peer != addr("127.0.0.2") {
		t.Errorf("A's learned 10.2.0.0/24 = %+v, want installed via 127.0.0.2", l)
	}
	if st.ASN != 65001 || st.RouterID != addr("10.255.0.1") || st.Port != port || !slices.Equal(st.Announced, []netip.Prefix{pfx("10.1.0.0/24")}) {
		t.Errorf("A's status = %+v", st)
	}
	waitFor(t, "A's counts", 15*time.Second, func() (bool, string) {
		p := a.Status().Peers[0]
		return p.Sent == 1 && p.Received == 4 && p.Installed == 1, fmt.Sprintf("%+v", p)
	})

	// The same config again changes nothing: B's session is the same one.
	since := a.Status().Peers[0].Since
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	// C joins over iBGP: A's next Configure adds it, B's session stays.
	cc := conf(port, 3, 1)
	cc.ASN = 65001
	c := start(t, kC, cc, "C", pfx("10.4.0.0/24"))
	defer c.Stop(false)
	announce(t, c, "10.4.0.0/24")
	ca.Peers = append(ca.Peers, model.BGPPeer{Address: addr("127.0.0.3"), ASN: 65001, Hold: model.BGPMinHold})
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A's sessions with B and C established", 30*time.Second, func() (bool, string) { return established(a) })
	if p := a.Status().Peers[0]; !p.Since.Equal(since) {
		t.Errorf("B's session was reset by Configure: since %s, was %s", p.Since, since)
	}
	// iBGP: A's own path goes to C with A's address as next hop; what A
	// learned from B does not (no transit), nor C's to B.
	waitFor(t, "C installs A's subnet, next hop A", 10*time.Second, tableIs(t, kC, "10.1.0.0/24 via 127.0.0.1 dev v0 metric 186"))
	waitFor(t, "A installs C's and B's subnets", 10*time.Second, tableIs(t, kA, "10.2.0.0/24 via 127.0.0.2 dev v0 metric 186", "10.4.0.0/24 via 127.0.0.3 dev v0 metric 186"))
	if p := b.Status().Peers[0]; p.Received != 1 {
		t.Errorf("B received %d prefixes from A, want 1 (A's own)", p.Received)
	}
	if got := bgpTable(t, kB); !slices.Equal(got, []string{"10.1.0.0/24 via 127.0.0.1 dev v0 metric 186"}) {
		t.Errorf("B's table %q: A passed on what it learned", got)
	}

	// Withdraw: gone from A's kernel.
	announce(t, b, "10.3.0.0/24")
	took = waitFor(t, "A follows B's withdraw", 10*time.Second, tableIs(t, kA, "10.3.0.0/24 via 127.0.0.2 dev v0 metric 186", "10.4.0.0/24 via 127.0.0.3 dev v0 metric 186"))
	t.Logf("withdraw and new prefix installed after %s", took.Round(time.Millisecond))

	// Someone deletes a route: the re-check after a repair puts it back.
	ipCmd(t, "-n", nsName(t, kA), "route", "del", "10.3.0.0/24", "proto", "186", "metric", "186")
	a.Protect([]netip.Prefix{pfx("10.1.0.0/24")}) // as the daemon after a drift repair
	waitFor(t, "A repairs the deleted route", 10*time.Second, tableIs(t, kA, "10.3.0.0/24 via 127.0.0.2 dev v0 metric 186", "10.4.0.0/24 via 127.0.0.3 dev v0 metric 186"))

	// A peer removed from the config: its routes go (the session ends
	// with a Hard Reset, nothing kept).
	ca.Peers = ca.Peers[1:]
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A drops the removed peer's routes", 10*time.Second, tableIs(t, kA, "10.4.0.0/24 via 127.0.0.3 dev v0 metric 186"))
	if ps := a.Status().Peers; len(ps) != 1 || ps[0].Address != addr("127.0.0.3") {
		t.Errorf("A's peers after removing B: %+v", ps)
	}
}

// nsName finds the namespace of a kernel made by hostNS.
var nsNames sync.Map // Kernel -> name

func nsName(t *testing.T, k Kernel) string {
	t.Helper()
	n, ok := nsNames.Load(k)
	if !ok {
		t.Fatal("no namespace name for this kernel")
	}
	return n.(string)
}

func learnedOf(s *Speaker, p string) (Learned, bool) {
	for _, l := range s.Status().Learned {
		if l.Prefix == pfx(p) {
			return l, true
		}
	}
	return Learned{}, false
}

// TestSpeakerRestart: Stop(true) leaves the routes; the peer keeps the
// stopped speaker's routes (graceful restart); a speaker started again
// keeps the previous one's routes until its peer's End-of-RIB, then drops
// those not learned again; Stop(false) removes everything, on both sides.
func TestSpeakerRestart(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	a := start(t, kA, conf(port, 1, 2), "A", pfx("10.1.0.0/24"))
	b := start(t, kB, conf(port, 2, 1), "B", pfx("10.2.0.0/24"))
	defer b.Stop(false)
	announce(t, a, "10.1.0.0/24")
	announce(t, b, "10.2.0.0/24", "10.3.0.0/24")
	both := []string{"10.2.0.0/24 via 127.0.0.2 dev v0 metric 186", "10.3.0.0/24 via 127.0.0.2 dev v0 metric 186"}
	waitFor(t, "A installs B's two subnets", 30*time.Second, tableIs(t, kA, both...))
	waitFor(t, "B installs A's subnet", 10*time.Second, tableIs(t, kB, "10.1.0.0/24 via 127.0.0.1 dev v0 metric 186"))

	a.Stop(true)
	if got := bgpTable(t, kA); !slices.Equal(got, both) {
		t.Fatalf("after Stop(true) A's table is %q, want its routes kept", got)
	}
	waitFor(t, "B sees A's session end", 10*time.Second, func() (bool, string) {
		p := b.Status().Peers[0]
		return p.State != StateEstablished, fmt.Sprintf("%+v", p)
	})
	waitFor(t, "B keeps A's path, stale", 10*time.Second, func() (bool, string) {
		l, _ := learnedOf(b, "10.1.0.0/24")
		return l.Stale && l.Installed, fmt.Sprintf("%+v", l)
	})
	if got := bgpTable(t, kB); !slices.Equal(got, []string{"10.1.0.0/24 via 127.0.0.1 dev v0 metric 186"}) {
		t.Errorf("B's table while A restarts: %q, want A's route kept", got)
	}
	t.Logf("B while A is down: %+v", b.Status().Peers[0])

	// While A is down, B withdraws 10.3; the new A must drop it once B's
	// End-of-RIB says B sent everything, and keep 10.2 all along.
	announce(t, b, "10.2.0.0/24")
	a2 := start(t, kA, conf(port, 1, 2), "A2", pfx("10.1.0.0/24"))
	defer a2.Stop(false)
	announce(t, a2, "10.1.0.0/24")
	if got := bgpTable(t, kA); !slices.Equal(got, both) {
		t.Fatalf("right after the restart A's table is %q, want the previous routes kept", got)
	}
	took := waitFor(t, "A2 drops what B no longer announces", 60*time.Second, tableIs(t, kA, "10.2.0.0/24 via 127.0.0.2 dev v0 metric 186"))
	t.Logf("takeover: 10.3 removed %s after the restart (the restart time is %ds: End-of-RIB ended it)", took.Round(time.Millisecond), restartTime)
	if took > 30*time.Second {
		t.Errorf("the takeover took %s: it waited for the timer, not End-of-RIB", took)
	}
	waitFor(t, "B's path from A is fresh again", 10*time.Second, func() (bool, string) {
		l, _ := learnedOf(b, "10.1.0.0/24")
		return !l.Stale && l.Installed, fmt.Sprintf("%+v", l)
	})

	a2.Stop(false)
	if got := bgpTable(t, kA); len(got) != 0 {
		t.Errorf("after Stop(false) A's table still has %q", got)
	}
	took = waitFor(t, "B drops A's routes (hard reset)", 10*time.Second, tableIs(t, kB))
	t.Logf("B dropped A's route %s after A's Stop(false)", took.Round(time.Millisecond))
	if p := b.Status().Peers[0]; p.LastError == "" {
		t.Errorf("B's peer status says no reason the session ended: %+v", p)
	} else {
		t.Logf("B's peer: %s since %s: %s", p.State, p.Since.Format(time.TimeOnly), p.LastError)
	}
}

// blackhole is a TCP relay that can go silent, as a link that went down
// does: while frozen it forwards nothing and closes nothing.
type blackhole struct {
	l      net.Listener
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

// relay listens on listen and joins each connection to to, dialled from
// from (so the far end sees the address it expects).
func relay(t *testing.T, listen, to, from string) *blackhole {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{l: l}
	t.Cleanup(func() { l.Close(); b.unfreeze() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: time.Second}
			u, err := d.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, u)
			b.mu.Unlock()
			go b.pipe(u, c)
			go b.pipe(c, u)
		}
	}()
	return b
}

func (b *blackhole) isFrozen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.frozen
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.isFrozen() {
			dst.Write(buf[:n])
		}
		if err != nil {
			if !b.isFrozen() {
				dst.Close()
			}
			return
		}
	}
}

func (b *blackhole) freeze() {
	b.mu.Lock()
	b.frozen = true
	b.mu.Unlock()
}

// unfreeze ends the connections that went through the silence (their
// streams lost bytes) and forwards again.
func (b *blackhole) unfreeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.frozen = false
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// TestSilentPeer: a peer that goes silent (its link down: no FIN, no
// RST) ends the session by the hold timer. GoBGP keeps its paths stale as
// for a graceful restart; the speaker removes its routes from the kernel
// all the same (they lead nowhere), and installs them again once the
// peer is back.
func TestSilentPeer(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	// A peers with 127.0.0.2, which is the relay; B listens on 127.0.0.12.
	hole := relay(t, fmt.Sprintf("127.0.0.2:%d", port), fmt.Sprintf("127.0.0.12:%d", port), "127.0.0.1")
	cb := conf(port, 2, 1)
	cb.Listen = []netip.Addr{addr("127.0.0.12")}
	a := start(t, kA, conf(port, 1, 2), "A", pfx("10.1.0.0/24"))
	defer a.Stop(false)
	b := start(t, kB, cb, "B", pfx("10.2.0.0/24"))
	defer b.Stop(false)
	announce(t, a, "10.1.0.0/24")
	announce(t, b, "10.2.0.0/24")
	route := "10.2.0.0/24 via 127.0.0.12 dev v0 metric 186"
	waitFor(t, "A installs B's subnet through the relay", 30*time.Second, tableIs(t, kA, route))

	hole.freeze()
	took := waitFor(t, "A removes the silent peer's route", 20*time.Second, tableIs(t, kA))
	t.Logf("silent peer's route removed %s after the silence began (hold %s)", took.Round(time.Millisecond), model.BGPMinHold)
	l, _ := learnedOf(a, "10.2.0.0/24")
	if l.Installed || !l.Stale || !strings.Contains(l.Why, "hold timer") {
		t.Errorf("A's path from the silent B = %+v, want stale, not installed, why naming the hold timer", l)
	}
	t.Logf("A's learned: %+v; peer: %+v", l, a.Status().Peers[0])

	hole.unfreeze()
	took = waitFor(t, "A installs B's route again once B is back", 40*time.Second, tableIs(t, kA, route))
	t.Logf("back %s after the link returned", took.Round(time.Millisecond))
}

// BenchmarkConverge1000: A announces 1,000 subnets; the time until B's
// kernel holds all 1,000 routes (protocol bgp), then until they are gone
// after A withdraws them.
func BenchmarkConverge1000(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespaces)")
	}
	var prefixes []netip.Prefix
	for i := range 1000 {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i/250), byte(i % 250), 0}), 24))
	}
	for range b.N {
		b.StopTimer()
		port := freePort(b)
		kA, kB := hostNS(b), hostNS(b)
		sa := New(kA, slog.New(slog.NewTextHandler(io.Discard, nil)))
		sb := New(kB, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err := sa.Configure(context.Background(), conf(port, 1, 2)); err != nil {
			b.Fatal(err)
		}
		if err := sb.Configure(context.Background(), conf(port, 2, 1)); err != nil {
			b.Fatal(err)
		}
		for ok, _ := established(sb); !ok; ok, _ = established(sb) {
			time.Sleep(20 * time.Millisecond)
		}
		b.StartTimer()
		start := time.Now()
		if err := sa.Announce(prefixes); err != nil {
			b.Fatal(err)
		}
		for countBGP(b, kB) < len(prefixes) {
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-install-1000")
		start = time.Now()
		if err := sa.Announce(nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-withdraw-call")
		for countBGP(b, kB) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-remove-1000")
		b.StopTimer()
		sa.Stop(false)
		sb.Stop(false)
	}
}

func countBGP(b *testing.B, k Kernel) int {
	rs, err := k.Routes()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, r := range rs {
		if r.Proto == model.ProtoBGP {
			n++
		}
	}
	return n
}
