package bgp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestImportableNextHopHostile: a peer names a next hop that is no
// router of the LAN. A guest's address inside one of this host's networks
// (its bridge is a connected subnet, so the next hop looks directly
// reachable) would steer the prefix's traffic, from the uplink and from
// the other guests, into that tenant's VM; the network or broadcast
// address of a connected subnet is no host at all. None is installed.
func TestImportableNextHopHostile(t *testing.T) {
	pol := Policy{
		Import:  model.DefaultImport,
		Protect: []netip.Prefix{pfx("10.71.0.0/24"), pfx("10.72.0.0/24")},
	}
	tests := []struct {
		name, nh, whyHas string
	}{
		{"a guest of a network that is up (its bridge is connected)", "10.71.0.5", "inside this host's network 10.71.0.0/24"},
		{"a guest of a network whose bridge is down", "10.72.0.5", "inside this host's network 10.72.0.0/24"},
		{"the network address of the LAN", "10.10.0.0", "network address"},
		{"the broadcast address of the LAN", "10.10.0.255", "broadcast address"},
		{"the broadcast address of the longer LAN subnet", "10.10.0.15", "broadcast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, why, _ := Importable(pfx("10.90.0.0/24"), addr(tt.nh), pol, hostRoutes())
			if dev != "" || !strings.Contains(why, tt.whyHas) {
				t.Errorf("Importable(10.90.0.0/24 via %s) = dev %q, why %q; want it refused, saying %q", tt.nh, dev, why, tt.whyHas)
			}
		})
	}
}
