package dns

import (
	"net"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestForwardsBounded: with MaxForwards queries waiting on a mute
// upstream, the next forwarded query is answered SERVFAIL at once (no
// socket opened for it), the network's own names are still answered,
// and once the upstream answers again so are forwarded queries.
func TestForwardsBounded(t *testing.T) {
	u := startUpstream(t)
	s := newServer("10.99.0.0/24", u)
	mute := make(chan struct{})
	entered := make(chan struct{}, MaxForwards+1)
	var dials sync.Mutex
	dialed := 0
	s.Dial = func(network, addr string) (net.Conn, error) {
		dials.Lock()
		dialed++
		dials.Unlock()
		entered <- struct{}{}
		<-mute // the upstream is slow until the test releases it
		return net.Dial(network, addr)
	}
	var wg sync.WaitGroup
	for range MaxForwards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeDNS(&writer{remote: from("udp", "10.99.0.50:40000")}, query("small.example.", mdns.TypeA))
		}()
	}
	for range MaxForwards {
		<-entered
	}
	w := &writer{remote: from("udp", "10.99.0.51:40000")}
	s.ServeDNS(w, query("small.example.", mdns.TypeA)) // returns: nothing to wait on
	if w.got == nil || w.got.Rcode != mdns.RcodeServerFailure {
		t.Errorf("query beyond MaxForwards: %v, want SERVFAIL at once", w.got)
	}
	if got := s.Overloaded.Load(); got != 1 {
		t.Errorf("Overloaded = %d, want 1", got)
	}
	w = &writer{remote: from("udp", "10.99.0.51:40000")}
	s.ServeDNS(w, query("vm1.lab.internal.", mdns.TypeA))
	if w.got == nil || len(w.got.Answer) != 1 {
		t.Errorf("a local name while the forwards are full: %v", w.got)
	}
	close(mute)
	wg.Wait()
	dials.Lock()
	n := dialed
	dials.Unlock()
	if n != MaxForwards {
		t.Errorf("%d upstream sockets opened, want %d (none for the refused query)", n, MaxForwards)
	}
	w = &writer{remote: from("udp", "10.99.0.51:40000")}
	s.ServeDNS(w, query("small.example.", mdns.TypeA))
	if w.got == nil || len(w.got.Answer) != 1 {
		t.Errorf("a forwarded query once the upstream answers again: %v", w.got)
	}
}
