package evpn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// Kernel is the seam of the EVPN entries: what Sync reads and writes.
type Kernel interface {
	// Read returns the local guests of nets and the entries guestnet
	// installed for them.
	Read(nets []Network) (Observed, error)
	// Do makes one change.
	Do(op Op) error
}

// Sync reads k, plans the way to want and applies it. Every op is tried
// (one failing entry must not keep the others out); it returns the ops
// that were applied and the failures, joined.
func Sync(k Kernel, nets []Network, want Install) ([]Op, error) {
	have, err := k.Read(nets)
	if err != nil {
		return nil, err
	}
	return Apply(k, Plan(want, have))
}

// Apply makes each op, on to the next after a failure.
func Apply(k Kernel, ops []Op) ([]Op, error) {
	var done []Op
	var errs []error
	for _, op := range ops {
		if err := k.Do(op); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
			continue
		}
		done = append(done, op)
	}
	return done, errors.Join(errs...)
}

// Linux is the Kernel of a namespace, reached through its netlink handle.
type Linux struct {
	NL *netlink.Handle
	// index caches the links of the last Read, by name, for Do.
	index map[string]int
}

// NewLinux returns the kernel behind handle nl.
func NewLinux(nl *netlink.Handle) *Linux { return &Linux{NL: nl, index: map[string]int{}} }

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// ErrNotOwned says a device is not guestnet's: its entries are left alone.
var ErrNotOwned = errors.New("not guestnet's")

// Read lists the bridges' forwarding database and neighbour tables of
// nets. Only links guestnet owns (their alias) are read; a network whose
// bridge or VXLAN device is missing or foreign is an error naming it,
// and the other networks are still read.
// Equivalent to: bridge fdb show; ip neigh show dev BRIDGE
func (k *Linux) Read(nets []Network) (Observed, error) {
	var o Observed
	var errs []error
	type ids struct {
		n      Network
		br, vx int
	}
	var links []ids
	clear(k.index)
	for _, n := range nets {
		br, err := k.owned(n.Bridge, n.Name, "bridge")
		if err == nil {
			var vx int
			vx, err = k.owned(n.VXLAN, n.Name, "vxlan")
			if err == nil {
				links = append(links, ids{n, br, vx})
				o.Links = append(o.Links, br, vx)
				k.index[n.Bridge], k.index[n.VXLAN] = br, vx
			}
		}
		errs = append(errs, err)
	}
	if len(links) == 0 {
		return o, errors.Join(errs...)
	}
	fdb, err := k.NL.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return o, fmt.Errorf("list the forwarding database (bridge fdb show): %w", err)
	}
	for _, l := range links {
		macs, err := k.neighs(l.n, l.br, &o)
		errs = append(errs, err)
		o.Local = append(o.Local, readFDB(l.n, l.br, l.vx, fdb, macs, &o)...)
	}
	return o, errors.Join(errs...)
}

// owned is the index of link name, when it is of kind kind and guestnet's
// for network.
func (k *Linux) owned(name, network, kind string) (int, error) {
	l, err := k.NL.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("network %s: find %s %s: %w", network, kind, name, err)
	}
	if l.Attrs().Alias != model.OwnerAlias(network) || l.Type() != kind {
		return 0, fmt.Errorf("network %s: %s %s (alias %q) is %w: its entries are left alone", network, l.Type(), name, l.Attrs().Alias, ErrNotOwned)
	}
	return l.Attrs().Index, nil
}

// neighs reads the bridge's neighbour table: guestnet's entries (extern
// learned) into o, and returns the others' addresses by MAC.
func (k *Linux) neighs(n Network, br int, o *Observed) (map[string][]netip.Addr, error) {
	ns, err := k.NL.NeighList(br, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("network %s: list neighbours (ip neigh show dev %s): %w", n.Name, n.Bridge, err)
	}
	ips := map[string][]netip.Addr{}
	for _, e := range ns {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok || len(e.HardwareAddr) != 6 {
			continue
		}
		a = a.Unmap()
		if e.Flags&netlink.NTF_EXT_LEARNED != 0 {
			o.Neighs = append(o.Neighs, Neigh{Bridge: n.Bridge, IP: a, MAC: e.HardwareAddr.String()})
			continue
		}
		if e.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 || e.State == netlink.NUD_NONE {
			continue
		}
		m := e.HardwareAddr.String()
		ips[m] = append(ips[m], a)
	}
	return ips, nil
}

// readFDB sorts the forwarding-database entries of one network: the
// bridge's learned entries on guest ports (local guests, with their
// addresses from ips), guestnet's entries on the VXLAN port and the VXLAN
// device's own entries into o.
func readFDB(n Network, br, vx int, fdb []netlink.Neigh, ips map[string][]netip.Addr, o *Observed) []Guest {
	var local []Guest
	for _, e := range fdb {
		if len(e.HardwareAddr) != 6 {
			continue
		}
		m := e.HardwareAddr.String()
		ext := e.Flags&netlink.NTF_EXT_LEARNED != 0
		switch {
		case e.LinkIndex == vx && e.MasterIndex == 0 && e.Flags&netlink.NTF_SELF != 0:
			dst, ok := netip.AddrFromSlice(e.IP)
			switch {
			case !ok:
			case slices.Equal(e.HardwareAddr, zeroMAC):
				o.Flood = append(o.Flood, Flood{Device: n.VXLAN, VTEP: dst.Unmap()})
			case ext:
				o.MACs = append(o.MACs, RemoteMAC{Device: n.VXLAN, MAC: m, VTEP: dst.Unmap()})
			}
		case e.MasterIndex != br:
		case e.LinkIndex == vx:
			if ext {
				o.Masters = append(o.Masters, RemoteMAC{Device: n.VXLAN, Bridge: n.Bridge, MAC: m})
			}
		case e.LinkIndex != br && !ext && e.State&netlink.NUD_PERMANENT == 0 && e.HardwareAddr[0]&1 == 0:
			local = append(local, Guest{VNI: n.VNI, MAC: m, Port: e.LinkIndex, IPs: ips[m]})
		}
	}
	return local
}

// Do makes one change. A deletion of what is gone already and an append
// of what is there already are done.
func (k *Linux) Do(op Op) error {
	switch op.Kind {
	case FloodAdd, FloodDel:
		vx, err := k.link(op.Flood.Device)
		if err != nil {
			return err
		}
		e := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_NOARP | netlink.NUD_PERMANENT, IP: op.Flood.VTEP.AsSlice(), HardwareAddr: zeroMAC}
		if op.Kind == FloodDel {
			return gone(k.NL.NeighDel(e))
		}
		// Equivalent to: bridge fdb append 00:00:00:00:00:00 dev VX dst VTEP self permanent
		if err := k.NL.NeighAppend(e); !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	case MACSet, MACDel:
		vx, err := k.link(op.MAC.Device)
		if err != nil {
			return err
		}
		mac, err := net.ParseMAC(op.MAC.MAC)
		if err != nil {
			return err
		}
		// A VXLAN device takes entries that are permanent or reachable
		// only; iproute2's "static" sends both noarp and permanent.
		self := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF | netlink.NTF_EXT_LEARNED,
			State: netlink.NUD_NOARP | netlink.NUD_PERMANENT, IP: op.MAC.VTEP.AsSlice(), HardwareAddr: mac}
		master := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER | netlink.NTF_EXT_LEARNED,
			State: netlink.NUD_REACHABLE, HardwareAddr: mac}
		if op.Kind == MACSet {
			// The VXLAN device first: the bridge's entry sends frames to
			// it, which must know where they go.
			if err := k.NL.NeighSet(self); err != nil {
				return fmt.Errorf("the VXLAN device's entry: %w", err)
			}
			if err := k.NL.NeighSet(master); err != nil {
				return fmt.Errorf("the bridge's entry: %w", err)
			}
			return nil
		}
		var err1 error
		if op.MAC.VTEP.IsValid() {
			err1 = gone(k.NL.NeighDel(self))
		}
		master.Flags = netlink.NTF_MASTER
		return errors.Join(gone(k.NL.NeighDel(master)), err1)
	case NeighSet, NeighDel:
		br, err := k.link(op.Neigh.Bridge)
		if err != nil {
			return err
		}
		e := &netlink.Neigh{LinkIndex: br, Family: unix.AF_INET, IP: op.Neigh.IP.AsSlice()}
		if op.Kind == NeighDel {
			return gone(k.NL.NeighDel(e))
		}
		mac, err := net.ParseMAC(op.Neigh.MAC)
		if err != nil {
			return err
		}
		e.HardwareAddr, e.State, e.Flags = mac, netlink.NUD_NOARP, netlink.NTF_EXT_LEARNED
		return k.NL.NeighSet(e)
	}
	return fmt.Errorf("unknown op %d", op.Kind)
}

// link is the index of a device the last Read found guestnet's.
func (k *Linux) link(name string) (int, error) {
	if i, ok := k.index[name]; ok {
		return i, nil
	}
	return 0, fmt.Errorf("%s: not read as guestnet's: its entries are left alone", name)
}

// gone makes "no such entry" a success: what a deletion wants is so.
func gone(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

var _ Kernel = (*Linux)(nil)
