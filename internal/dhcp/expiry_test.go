package dhcp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLeaseEventsLogged: a lease granted, renewed and run out each leave
// one INFO line naming the client, and an expiry is logged once.
func TestLeaseEventsLogged(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, &memStore{leases: map[netip.Addr]Lease{}}, c)
	var buf bytes.Buffer
	h.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	a := lease(t, h, mac(1))
	c.t = c.t.Add(30 * time.Minute)
	if got := lease(t, h, mac(1)); got != a {
		t.Fatalf("renewal got %s, want %s", got, a)
	}
	if n := len(h.LogExpired()); n != 0 {
		t.Fatalf("%d leases reported expired while the lease holds", n)
	}
	c.t = c.t.Add(61 * time.Minute)
	if got := h.LogExpired(); len(got) != 1 || got[0].IP != a {
		t.Fatalf("expired: %v, want the lease of %s", got, a)
	}
	if n := len(h.LogExpired()); n != 0 {
		t.Fatalf("an expiry was reported %d more times", n)
	}
	log := buf.String()
	for _, want := range []string{
		`msg="dhcp lease granted" mac=52:54:00:00:00:01 ip=` + a.String(),
		`msg="dhcp lease renewed" mac=52:54:00:00:00:01 ip=` + a.String(),
		`msg="dhcp lease expired" mac=52:54:00:00:00:01 ip=` + a.String(),
	} {
		if strings.Count(log, want) != 1 {
			t.Errorf("log has %q %d times, want once:\n%s", want, strings.Count(log, want), log)
		}
	}
	// The same client back after its lease ran out: granted again, and
	// its next expiry is a new one.
	lease(t, h, mac(1))
	c.t = c.t.Add(2 * time.Hour)
	if n := len(h.LogExpired()); n != 1 {
		t.Fatalf("the second lease's expiry reported %d times, want 1", n)
	}
}
