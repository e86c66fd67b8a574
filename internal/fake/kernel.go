// Package fake is an in-memory kernel for tests without root: it applies
// plan actions to a model.Host with the kernel's rules that matter to
// guestnet (EEXIST, ENOENT, connected routes that come and go with
// addresses, ports that leave a deleted bridge), and answers the reads the
// engine and the daemon make. It implements engine.Kernel (both ways), so
// tests run the production engine and daemon against it.
package fake

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
)

// Kernel holds the host it changes. It is the engine's Kernel (reads and
// writes); its methods may be called from several goroutines, as the
// daemon does. Tests read Host directly only while nothing runs.
type Kernel struct {
	Host model.Host

	mu      sync.Mutex
	gen     uint32          // nftables transactions
	neighs  []netlink.Neigh // what FDB returns
	readErr error           // what every read returns, when set
}

func (k *Kernel) link(name string) (*model.Link, error) {
	for i := range k.Host.Links {
		if k.Host.Links[i].Name == name {
			return &k.Host.Links[i], nil
		}
	}
	return nil, fmt.Errorf("link %s: %w", name, unix.ENODEV)
}

// Do applies one action, then puts the host in canonical form (routes
// sorted, empty lists nil) so tests can compare hosts whole.
func (k *Kernel) Do(a plan.Action) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	err := k.do(a)
	if err == nil && (a.IsNft() || a.Op == plan.OpGuard) {
		k.gen++
	}
	Canonical(&k.Host)
	return err
}

// Canonical sorts routes and addresses (by family) and turns empty lists
// and maps into nil.
func Canonical(h *model.Host) {
	slices.SortFunc(h.Routes, func(x, y model.Route) int {
		if c := strings.Compare(x.Dst.String(), y.Dst.String()); c != 0 {
			return c
		}
		return strings.Compare(x.Dev, y.Dev)
	})
	for i := range h.Links {
		l := &h.Links[i]
		// A dump lists IPv4 addresses before IPv6 ones (observe reads both
		// families at once), each family in the order it was added.
		slices.SortStableFunc(l.Addrs, func(x, y netip.Prefix) int {
			return cmp.Compare(x.Addr().BitLen(), y.Addr().BitLen())
		})
		if len(l.Addrs) == 0 {
			l.Addrs = nil
		}
		if len(l.Brd) == 0 {
			l.Brd = nil
		}
	}
	if len(h.Routes) == 0 {
		h.Routes = nil
	}
}

func (k *Kernel) do(a plan.Action) error {
	switch a.Op {
	case plan.OpBridgeAdd, plan.OpTapAdd:
		if _, err := k.link(a.Link); err == nil {
			return unix.EEXIST
		}
		l := model.Link{Name: a.Link, Kind: "bridge", Alias: a.Alias, MTU: a.MTU, MAC: a.MAC, Group: a.IfGroup}
		if a.Op == plan.OpTapAdd {
			l.Kind = "tuntap"
		}
		if l.MTU == 0 {
			l.MTU = 1500
		}
		for _, o := range k.Host.Links {
			l.Index = max(l.Index, o.Index+1)
		}
		k.Host.Links = append(k.Host.Links, l)
		slices.SortFunc(k.Host.Links, func(x, y model.Link) int { return strings.Compare(x.Name, y.Name) })
		return nil
	case plan.OpVXLANAdd:
		return k.addVXLAN(a)
	case plan.OpSysctl:
		return k.sysctl(a.Key, a.Value)
	case plan.OpNft:
		k.Host.Ruleset = a.Rules.Clone()
		k.Host.Ruleset.Canonical() // as observe reads it back
		return nil
	case plan.OpNftDelta:
		// As the kernel: the whole transaction or nothing; an element for a
		// missing chain, or a chain still jumped to, fails it.
		rs, err := a.Delta.Apply(k.Host.Ruleset)
		if err != nil {
			return fmt.Errorf("nft transaction: %w: %w", err, unix.ENOENT)
		}
		k.Host.Ruleset = rs
		return nil
	case plan.OpGuard:
		k.Host.Guard = *a.Guard
		return nil
	case plan.OpRouteAdd:
		if slices.ContainsFunc(k.Host.Routes, func(r model.Route) bool { return sameRoute(r, a.Route) }) {
			return unix.EEXIST
		}
		if _, err := k.link(a.Route.Dev); err != nil {
			return err
		}
		k.Host.Routes = append(k.Host.Routes, a.Route)
		return nil
	case plan.OpRouteReplace:
		// As NLM_F_REPLACE: the route with the same destination and
		// metric, whoever made it, is replaced; when there is none, it is added.
		if _, err := k.link(a.Route.Dev); err != nil {
			return err
		}
		k.Host.Routes = slices.DeleteFunc(k.Host.Routes, func(r model.Route) bool { return sameRoute(r, a.Route) })
		k.Host.Routes = append(k.Host.Routes, a.Route)
		return nil
	case plan.OpRouteDel:
		n := len(k.Host.Routes)
		k.Host.Routes = slices.DeleteFunc(k.Host.Routes, func(r model.Route) bool { return sameRoute(r, a.Route) })
		if len(k.Host.Routes) == n {
			return unix.ESRCH
		}
		return nil
	}
	l, err := k.link(a.Link)
	if err != nil {
		return err
	}
	switch a.Op {
	case plan.OpLinkDel:
		name := l.Name
		k.Host.Links = slices.DeleteFunc(k.Host.Links, func(x model.Link) bool { return x.Name == name })
		k.Host.Routes = slices.DeleteFunc(k.Host.Routes, func(r model.Route) bool { return r.Dev == name })
		for i := range k.Host.Links {
			if k.Host.Links[i].Master == name {
				setMaster(&k.Host.Links[i], "")
			}
		}
	case plan.OpBridgePort:
		return bridgePort(l, *a.VXLAN)
	case plan.OpLinkUp, plan.OpLinkDown:
		l.Up = a.Op == plan.OpLinkUp
	case plan.OpMTU:
		l.MTU = a.MTU
	case plan.OpGroup:
		l.Group = a.IfGroup
	case plan.OpMaster:
		if a.Master != "" {
			if _, err := k.link(a.Master); err != nil {
				return err
			}
		}
		setMaster(l, a.Master)
	case plan.OpAddrAdd:
		if slices.Contains(l.Addrs, a.Addr) {
			return unix.EEXIST
		}
		l.Addrs = append(l.Addrs, a.Addr)
		if a.Brd.IsValid() {
			if l.Brd == nil {
				l.Brd = map[netip.Prefix]netip.Addr{}
			}
			l.Brd[a.Addr] = a.Brd
		}
		k.Host.Routes = append(k.Host.Routes, connected(l.Name, a.Addr))
	case plan.OpAddrDel:
		if !slices.Contains(l.Addrs, a.Addr) {
			return unix.EADDRNOTAVAIL
		}
		l.Addrs = slices.DeleteFunc(l.Addrs, func(p netip.Prefix) bool { return p == a.Addr })
		delete(l.Brd, a.Addr)
		name := l.Name
		k.Host.Routes = slices.DeleteFunc(k.Host.Routes, func(r model.Route) bool {
			// The kernel drops the connected route, and every route of the
			// device once its last address is gone.
			return r.Dev == name && (r == connected(name, a.Addr) || len(l.Addrs) == 0)
		})
	default:
		return fmt.Errorf("fake kernel: unknown action %q", a.Op)
	}
	return nil
}

// connected is the route the kernel makes for an address: for IPv4 a link
// scope route with the address as source; for IPv6 a universe-scope one
// of metric 256 without a source.
func connected(dev string, p netip.Prefix) model.Route {
	if p.Addr().Is6() {
		return model.Route{Dst: p.Masked(), Dev: dev, Proto: model.ProtoKernel, Metric: 256}
	}
	return model.Route{Dst: p.Masked(), Dev: dev, Src: p.Addr(), Proto: model.ProtoKernel, Scope: 253}
}

// sysctl writes one of the sysctls guestnet knows: forwarding of either
// family, and accept_ra of an interface (seen in Host.RAUplinks, which
// lists the interfaces holding a route of protocol ra).
func (k *Kernel) sysctl(key, value string) error {
	switch key {
	case plan.SysctlForward:
		k.Host.IPForward = value == "1"
		return nil
	case plan.SysctlForward6:
		k.Host.IP6Forward = value == "1"
		return nil
	}
	for i, u := range k.Host.RAUplinks {
		if key == observe.AcceptRAKey(u.Name) {
			n, err := strconv.Atoi(value)
			if err != nil {
				return fmt.Errorf("sysctl %s=%q: %w", key, value, unix.EINVAL)
			}
			k.Host.RAUplinks[i].AcceptRA = n
			return nil
		}
	}
	for _, l := range k.Host.Links {
		if key == observe.AcceptRAKey(l.Name) {
			return nil // an interface without RA routes: nothing the fake shows
		}
	}
	return fmt.Errorf("fake kernel: sysctl %s: %w", key, unix.ENOENT)
}

func sameRoute(a, b model.Route) bool {
	return a.Dst == b.Dst && a.Metric == b.Metric
}
