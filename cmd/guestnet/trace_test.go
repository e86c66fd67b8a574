package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestEndpoints: an interface stands for its address of the other end's
// family (never its link-local one); ends of two families are refused.
func TestEndpoints(t *testing.T) {
	p := netip.MustParsePrefix
	h := model.Host{Links: []model.Link{
		{Name: "gnat0", Addrs: []netip.Prefix{p("fe80::1/64"), p("10.99.0.1/24"), p("fd42:99::1/64")}},
		{Name: "grt0", Addrs: []netip.Prefix{p("fe80::2/64"), p("2001:db8:71::1/64")}},
	}}
	for _, c := range []struct{ from, to, src, dst, err string }{
		{"gnat0", "2001:db8:ff::2", "fd42:99::1", "2001:db8:ff::2", ""},
		{"gnat0", "203.0.113.10", "10.99.0.1", "203.0.113.10", ""},
		{"fd42:99::10", "gnat0", "fd42:99::10", "fd42:99::1", ""},
		{"gnat0", "grt0", "10.99.0.1", "", "must be of one family"},
		{"grt0", "gnat0", "2001:db8:71::1", "fd42:99::1", ""},
		{"fe80::10%gnat0", "fd42:99::1", "fe80::10", "fd42:99::1", ""},
		{"10.99.0.10", "2001:db8:ff::2", "", "", "must be of one family"},
		{"tap9", "10.99.0.1", "", "", "neither an address nor an interface"},
	} {
		src, dst, err := endpoints(h, c.from, c.to)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s %s: error %v, want one saying %q", c.from, c.to, err, c.err)
		case c.err == "" && (err != nil || src.String() != c.src || dst.String() != c.dst):
			t.Errorf("%s %s: %s %s, %v; want %s %s", c.from, c.to, src, dst, err, c.src, c.dst)
		}
	}
}
