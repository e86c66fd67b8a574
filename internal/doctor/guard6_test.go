package doctor

import (
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestPorts6Unguarded: without guestnet serve, a port of a first-come
// network's bridge that attach did not add is reported; one attach added
// (guests6) or the daemon guards (guests6_learned) is not, nor any port
// while the daemon runs, nor a port of an open network.
func TestPorts6Unguarded(t *testing.T) {
	in := healthy()
	in.Diag.Daemon = false
	in.Host.Links = append(in.Host.Links, model.Link{Name: "vnet7", Kind: "tuntap", Up: true, Master: "gnat0"},
		model.Link{Name: "vnet8", Kind: "tuntap", Up: true, Master: "gnat0"})
	in.Host.Guard = model.Guard{On: true, Guests6: []string{"tap0"}, LearnedGuests6: []string{"vnet8"}}
	got := checkPorts6(in)
	if len(got) != 1 || got[0].Severity != Warning || !strings.Contains(got[0].What, "vnet7") ||
		strings.Contains(got[0].What, "vnet8") || strings.Contains(got[0].What, "tap0") || !strings.Contains(got[0].Fix, "guestnet attach default vnet7") {
		t.Fatalf("findings %+v, want one warning naming vnet7 alone", got)
	}
	t.Logf("%s\n  fix: %s", got[0].What, got[0].Fix)
	in.Diag.Daemon = true
	if got := checkPorts6(in); len(got) > 0 {
		t.Errorf("with the daemon running: %+v", got)
	}
	in.Diag.Daemon = false
	in.Networks[0].Mode = model.Open
	if got := checkPorts6(in); len(got) > 0 {
		t.Errorf("an open network: %+v", got)
	}
}

// The VXLAN device of a stretched network is a port of its bridge that
// carries other hosts' guests: no guest port that attach forgot (a TAP
// beside it still is).
func TestPorts6VXLANPortIsNoGuest(t *testing.T) {
	in := withStretch()
	in.Diag.Daemon = false
	in.Host.Guard = model.Guard{On: true, Guests6: []string{"tap0"}}
	if got := checkPorts6(in); len(got) > 0 {
		t.Errorf("the VXLAN port reported as an unguarded guest port: %+v", got)
	}
	in.Host.Links = append(in.Host.Links, model.Link{Name: "vnet7", Kind: "tuntap", Up: true, Master: "gst0"})
	if got := checkPorts6(in); len(got) != 1 || !strings.Contains(got[0].What, "vnet7") || strings.Contains(got[0].What, "gvx6000") {
		t.Errorf("a TAP by hand in gst0: findings %+v, want it reported, and not the VXLAN port", got)
	}
}
