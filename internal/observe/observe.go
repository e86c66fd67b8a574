// Package observe reads one network namespace into a model.Host: links with
// their addresses, IPv4 and IPv6 routes of the main table, the sysctls
// guestnet cares about (forwarding of both families, accept_ra of the
// interfaces that learn routes from router advertisements), guestnet's own nftables rules, and the foreign firewall
// chains that could drop guest traffic. It only reads.
package observe

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// Hint lets observe skip reading guestnet's own rules back: when the
// namespace's nftables generation still equals Gen, nothing has changed
// since guestnet committed the ruleset whose digest is Sum.
type Hint struct {
	Gen uint32
	Sum string
	// Own, when set, names generations that guestnet's own element writes
	// to its anti-spoofing table made (the daemon's leased bindings): a
	// generation that moved only by those still vouches for the ruleset.
	Own func(gen uint32) bool
}

// Trusts reports whether the ruleset is unchanged at generation gen.
func (h *Hint) Trusts(gen uint32) bool {
	if h == nil || h.Sum == "" || gen-h.Gen > 1<<16 {
		return false
	}
	for g := gen; g != h.Gen; g-- {
		if h.Own == nil || !h.Own(g) {
			return false
		}
	}
	return true
}

// Host reads the namespace. hint may be nil (read everything).
func Host(ns *netns.NS, nl *netlink.Handle, hint *Hint) (model.Host, error) {
	var h model.Host
	links, err := readLinks(ns, nl)
	if err != nil {
		return h, err
	}
	h.Links = links
	if h.Routes, err = readRoutes(nl, links); err != nil {
		return h, err
	}
	fwd, err := ns.ReadSysctl("net.ipv4.ip_forward")
	if err != nil {
		return h, fmt.Errorf("observe: %w", err)
	}
	h.IPForward = fwd == "1"
	fwd6, err := ns.ReadSysctl(SysctlForward6)
	if err != nil {
		return h, fmt.Errorf("observe: %w", err)
	}
	h.IP6Forward = fwd6 == "1"
	if h.RAUplinks, err = raUplinks(ns, links, h.Routes); err != nil {
		return h, fmt.Errorf("observe: %w", err)
	}
	h.GuestAcceptRA = guestAcceptRA(ns, links)
	brnf, err := ns.ReadSysctl("net.bridge.bridge-nf-call-iptables")
	if err != nil {
		return h, fmt.Errorf("observe: %w", err)
	}
	h.BridgeNFCallIPTables = brnf == "1"
	brnf6, err := ns.ReadSysctl("net.bridge.bridge-nf-call-ip6tables")
	if err != nil {
		return h, fmt.Errorf("observe: %w", err)
	}
	h.BridgeNFCallIP6Tables = brnf6 == "1"
	if err := readFirewall(ns, &h, hint); err != nil {
		return h, err
	}
	return h, nil
}

func readLinks(ns *netns.NS, nl *netlink.Handle) ([]model.Link, error) {
	ls, err := dumpLinks(ns)
	if err != nil {
		return nil, fmt.Errorf("observe links: %w", err)
	}
	names := make(map[int]string, len(ls))
	for _, l := range ls {
		names[l.Index] = l.Name
	}
	addrs, err := nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("observe addresses: %w", err)
	}
	byIndex := map[int][]netip.Prefix{}
	brd := map[int]map[netip.Prefix]netip.Addr{}
	for _, a := range addrs {
		p, ok := prefixOf(a.IP, a.Mask)
		if !ok || !compared(p, a.Flags) {
			continue
		}
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], p)
		if b, ok := addrOf(a.Broadcast); ok && !b.IsUnspecified() {
			if brd[a.LinkIndex] == nil {
				brd[a.LinkIndex] = map[netip.Prefix]netip.Addr{}
			}
			brd[a.LinkIndex][p] = b
		}
	}
	out := make([]model.Link, 0, len(ls))
	for _, l := range ls {
		ml := l.Link
		ml.Master = names[l.master]
		ml.Addrs = byIndex[l.Index]
		ml.Brd = brd[l.Index]
		out = append(out, ml)
	}
	sortLinks(out)
	return out, nil
}

// compared reports whether an address goes into the host guestnet plans
// against: not an IPv6 link-local one (every link up has one, the kernel
// makes and keeps it, and a bridge's is the source of its router
// advertisements: plans must neither delete nor copy it), and not an IPv6
// address with a lifetime (SLAAC, privacy or DHCPv6 addresses, which the
// kernel or a client keeps; guestnet's own are permanent).
func compared(p netip.Prefix, flags int) bool {
	a := p.Addr()
	if !a.Is6() || a.Is4In6() {
		return true
	}
	return !a.IsLinkLocalUnicast() && flags&unix.IFA_F_PERMANENT != 0
}

// Routes reads the main table's IPv4 routes alone (the BGP speaker's
// view: connected subnets and its own routes), naming devices from links.
func Routes(nl *netlink.Handle, links []model.Link) ([]model.Route, error) {
	return readFamilyRoutes(nl, links, netlink.FAMILY_V4)
}

// readRoutes reads the main table's unicast routes of both families,
// IPv4 first. IPv6 routes include the kernel's connected prefixes and
// fe80::/64 (proto kernel), routes learned from router advertisements
// (proto ra) and those of people, guestnet and BGP; multicast and local
// routes live in table local and are not read.
func readRoutes(nl *netlink.Handle, links []model.Link) ([]model.Route, error) {
	v4, err := readFamilyRoutes(nl, links, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	v6, err := readFamilyRoutes(nl, links, netlink.FAMILY_V6)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return v4, nil // a kernel booted with ipv6.disable=1: no IPv6 routes
	}
	if err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

func readFamilyRoutes(nl *netlink.Handle, links []model.Link, family int) ([]model.Route, error) {
	rs, err := nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("observe routes: %w", err)
	}
	unspec := netip.IPv4Unspecified()
	if family == netlink.FAMILY_V6 {
		unspec = netip.IPv6Unspecified()
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Index] = l.Name
	}
	var out []model.Route
	for _, r := range rs {
		if family == netlink.FAMILY_V6 && r.Type != unix.RTN_UNICAST {
			continue // IPv6 unreachable/prohibit and multicast routes: no path of guests
		}
		mr := model.Route{Dev: names[r.LinkIndex], Proto: int(r.Protocol), Scope: int(r.Scope), Metric: r.Priority}
		if r.Dst != nil {
			mr.Dst, _ = prefixOf(r.Dst.IP, r.Dst.Mask)
		} else {
			mr.Dst = netip.PrefixFrom(unspec, 0)
		}
		if r.Gw != nil {
			mr.Gw, _ = addrOf(r.Gw)
		}
		if r.Src != nil {
			mr.Src, _ = addrOf(r.Src)
		}
		out = append(out, mr)
	}
	return out, nil
}
