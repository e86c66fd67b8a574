package daemon

import (
	"fmt"
	"net/netip"
	"testing"
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
