package daemon

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

func TestWithHostRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	subnets := []netip.Prefix{p("10.60.0.0/24"), p("10.70.0.0/24")}
	hosts := []netip.Prefix{p("10.60.0.101/32"), p("10.61.0.5/32"), p("10.70.0.9/32"), p("10.60.0.101/32")}
	got := fmt.Sprint(withHostRoutes(subnets, hosts))
	if want := "[10.60.0.0/24 10.60.0.101/32 10.70.0.0/24 10.70.0.9/32]"; got != want {
		t.Fatalf("announced %s, want %s (a host route goes out only inside an announced subnet)", got, want)
	}
	// The subnet withdrawn ahead of its network's removal takes its
	// guests' host routes with it.
	if got, want := fmt.Sprint(withHostRoutes(subnets[1:], hosts)), "[10.70.0.0/24 10.70.0.9/32]"; got != want {
		t.Fatalf("announced %s, want %s", got, want)
	}
}

// The networks whose guests get host routes are those whose subnet BGP
// announces.
func TestAnnouncesSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tt := range []struct {
		n    model.Network
		want bool
	}{
		{model.Network{Name: "r", Mode: model.Routed, IPv4: p("10.60.0.1/24")}, true},
		{model.Network{Name: "rf", Mode: model.NAT, IPv4: p("10.61.0.1/24"), RoutedFrom: []netip.Prefix{p("10.10.0.0/24")}}, true},
		{model.Network{Name: "nat", Mode: model.NAT, IPv4: p("10.62.0.1/24")}, false},
		{model.Network{Name: "iso", Mode: model.Isolated, IPv4: p("10.63.0.1/24")}, false},
		{model.Network{Name: "quiet", Mode: model.Routed, IPv4: p("10.64.0.1/24"), NoAnnounce: true}, false},
	} {
		if got := announcesSubnet(tt.n); got != tt.want {
			t.Errorf("%s (%s): host routes %v, want %v", tt.n.Name, tt.n.Mode, got, tt.want)
		}
	}
}
