package daemon

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeARP is an open ARP socket that counts its probes and says when it
// is closed.
type fakeARP struct {
	mu     sync.Mutex
	probes int
	closed chan struct{}
}

func (f *fakeARP) Probe(netip.Addr) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes++
	return "", nil
}

func (f *fakeARP) Prefetch([]netip.Addr) {}

func (f *fakeARP) Close() error { close(f.closed); return nil }

var _ arpSocket = (*fakeARP)(nil)

// TestBridgeProberOpensOnDemand: a network holds no ARP socket until a
// probe needs one; probes share the socket; it is closed once idle, and
// at once when the bridge is re-created (the next probe opens the new
// bridge's); a socket that cannot be opened fails the probe (the handler
// then offers unchecked and logs why).
func TestBridgeProberOpensOnDemand(t *testing.T) {
	var opened []*fakeARP
	fail := false
	b := &bridgeProber{idle: time.Millisecond, open: func() (arpSocket, error) {
		if fail {
			return nil, errors.New("no such bridge")
		}
		s := &fakeARP{closed: make(chan struct{})}
		opened = append(opened, s)
		return s, nil
	}}
	if len(opened) != 0 {
		t.Fatal("a socket was opened before any probe")
	}
	// Two probes at once share one socket: the first is still in use.
	first, err := b.get()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Probe(netip.MustParseAddr("10.99.0.100")); err != nil {
		t.Fatal(err)
	}
	if len(opened) != 1 || opened[0].probes != 1 {
		t.Fatalf("opened %d sockets, %d probes on the first", len(opened), opened[0].probes)
	}
	select {
	case <-opened[0].closed:
		t.Fatal("closed while a probe still held it")
	default:
	}
	b.put(first)
	<-opened[0].closed // idle: closed (the test's deadline fails a socket never closed)

	b.Probe(netip.MustParseAddr("10.99.0.101"))
	if len(opened) != 2 {
		t.Fatalf("a probe after the idle close opened %d sockets in all, want 2", len(opened))
	}
	// The bridge is re-created: closed now, the next probe opens anew.
	b.idle = time.Hour
	b.Probe(netip.MustParseAddr("10.99.0.102"))
	b.close()
	<-opened[1].closed
	b.Probe(netip.MustParseAddr("10.99.0.103"))
	if len(opened) != 3 || opened[2].probes != 1 {
		t.Fatalf("after close: %d sockets opened, want 3", len(opened))
	}
	b.close()
	fail = true
	if _, err := b.Probe(netip.MustParseAddr("10.99.0.104")); err == nil {
		t.Error("a probe without a socket did not fail")
	}
}
