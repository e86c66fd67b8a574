package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
)

// TestForgetClaims6: the IPv6 claims of a port that left its bridge are
// removed through Learn, those of ports still in a bridge stay, and a
// claim about to lapse is left to the kernel (deleting an element the
// kernel dropped meanwhile would fail the whole transaction).
func TestForgetClaims6(t *testing.T) {
	a := netip.MustParseAddr
	k := &fake.Kernel{}
	k.Host.Guard = model.Guard{On: true, Claims6: []model.Claim6{
		{Port: "vnet1", IP: a("fd42:99::1"), Left: time.Minute},
		{Port: "vnet2", IP: a("fd42:99::2"), Left: time.Minute},
		{Port: "vnet2", IP: a("fe80::2"), Left: time.Minute},
		{Port: "vnet3", IP: a("fd42:99::3"), Left: time.Second},
	}}
	d := &Daemon{Engine: engine.New(k, filepath.Join(t.TempDir(), "state.json")), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ctx: context.Background()}
	d.forgetClaims6(k.Host.Guard.Claims6, map[string]portLink{"vnet1": {bridge: "gnat0"}})
	var left []string
	for _, c := range k.Host.Guard.Claims6 {
		left = append(left, c.Port+" "+c.IP.String())
	}
	if want := []string{"vnet1 fd42:99::1", "vnet3 fd42:99::3"}; !slices.Equal(left, want) {
		t.Errorf("claims left %q, want %q", left, want)
	}
}

// TestLeaseClaims6: a DHCPv6 lease claims its address for its port, for
// its lifetime; a lease of an address another port holds claims nothing;
// the lease's end releases the claim.
func TestLeaseClaims6(t *testing.T) {
	a := netip.MustParseAddr
	k := &fake.Kernel{}
	k.Host.Guard = model.Guard{On: true, Claims6: []model.Claim6{{Port: "vnet2", IP: a("fd42:99::2"), Left: time.Minute}}}
	d := &Daemon{Engine: engine.New(k, filepath.Join(t.TempDir(), "state.json")), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ctx: context.Background()}
	d.view.Store(&learnView{guarded: map[string]bool{"default": true}})
	b := claims6{d}
	l := dhcp.Lease6{IP: a("fd42:99::100"), Port: "vnet1", Expiry: time.Now().Add(time.Hour)}
	b.Bound6("default", l)
	b.Bound6("default", dhcp.Lease6{IP: a("fd42:99::2"), Port: "vnet1", Expiry: time.Now().Add(time.Hour)}) // vnet2's
	b.Bound6("other", dhcp.Lease6{IP: a("fd42:98::1"), Port: "vnet9", Expiry: time.Now().Add(time.Hour)})   // not guarded
	got := k.Host.Guard.ClaimsOf("vnet1")
	if !slices.Equal(got, []netip.Addr{a("fd42:99::100")}) {
		t.Fatalf("vnet1 claims %v, want its lease's address only", got)
	}
	if i := slices.IndexFunc(k.Host.Guard.Claims6, func(c model.Claim6) bool { return c.Port == "vnet1" }); k.Host.Guard.Claims6[i].Left < 59*time.Minute {
		t.Errorf("the claim lives %v, want the lease's hour", k.Host.Guard.Claims6[i].Left)
	}
	if len(k.Host.Guard.ClaimsOf("vnet9")) > 0 {
		t.Error("a lease on an unguarded network made a claim")
	}
	b.Unbound6("default", l)
	if got := k.Host.Guard.ClaimsOf("vnet1"); len(got) > 0 {
		t.Errorf("after the lease ended vnet1 still claims %v", got)
	}
}

// TestSyncGuests6: every port of a first-come network's bridge that attach
// did not declare goes into guests6_learned with the network's prefixes;
// declared ports, ports of mode bridge and open networks and of no bridge
// do not; a port that left its bridge leaves the sets at the next sync.
func TestSyncGuests6(t *testing.T) {
	p := netip.MustParsePrefix
	nat := model.Network{Name: "nat", Mode: model.NAT, Bridge: "gnat0", IPv4: p("10.42.0.1/24"), IPv6: p("fd42:1::1/64")}
	v4only := model.Network{Name: "v4", Mode: model.Routed, Bridge: "gr0", IPv4: p("10.43.0.1/24")}
	open := model.Network{Name: "open", Mode: model.Open, Bridge: "gopen0", IPv6: p("fd42:2::1/64")}
	lan := model.Network{Name: "lan", Mode: model.Bridge, Bridge: "glan0"}
	masters := map[string]portLink{
		"vnet0": {bridge: "gnat0"}, "vnet1": {bridge: "gnat0"}, "vg1": {bridge: "gr0"},
		"vo": {bridge: "gopen0"}, "eth9": {bridge: "glan0"}, "other": {bridge: "br-x"},
	}
	got := learnedGuests6([]model.Network{nat, v4only, open, lan}, masters, []string{"vnet0"})
	if want := []string{"vg1", "vnet1"}; !slices.Equal(got.Guests6, want) {
		t.Errorf("guests6_learned %q, want %q", got.Guests6, want)
	}
	want := model.SortPortPrefixes([]model.PortPrefix{{Port: "vg1", Prefix: model.LinkLocal}, {Port: "vnet1", Prefix: model.LinkLocal}, {Port: "vnet1", Prefix: p("fd42:1::/64")}})
	if !slices.Equal(got.Prefixes6, want) {
		t.Errorf("prefixes6_learned %v, want %v", got.Prefixes6, want)
	}

	// The leases' bindings and the ports are one owner's elements: a sync
	// leaves both as they are (neither deletes the other's).
	binds := []model.Bind{{Port: "vnet1", MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("10.42.0.5")}}
	e := learnedElems(binds, []model.Network{nat}, masters, []string{"vnet0"})
	k := &fake.Kernel{}
	k.Host.Guard = model.Guard{On: true, Guests6: []string{"vnet0"}}
	if err := k.Learn(e, model.Elems{}); err != nil {
		t.Fatal(err)
	}
	if add, del := model.DiffElems(k.Host.Guard.LearnedElems(), learnedElems(binds, []model.Network{nat}, masters, []string{"vnet0"})); add.Len()+del.Len() > 0 {
		t.Errorf("a second sync would add %+v, delete %+v", add, del)
	}
	if want := []string{"vnet1"}; !slices.Equal(k.Host.Guard.LearnedGuests6, want) || len(k.Host.Guard.Learned) != 1 {
		t.Fatalf("after the sync guests6_learned %q, learned %v; want %q and the lease", k.Host.Guard.LearnedGuests6, k.Host.Guard.Learned, want)
	}
	delete(masters, "vnet1")
	add, del := model.DiffElems(k.Host.Guard.LearnedElems(), learnedElems(nil, []model.Network{nat}, masters, []string{"vnet0"}))
	if err := k.Learn(add, del); err != nil {
		t.Fatal(err)
	}
	if len(k.Host.Guard.LearnedGuests6)+len(k.Host.Guard.LearnedPrefixes6) > 0 {
		t.Errorf("vnet1 left its bridge, the sets still hold %q %v", k.Host.Guard.LearnedGuests6, k.Host.Guard.LearnedPrefixes6)
	}
}
