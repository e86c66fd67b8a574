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
