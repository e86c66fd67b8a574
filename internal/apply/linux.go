package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/plan"
)

// Linux is the Kernel of one network namespace: netlink for links,
// addresses and routes, /proc/sys for sysctls, nftables for the firewall.
type Linux struct {
	ns *netns.NS
	nl *netlink.Handle
}

// NewLinux returns the writer of namespace ns, reached through handle nl.
func NewLinux(ns *netns.NS, nl *netlink.Handle) *Linux { return &Linux{ns: ns, nl: nl} }

var _ Writer = (*Linux)(nil)

func (k *Linux) link(name string) (netlink.Link, error) {
	l, err := k.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find link %s: %w", name, err)
	}
	return l, nil
}

// Do makes one change and returns the kernel's error as it is (Run
// decides what counts as already done). Each case says its command-line
// equivalent in plan.Action.String.
func (k *Linux) Do(a plan.Action) error {
	switch a.Op {
	case plan.OpBridgeAdd:
		attrs := netlink.LinkAttrs{Name: a.Link, MTU: a.MTU, Alias: a.Alias, Group: a.IfGroup}
		if a.MAC != "" {
			mac, err := net.ParseMAC(a.MAC)
			if err != nil {
				return err
			}
			attrs.HardwareAddr = mac
		}
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := k.nl.LinkAdd(br); err != nil {
			return err
		}
		// The kernel ignores IFLA_IFALIAS when it creates a link.
		if err := k.nl.LinkSetAlias(br, a.Alias); err != nil {
			k.nl.LinkDel(br)
			return fmt.Errorf("set alias: %w", err)
		}
		if key, ok := plan.GuestBridgeAcceptRA(a); ok {
			// No IPv6 in this kernel (ipv6.disable=1): no RAs to refuse.
			if err := k.ns.WriteSysctl(key, "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				k.nl.LinkDel(br)
				return fmt.Errorf("refuse router advertisements on %s: %w", a.Link, err)
			}
		}
		return nil
	case plan.OpVXLANAdd:
		return k.addVXLAN(a)
	case plan.OpTapAdd:
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: a.Link},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		if a.Owner >= 0 {
			tap.Owner = uint32(a.Owner)
		}
		if a.Group >= 0 {
			tap.Group = uint32(a.Group)
		}
		// TUNSETIFF acts on the calling thread's namespace.
		return k.ns.Do(func() error { return k.nl.LinkAdd(tap) })
	}
	if a.Op == plan.OpSysctl {
		return k.ns.WriteSysctl(a.Key, a.Value)
	}
	if a.Op == plan.OpNft {
		return k.replaceRuleset(a.Rules)
	}
	if a.Op == plan.OpNftDelta {
		return k.applyDelta(a.Delta)
	}
	if a.Op == plan.OpGuard {
		return k.guard(*a.Guard, *a.OldGuard)
	}
	if a.Op == plan.OpRouteAdd || a.Op == plan.OpRouteDel || a.Op == plan.OpRouteReplace {
		r, err := k.route(a.Route)
		if err != nil {
			return err
		}
		switch a.Op {
		case plan.OpRouteAdd:
			return k.nl.RouteAdd(r)
		case plan.OpRouteReplace:
			return k.nl.RouteReplace(r)
		}
		return k.nl.RouteDel(r)
	}
	l, err := k.link(a.Link)
	if err != nil {
		return err
	}
	switch a.Op {
	case plan.OpLinkDel:
		return k.nl.LinkDel(l)
	case plan.OpBridgePort:
		return k.bridgePort(l.Attrs().Index, *a.VXLAN)
	case plan.OpLinkUp:
		return k.nl.LinkSetUp(l)
	case plan.OpLinkDown:
		return k.nl.LinkSetDown(l)
	case plan.OpMTU:
		return k.nl.LinkSetMTU(l, a.MTU)
	case plan.OpGroup:
		return k.nl.LinkSetGroup(l, int(a.IfGroup))
	case plan.OpMaster:
		if a.Master == "" {
			return k.nl.LinkSetNoMaster(l)
		}
		m, err := k.link(a.Master)
		if err != nil {
			return err
		}
		return k.nl.LinkSetMasterByIndex(l, m.Attrs().Index)
	case plan.OpAddrAdd:
		na := addr(a.Addr, a.Brd)
		if plan.NoDAD(a.Addr) {
			na.Flags |= unix.IFA_F_NODAD
		}
		err := k.nl.AddrAdd(l, na)
		if errors.Is(err, unix.EACCES) && plan.NoDAD(a.Addr) {
			return fmt.Errorf("%w: IPv6 is disabled on %s (net.ipv6.conf.%s.disable_ipv6=1, or net.ipv6.conf.default.disable_ipv6=1 when it was made): set it to 0, or drop ipv6: from the network", err, a.Link, a.Link)
		}
		return err
	case plan.OpAddrDel:
		return k.nl.AddrDel(l, addr(a.Addr, a.Brd))
	}
	return fmt.Errorf("unknown action %q", a.Op)
}

// ipNet converts a prefix, its mask as wide as its family's addresses.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addr converts an address; a zero brd means none (netlink would
// otherwise compute one for IPv4; IPv6 has no broadcast).
func addr(p netip.Prefix, brd netip.Addr) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is4() {
		a.Broadcast = net.IPv4zero
	}
	if brd.IsValid() {
		a.Broadcast = brd.AsSlice()
	}
	return a
}

func (k *Linux) route(r model.Route) (*netlink.Route, error) {
	l, err := k.link(r.Dev)
	if err != nil {
		return nil, err
	}
	nr := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       ipNet(r.Dst),
		Protocol:  netlink.RouteProtocol(r.Proto),
		Scope:     netlink.Scope(r.Scope),
		Priority:  r.Metric,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	return nr, nil
}
