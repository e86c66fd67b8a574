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
