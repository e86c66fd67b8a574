package bgp

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
)

// localPaths lists the paths this host originates in GoBGP's RIB.
func localPaths(t *testing.T, s *Speaker) []string {
	t.Helper()
	var out []string
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: gobgp.RF_IPv4_UC},
		func(nlri gobgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.PeerASN == 0 {
					out = append(out, nlri.String())
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestAnnounceDiff: Announce adds what is new and withdraws what is gone
// by the UUIDs AddPath returned; a prefix announced all along keeps its
// path (its UUID). A GoBGP server with no peers, listening on loopback.
func TestAnnounceDiff(t *testing.T) {
	k := &fake.Kernel{Host: fake.BaseHost()}
	s := New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Announced before the start: carried at the start.
	if err := s.Announce([]netip.Prefix{pfx("10.1.0.0/24"), pfx("10.2.0.0/24"), pfx("fd00:1::/64")}); err != nil {
		t.Fatal(err)
	}
	c := model.BGP{ASN: 65001, RouterID: addr("10.255.0.1"), Listen: []netip.Addr{addr("127.0.0.1")}, Port: freePort(t), Import: model.DefaultImport}
	if err := s.Configure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(false)
	if got := localPaths(t, s); !slices.Equal(got, []string{"10.1.0.0/24", "10.2.0.0/24"}) {
		t.Fatalf("RIB after start = %q, want the two IPv4 prefixes", got)
	}
	before := maps.Clone(s.paths)

	if err := s.Announce([]netip.Prefix{pfx("10.3.0.0/24"), pfx("10.2.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if got := localPaths(t, s); !slices.Equal(got, []string{"10.2.0.0/24", "10.3.0.0/24"}) {
		t.Fatalf("RIB = %q, want 10.2 kept, 10.3 added, 10.1 withdrawn", got)
	}
	if s.paths[pfx("10.2.0.0/24")] != before[pfx("10.2.0.0/24")] {
		t.Errorf("10.2.0.0/24 was announced again (UUID %s, was %s)", s.paths[pfx("10.2.0.0/24")], before[pfx("10.2.0.0/24")])
	}
	if _, ok := s.paths[pfx("10.1.0.0/24")]; ok || len(s.paths) != 2 || s.paths[pfx("10.3.0.0/24")] == (uuid.UUID{}) {
		t.Errorf("paths = %v", s.paths)
	}
	if st := s.Status(); !slices.Equal(st.Announced, []netip.Prefix{pfx("10.2.0.0/24"), pfx("10.3.0.0/24")}) {
		t.Errorf("Status().Announced = %v", st.Announced)
	}

	// The same set again: nothing added, nothing withdrawn.
	same := maps.Clone(s.paths)
	if err := s.Announce([]netip.Prefix{pfx("10.2.0.0/24"), pfx("10.3.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(s.paths, same) {
		t.Errorf("paths changed on the same set: %v, was %v", s.paths, same)
	}

	// A changed router ID restarts the server; the announced set follows.
	c.RouterID = addr("10.255.0.9")
	if err := s.Configure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.RouterID != c.RouterID {
		t.Errorf("router ID after the restart = %s", st.RouterID)
	}
	if got := localPaths(t, s); !slices.Equal(got, []string{"10.2.0.0/24", "10.3.0.0/24"}) {
		t.Errorf("RIB after the restart = %q", got)
	}

	// Many withdrawn at once (named by their paths, not their UUIDs).
	var many []netip.Prefix
	for i := range 40 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(i), 0}), 24))
	}
	if err := s.Announce(many); err != nil {
		t.Fatal(err)
	}
	if got := localPaths(t, s); len(got) != 40 {
		t.Fatalf("RIB holds %d paths, want 40", len(got))
	}
	if err := s.Announce(many[:2]); err != nil {
		t.Fatal(err)
	}
	if got := localPaths(t, s); !slices.Equal(got, []string{"10.50.0.0/24", "10.50.1.0/24"}) || len(s.paths) != 2 {
		t.Errorf("after withdrawing 38: RIB %q, paths %v", got, s.paths)
	}

	s.Stop(false)
	if st := s.Status(); st.ASN != 0 || len(st.Announced) != 0 {
		t.Errorf("Status after Stop = %+v, want zero", st)
	}
}

// TestTakeover: the previous speaker's routes are kept until every peer
// sent its End-of-RIB, or the restart time passed.
func TestTakeover(t *testing.T) {
	s := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reset := func(by time.Time) {
		s.inherited = map[netip.Prefix]bool{pfx("10.9.0.0/24"): true}
		s.takeoverBy = by
		s.peers = map[netip.Addr]*peer{addr("10.10.0.2"): {}, addr("10.10.0.3"): {}}
	}
	reset(time.Now().Add(time.Hour))
	if keep := s.takeoverLocked(); !keep[pfx("10.9.0.0/24")] {
		t.Fatal("no End-of-RIB yet: the routes must be kept")
	}
	s.peers[addr("10.10.0.2")].eor = true
	if keep := s.takeoverLocked(); !keep[pfx("10.9.0.0/24")] {
		t.Fatal("one peer's End-of-RIB of two: the routes must be kept")
	}
	s.peers[addr("10.10.0.3")].eor = true
	if keep := s.takeoverLocked(); keep != nil || s.inherited != nil {
		t.Fatalf("every peer's End-of-RIB: the takeover must end, kept %v", keep)
	}
	reset(time.Now().Add(-time.Second))
	if keep := s.takeoverLocked(); keep != nil {
		t.Fatalf("the restart time passed: the takeover must end, kept %v", keep)
	}
}
