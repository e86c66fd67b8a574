package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestGuests6SkipsVXLANPort: a stretched network's VXLAN device is a port
// of its bridge but no guest port (it carries the other hosts' guests):
// the daemon puts it in no first-come set, as it puts no uplink; the
// network's other ports are guarded as before.
func TestGuests6SkipsVXLANPort(t *testing.T) {
	st := model.Network{Name: "stretch", Mode: model.NAT, Bridge: "gst0", IPv4: netip.MustParsePrefix("10.60.0.1/24"), VXLAN: &model.VXLAN{VNI: 6000}}
	masters := map[string]portLink{"gvx6000": {bridge: "gst0"}, "vnet3": {bridge: "gst0"}}
	got := learnedGuests6([]model.Network{st}, masters, nil)
	if want := []string{"vnet3"}; !slices.Equal(got.Guests6, want) {
		t.Errorf("guests6_learned %q, want %q (no %s)", got.Guests6, want, model.VXLANName(6000))
	}
	for _, p := range got.Prefixes6 {
		if p.Port == "gvx6000" {
			t.Errorf("prefixes6_learned holds the VXLAN port: %v", p)
		}
	}
}
