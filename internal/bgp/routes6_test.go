package bgp

import (
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// The kernel's connected IPv6 routes carry no source: withSources gives
// each this host's address in it on the same link, so that a next hop
// naming this host is refused (TestImportable6's "connected source"),
// and leaves the rest alone: IPv4 routes, routes with a gateway, a
// source already set, an address of another link, link-local ones.
func TestWithSources(t *testing.T) {
	rs := []model.Route{
		{Dst: pfx("fd00:10::/64"), Dev: "lan0", Proto: model.ProtoKernel},
		{Dst: pfx("fd00:20::/64"), Dev: "lan1", Proto: model.ProtoKernel},
		{Dst: pfx("fd00:30::/64"), Dev: "lan0", Proto: model.ProtoKernel, Src: addr("fd00:30::9")},
		{Dst: pfx("fd00:40::/64"), Gw: addr("fd00:10::2"), Dev: "lan0", Proto: model.ProtoBGP},
		{Dst: pfx("fe80::/64"), Dev: "lan0", Proto: model.ProtoKernel},
		{Dst: pfx("10.10.0.0/24"), Dev: "lan0", Proto: model.ProtoKernel, Scope: 253, Src: addr("10.10.0.1")},
	}
	own := map[string][]netip.Addr{
		"lan0": {addr("fd00:20::1"), addr("fd00:10::1"), addr("fd00:30::1"), addr("fd00:40::1")},
		"lan1": {addr("fd00:99::1")},
	}
	got := withSources(rs, own)
	want := []string{"fd00:10::1", "invalid IP", "fd00:30::9", "invalid IP", "invalid IP", "10.10.0.1"}
	for i, r := range got {
		if r.Src.String() != want[i] {
			t.Errorf("%s dev %s: src %v, want %s", r.Dst, r.Dev, r.Src, want[i])
		}
	}
}
