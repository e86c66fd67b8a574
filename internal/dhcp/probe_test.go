package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeProber answers for the addresses in by (address -> MAC of whoever
// holds it) and records what it was asked.
type fakeProber struct {
	mu         sync.Mutex
	by         map[netip.Addr]string
	err        error
	probed     []netip.Addr
	prefetched []netip.Addr
}

var _ Prober = (*fakeProber)(nil)

func (f *fakeProber) Probe(a netip.Addr) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probed = append(f.probed, a)
	return f.by[a], f.err
}

func (f *fakeProber) Prefetch(as []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prefetched = append(f.prefetched, as...)
}

func offered(t *testing.T, h *Handler, hw []byte) netip.Addr {
	t.Helper()
	off := h.Handle(discover(t, hw))
	if off == nil {
		return netip.Addr{}
	}
	if off.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("discover: %v", off)
	}
	return addrOf(off.YourIPAddr)
}

// A squatter holds 10.99.0.100 without a lease: the client is offered the
// next address, the squatter's is abandoned and on disk, and neither it
// nor an address a client holds is probed again.
func TestProbeAbandonsAnsweredAddress(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	fp := &fakeProber{by: map[netip.Addr]string{addr("10.99.0.100"): "02:00:00:00:0b:ad"}}
	h.Prober = fp

	if got := lease(t, h, mac(1)); got != addr("10.99.0.101") {
		t.Fatalf("client got %s, want 10.99.0.101 (10.99.0.100 answers ARP)", got)
	}
	if !slices.Equal(fp.probed, []netip.Addr{addr("10.99.0.100"), addr("10.99.0.101")}) {
		t.Errorf("probed %v, want 10.99.0.100 then 10.99.0.101", fp.probed)
	}
	ab, ok := st.leases[addr("10.99.0.100")]
	if !ok || !ab.Declined || ab.MAC != "" || !ab.Expiry.Equal(c.t.Add(Quarantine)) {
		t.Errorf("abandoned address on disk: %+v (ok=%v), want declined, no MAC, for %v", ab, ok, Quarantine)
	}
	if !slices.Equal(fp.prefetched, []netip.Addr{addr("10.99.0.102")}) {
		t.Errorf("prefetched %v, want the next unrecorded address of the range, 10.99.0.102", fp.prefetched)
	}
	if h.Probes.Probes.Load() != 2 || h.Probes.InUse.Load() != 1 {
		t.Errorf("probe stats: %d probes, %d in use; want 2, 1", h.Probes.Probes.Load(), h.Probes.InUse.Load())
	}

	fp.probed = nil
	if got := offered(t, h, mac(1)); got != addr("10.99.0.101") {
		t.Errorf("the client's renewal DISCOVER got %s, want its 10.99.0.101", got)
	}
	if got := lease(t, h, mac(2)); got != addr("10.99.0.102") {
		t.Errorf("second client got %s, want 10.99.0.102", got)
	}
	if !slices.Equal(fp.probed, []netip.Addr{addr("10.99.0.102")}) {
		t.Errorf("probed %v, want only 10.99.0.102 (held and abandoned addresses are not probed)", fp.probed)
	}

	// Once the quarantine is over, the address is probed again; the
	// squatter is gone, so it is offered.
	c.t = c.t.Add(Quarantine + time.Second)
	delete(fp.by, addr("10.99.0.100"))
	fp.probed = nil
	if got := offered(t, h, mac(3)); got != addr("10.99.0.100") {
		t.Errorf("after the quarantine a third client got %s, want 10.99.0.100", got)
	}
	if !slices.Equal(fp.probed, []netip.Addr{addr("10.99.0.100")}) {
		t.Errorf("probed %v, want 10.99.0.100 again", fp.probed)
	}
}

// A client that already uses the address it is offered (it answers ARP for
// it itself) gets it: its own answer is no conflict.
func TestProbeClientAnswersForItself(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	h.Prober = &fakeProber{by: map[netip.Addr]string{addr("10.99.0.102"): mac(7).String()}}
	off := h.Handle(discover(t, mac(7), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addr("10.99.0.102").AsSlice()))))
	if off == nil || addrOf(off.YourIPAddr) != addr("10.99.0.102") {
		t.Fatalf("offer to the client holding 10.99.0.102: %v", off)
	}
	if len(st.leases) != 0 {
		t.Errorf("store written: %v", st.leases)
	}
}

// Every address answers, each from another host: bounded tries, no
// offer, all of them abandoned.
func TestProbeEveryAddressInUse(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	fp := &fakeProber{by: map[netip.Addr]string{}}
	for i, a := range []string{"10.99.0.100", "10.99.0.101", "10.99.0.102"} {
		fp.by[addr(a)] = fmt.Sprintf("02:00:00:00:0b:%02x", i)
	}
	h.Prober = fp
	if got := offered(t, h, mac(1)); got.IsValid() {
		t.Fatalf("offered %s although every address answers ARP", got)
	}
	if len(fp.probed) != 3 || len(st.leases) != 3 {
		t.Errorf("probed %v, stored %d; want the 3 addresses probed and abandoned", fp.probed, len(st.leases))
	}
}

// A failing probe does not stop DHCP: the address is offered unchecked
// and the failure counted.
func TestProbeErrorOffersUnchecked(t *testing.T) {
	h := newHandler(t, &memStore{leases: map[netip.Addr]Lease{}}, &clock{time.Unix(1e9, 0)})
	h.Prober = &fakeProber{err: errors.New("socket gone")}
	if got := offered(t, h, mac(1)); got != addr("10.99.0.100") {
		t.Errorf("offered %s, want 10.99.0.100", got)
	}
	if h.Probes.Errors.Load() != 1 {
		t.Errorf("probe errors: %d, want 1", h.Probes.Errors.Load())
	}
}

// TestPrefetchFollowsTheRate: a slow stream of new clients gets
// PrefetchAhead addresses probed in advance; one whose clients come a
// millisecond apart while a probe waits 200 ms gets twice as many as
// arrive meanwhile (capped by MaxPrefetchAhead), and a next DISCOVER
// prefetches only what lies beyond the window already under way.
func TestPrefetchFollowsTheRate(t *testing.T) {
	var s prefetchState
	if n := s.ahead(); n != PrefetchAhead {
		t.Fatalf("no stream measured: ahead %d, want %d", n, PrefetchAhead)
	}
	t0 := time.Unix(1e9, 0)
	s.observe(t0, 200*time.Millisecond)
	s.observe(t0.Add(time.Second), 0) // a cached result: no wait to learn
	if n := s.ahead(); n != PrefetchAhead {
		t.Errorf("one client a second, probes of 200 ms: ahead %d, want %d", n, PrefetchAhead)
	}
	var fast prefetchState
	for i := range 200 {
		fast.observe(t0.Add(time.Duration(i)*time.Millisecond), 200*time.Millisecond)
	}
	if n := fast.ahead(); n != 401 {
		t.Errorf("one client a millisecond, probes of 200 ms: ahead %d, want 401", n)
	}
	fast.gap = time.Microsecond
	if n := fast.ahead(); n != MaxPrefetchAhead {
		t.Errorf("a million clients a second: ahead %d, want the cap %d", n, MaxPrefetchAhead)
	}

	cfg := testConfig()
	cfg.Ranges[0].To = addr("10.99.0.250")
	h := &Handler{Pool: NewPool(cfg, (&clock{t0}).now, nil), Log: newHandler(t, &memStore{}, &clock{t0}).Log}
	fp := &fakeProber{}
	h.Prober = fp
	h.prefetching.gap, h.prefetching.wait = 10*time.Millisecond, 100*time.Millisecond // ahead: 21
	h.prefetch(addr("10.99.0.100"))
	if len(fp.prefetched) != 21 || fp.prefetched[0] != addr("10.99.0.101") || fp.prefetched[20] != addr("10.99.0.121") {
		t.Fatalf("first prefetch: %v, want 10.99.0.101 to .121", fp.prefetched)
	}
	fp.prefetched = nil
	h.prefetch(addr("10.99.0.101"))
	if !slices.Equal(fp.prefetched, []netip.Addr{addr("10.99.0.122")}) {
		t.Fatalf("next client's prefetch: %v, want only 10.99.0.122", fp.prefetched)
	}
}
