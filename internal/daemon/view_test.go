package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
)

// A quarantine that ran out (abandoned or declined) is listed as expired:
// the address is free again, not still "abandoned".
func TestViewStates(t *testing.T) {
	now := time.Unix(1e9, 0)
	ip := netip.MustParseAddr("10.99.0.100")
	for _, c := range []struct {
		l    dhcp.Lease
		want string
	}{
		{dhcp.Lease{MAC: "52:54:00:00:00:01", IP: ip, Expiry: now.Add(time.Hour)}, "bound"},
		{dhcp.Lease{MAC: "52:54:00:00:00:01", IP: ip, Expiry: now.Add(-time.Hour)}, "expired"},
		{dhcp.Lease{IP: ip, Declined: true, Expiry: now.Add(time.Minute)}, "abandoned"},
		{dhcp.Lease{IP: ip, Declined: true, Expiry: now.Add(-time.Minute)}, "expired"},
		{dhcp.Lease{MAC: "52:54:00:00:00:01", IP: ip, Declined: true, Expiry: now.Add(time.Minute)}, "declined"},
		{dhcp.Lease{MAC: "52:54:00:00:00:01", IP: ip, Declined: true, Expiry: now.Add(-time.Minute)}, "expired"},
	} {
		if got := view("default", c.l, now).State; got != c.want {
			t.Errorf("%+v: state %q, want %q", c.l, got, c.want)
		}
	}
}
