package netns

import (
	"testing"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The BGP speaker's route writes are not drift; anything else in the
// same batch, or a route of another protocol, is.
func TestOnlyBGPRoutes(t *testing.T) {
	route := func(typ uint16, proto byte) mnl.Message {
		return mnl.Message{Header: mnl.Header{Type: mnl.HeaderType(typ)}, Data: []byte{unix.AF_INET, 24, 0, 0, unix.RT_TABLE_MAIN, proto, 0, 1, 0, 0, 0, 0}}
	}
	link := mnl.Message{Header: mnl.Header{Type: mnl.HeaderType(unix.RTM_NEWLINK)}, Data: make([]byte, 16)}
	for _, c := range []struct {
		name string
		msgs []mnl.Message
		want bool
	}{
		{"bgp add", []mnl.Message{route(unix.RTM_NEWROUTE, 186)}, true},
		{"bgp add and del", []mnl.Message{route(unix.RTM_NEWROUTE, 186), route(unix.RTM_DELROUTE, 186)}, true},
		{"guestnet's moved route", []mnl.Message{route(unix.RTM_NEWROUTE, 157)}, false},
		{"a typed route", []mnl.Message{route(unix.RTM_DELROUTE, 4)}, false},
		{"bgp beside a link change", []mnl.Message{route(unix.RTM_NEWROUTE, 186), link}, false},
		{"short message", []mnl.Message{{Header: mnl.Header{Type: mnl.HeaderType(unix.RTM_NEWROUTE)}, Data: []byte{2, 24}}}, false},
		{"nothing", nil, false},
	} {
		if got := onlyBGPRoutes(c.msgs); got != c.want {
			t.Errorf("%s: onlyBGPRoutes = %v, want %v", c.name, got, c.want)
		}
	}
}
