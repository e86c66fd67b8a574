package bgp

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// WithRoutes6 returns k whose Routes also covers what the install pass
// needs of IPv6, read from namespace ns:
//   - the main table's IPv6 routes, when k lists none (observe read IPv4
//     routes only when the speaker learned IPv6; once it lists them, this
//     reads no routes);
//   - the source of each connected IPv6 subnet, which the kernel's route
//     does not carry (IPv4's has prefsrc): this host's address in it, so
//     that a peer naming this host as next hop is refused, as for IPv4.
//
// A narrow read of its own (ip -6 route show table main; ip -6 addr),
// one netlink socket per call.
func WithRoutes6(k Kernel, ns *netns.NS) Kernel { return routes6{Kernel: k, ns: ns} }

type routes6 struct {
	Kernel
	ns *netns.NS
}

func (r routes6) Routes() ([]model.Route, error) {
	rs, err := r.Kernel.Routes()
	if err != nil {
		return nil, err
	}
	nl, err := r.ns.Netlink()
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	if !slices.ContainsFunc(rs, func(x model.Route) bool { return x.Dst.Addr().Is6() }) {
		v6, err := nl.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list IPv6 routes: %w", err)
		}
		for _, x := range v6 {
			if x.Type == unix.RTN_UNICAST { // not unreachable, prohibit or multicast ones
				rs = append(rs, route6(x, names))
			}
		}
	}
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	own := map[string][]netip.Addr{} // by link name
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To16()); ok && !ip.IsLinkLocalUnicast() {
			own[names[a.LinkIndex]] = append(own[names[a.LinkIndex]], ip)
		}
	}
	return withSources(rs, own), nil
}

// route6 is one IPv6 route of the main table as the model has it.
func route6(x netlink.Route, names map[int]string) model.Route {
	r := model.Route{Dev: names[x.LinkIndex], Proto: int(x.Protocol), Scope: int(x.Scope), Metric: x.Priority,
		Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
	if x.Dst != nil {
		if a, ok := netip.AddrFromSlice(x.Dst.IP.To16()); ok {
			ones, _ := x.Dst.Mask.Size()
			r.Dst = netip.PrefixFrom(a, ones)
		}
	}
	if x.Gw != nil {
		r.Gw, _ = netip.AddrFromSlice(x.Gw.To16())
	}
	if x.Src != nil {
		r.Src, _ = netip.AddrFromSlice(x.Src.To16())
	}
	return r
}

// withSources sets the source of each connected IPv6 subnet without one
// to this host's address in it on the same link (own, by link name).
func withSources(rs []model.Route, own map[string][]netip.Addr) []model.Route {
	for i, r := range rs {
		if r.Src.IsValid() || !r.Dst.Addr().Is6() || !connected(r) {
			continue
		}
		for _, a := range own[r.Dev] {
			if r.Dst.Contains(a) {
				rs[i].Src = a
				break
			}
		}
	}
	return rs
}
