package dhcp

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// noQuorum is a Store whose cluster is out of reach.
type noQuorum struct{ *memStore }

func (noQuorum) Put(string, Lease) error {
	return fmt.Errorf("store the lease: %w: context deadline exceeded", ErrNoQuorum)
}

// TestRenewalWithoutQuorum: with the lease cluster out of reach, a client
// renewing the live lease this host wrote gets an ACK for the time the
// lease has left (T1 and T2 scaled to it), the lease unchanged; a new
// client, a stranger asking for that address, and a client whose lease
// another host wrote get no ACK.
func TestRenewalWithoutQuorum(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	st := &memStore{leases: map[netip.Addr]Lease{}}
	cfg := testConfig()
	cfg.Host = "h1"
	h := &Handler{Pool: NewPool(cfg, c.now, nil), Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a := lease(t, h, mac(1))
	h.Pool.Apply(Lease{MAC: mac(3).String(), IP: addr("10.99.0.102"), Expiry: c.t.Add(time.Hour), Host: "h2"})
	h.Store = noQuorum{st}
	c.t = c.t.Add(20 * time.Minute)
	before, _ := h.Pool.Lookup(mac(1).String())

	r := h.Handle(discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip4(a))))
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || addrOf(r.YourIPAddr) != a {
		t.Fatalf("renewal without quorum: %v", r)
	}
	if got := [3]time.Duration{r.IPAddressLeaseTime(0), r.IPAddressRenewalTime(0), r.IPAddressRebindingTime(0)}; got != [3]time.Duration{40 * time.Minute, 20 * time.Minute, 35 * time.Minute} {
		t.Errorf("lease, T1, T2 = %v, want the 40m left, 20m, 35m", got)
	}
	if after, _ := h.Pool.Lookup(mac(1).String()); after != before {
		t.Errorf("the lease changed without a write: %+v, was %+v", after, before)
	}
	for _, tc := range []struct {
		what string
		n    byte
		a    netip.Addr
	}{{"a stranger asking for the address", 2, a}, {"a lease another host wrote", 3, addr("10.99.0.102")}, {"a new client", 4, addr("10.99.0.101")}} {
		req := discover(t, mac(tc.n), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(tc.a))))
		if r := h.Handle(req); r != nil && r.MessageType() == dhcpv4.MessageTypeAck {
			t.Errorf("%s: ACKed without quorum", tc.what)
		}
	}
	if h.Stats.Held.Load() != 1 || h.Stats.NoQuorum.Load() != 2 {
		t.Errorf("Held %d, NoQuorum %d; want 1 and 2 (the stranger is NAKed)", h.Stats.Held.Load(), h.Stats.NoQuorum.Load())
	}
	c.t = c.t.Add(41 * time.Minute) // the lease has expired: nothing left to hold
	if r := h.Handle(discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip4(a)))); r != nil {
		t.Errorf("renewal of an expired lease without quorum answered %v", r.MessageType())
	}
}
