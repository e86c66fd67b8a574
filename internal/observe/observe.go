// Package observe reads one network namespace into a model.Host: links with
// their addresses, IPv4 routes of the main table, the sysctls guestnet
// cares about, guestnet's own nftables rules, and the foreign firewall
// chains that could drop guest traffic. It only reads.
package observe

import (
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
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("observe addresses: %w", err)
	}
	byIndex := map[int][]netip.Prefix{}
	brd := map[int]map[netip.Prefix]netip.Addr{}
	for _, a := range addrs {
		p, ok := prefixOf(a.IP, a.Mask)
		if !ok {
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

// Routes reads the main table's IPv4 routes alone (the BGP speaker's
// view: connected subnets and its own routes), naming devices from links.
func Routes(nl *netlink.Handle, links []model.Link) ([]model.Route, error) {
	return readRoutes(nl, links)
}

func readRoutes(nl *netlink.Handle, links []model.Link) ([]model.Route, error) {
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("observe routes: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Index] = l.Name
	}
	var out []model.Route
	for _, r := range rs {
		mr := model.Route{Dev: names[r.LinkIndex], Proto: int(r.Protocol), Scope: int(r.Scope), Metric: r.Priority}
		if r.Dst != nil {
			mr.Dst, _ = prefixOf(r.Dst.IP, r.Dst.Mask)
		} else {
			mr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
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
