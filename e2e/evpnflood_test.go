package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// A hostile guest on an unbound port of a stretched network floods its
// bridge with random source MACs. Each MAC the bridge learns is a local
// guest to the evpn service; announced as a type-2 route each, 12,000 of
// them pass every peer's max_prefixes (10,000): the peers shut their
// session with this host down, and every guest of this host is cut off
// from the other hosts until someone restarts serve. The evpn service
// announces at most model.EVPNMaxMACsPerPort MACs of one port: the
// session stays up and the other guests keep reaching each other.
func TestEVPNMACFloodKeepsOverlay(t *testing.T) {
	b := newBGPLab(t, 2)
	h1, h2 := b.Hosts[0], b.Hosts[1]
	spec := filepath.Join(b.dir, "shared.yaml")
	if err := os.WriteFile(spec, []byte(evpnSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	h1.D, h2.D = b.Serve_(h1.NS, spec), b.Serve_(h2.NS, spec)
	gA := b.evpnGuest(h1, "gA", "vgA", "52:54:00:00:00:01", "10.60.0.101")
	b.evpnGuest(h2, "gB", "vgB", "52:54:00:00:00:02", "10.60.0.102")
	gF := b.evpnGuest(h2, "gF", "vgF", "52:54:00:00:00:0f", "10.60.0.115")
	waitUntil(t, "gA (host 1) reaches gB (host 2) over EVPN", 30*time.Second, func() bool { return b.Ping(gA, "10.60.0.102") })

	start := time.Now()
	b.macFlood(gF, 12000)
	t.Logf("12,000 frames from random source MACs in %v; host 2's bridge learned %d entries", time.Since(start).Round(time.Millisecond),
		strings.Count(b.In(h2.NS, "bridge", "fdb", "show", "br", "gst0"), "\n"))

	// Long enough for host 2 to announce all it announces and host 1 to
	// take it in (about 350 routes a second here) or shut the session.
	most := 0
	for deadline := time.Now().Add(50 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		for _, p := range b.BGPStatus(h1.NS).Peers {
			if p.Address == h2.Addr && p.State != "established" {
				t.Fatalf("host 1's session with host 2 is %q after a guest of host 2 flooded MACs (host 1 had installed %d of its MACs): one guest cut the overlay\n%s",
					p.State, most, b.Guestnet(h1.NS, "bgp"))
			}
		}
		most = max(most, len(b.evpnOf(h1).Remote))
	}
	if most > model.EVPNMaxMACsPerPort+2 {
		t.Fatalf("host 1 installed up to %d remote MACs of host 2 (FDB entries), want at most %d of the flooding port and the 2 others", most, model.EVPNMaxMACsPerPort)
	}
	st := b.evpnOf(h2)
	t.Logf("host 2 announces %d local MACs, host 1 installs %d remote MACs", len(st.Local), len(b.evpnOf(h1).Remote))
	if len(st.Local) > model.EVPNMaxMACsPerPort+2 {
		t.Fatalf("host 2 announces %d MACs, want at most %d of the flooding port and the 2 others", len(st.Local), model.EVPNMaxMACsPerPort)
	}
	if !b.Ping(gA, "10.60.0.102") {
		t.Fatal("after the flood, gA (host 1) no longer reaches gB (host 2)")
	}
	for _, mac := range []string{"52:54:00:00:00:02", "52:54:00:00:00:0f"} {
		if _, ok := seqOf(st, mac); !ok {
			t.Fatalf("host 2 no longer announces %s, a MAC it had before the flood", mac)
		}
	}
	if out := b.Guestnet(h2.NS, "status"); !strings.Contains(out, "not announced") {
		t.Fatalf("host 2's status does not say MACs went unannounced:\n%s", out)
	}
}
