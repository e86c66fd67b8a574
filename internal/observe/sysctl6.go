package observe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// SysctlForward6 is the sysctl that turns IPv6 forwarding on (for every
// interface at once).
const SysctlForward6 = "net.ipv6.conf.all.forwarding"

// AcceptRAKey is the sysctl of an interface's accept_ra. A dot in an
// interface name (a VLAN, eth0.100) is a slash in sysctl's notation, as
// sysctl(8) writes it: the key's dots are the path's slashes.
func AcceptRAKey(ifname string) string {
	return "net.ipv6.conf." + strings.ReplaceAll(ifname, ".", "/") + ".accept_ra"
}

// raUplinks lists the interfaces that hold a route of protocol ra (learned
// from router advertisements, the default route typically), with their
// accept_ra: the host's uplinks, a bridge-mode network's bridge among
// them (it is the host's LAN interface), but not guestnet's guest bridges. Those with accept_ra 1 lose that route
// when IPv6 forwarding goes on (the kernel then ignores their RAs, and the
// route expires with its lifetime): plan raises them to 2 first.
func raUplinks(ns *netns.NS, links []model.Link, routes []model.Route) ([]model.RAUplink, error) {
	var names []string
	for _, r := range routes {
		if r.Proto != model.ProtoRA || r.Dev == "" || slices.Contains(names, r.Dev) {
			continue
		}
		names = append(names, r.Dev)
	}
	slices.Sort(names)
	var out []model.RAUplink
	for _, name := range names {
		i := slices.IndexFunc(links, func(l model.Link) bool { return l.Name == name })
		if i < 0 || links[i].Group == model.GuestGroup {
			continue // a guest bridge: RAs there come from guests, never the host's routes
		}
		v, err := ns.ReadSysctl(AcceptRAKey(name))
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%s is %q, not a number", AcceptRAKey(name), v)
		}
		out = append(out, model.RAUplink{Name: name, AcceptRA: n})
	}
	return out, nil
}

// guestAcceptRA reads accept_ra of guestnet's guest bridges (GuestGroup).
// A bridge without the sysctl (IPv6 absent from the kernel, or the link
// gone meanwhile) is left out: it takes no router advertisement.
func guestAcceptRA(ns *netns.NS, links []model.Link) map[string]int {
	var out map[string]int
	for _, l := range links {
		if l.Group != model.GuestGroup {
			continue
		}
		v, err := ns.ReadSysctl(AcceptRAKey(l.Name))
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			continue
		}
		if out == nil {
			out = map[string]int{}
		}
		out[l.Name] = n
	}
	return out
}
