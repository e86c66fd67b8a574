package apply

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// addVXLAN makes a stretched network's VXLAN device, then its alias
// (which the kernel ignores on create); as the undo of a delete also its
// master, port flags and up state. Any write after the first that fails
// deletes the device again: the action is whole or not at all.
// Equivalent to: ip link add NAME mtu MTU type vxlan id VNI dstport PORT
// [local ADDR] nolearning && ip link set NAME alias ALIAS addrgenmode none
func (k *Linux) addVXLAN(a plan.Action) error {
	x := a.VXLAN
	if x == nil {
		return fmt.Errorf("make %s: no VXLAN settings in the action", a.Link)
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: a.Link, MTU: a.MTU},
		VxlanId:   int(x.VNI),
		Port:      x.Port,
		Learning:  x.Learning,
	}
	if x.Local.IsValid() {
		vx.SrcAddr = x.Local.AsSlice()
	}
	if a.MAC != "" {
		mac, err := net.ParseMAC(a.MAC)
		if err != nil {
			return err
		}
		vx.HardwareAddr = mac
	}
	if err := k.nl.LinkAdd(vx); err != nil {
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			return fmt.Errorf("%w: this kernel makes no VXLAN devices (load its vxlan module: modprobe vxlan)", err)
		case errors.Is(err, unix.EEXIST):
			return fmt.Errorf("%w: a link named %s, or another VXLAN device with VNI %d on port %d, appeared since the plan (ip -d link show type vxlan)", err, a.Link, x.VNI, x.Port)
		}
		return err
	}
	if err := k.finishVXLAN(vx, a); err != nil {
		k.nl.LinkDel(vx)
		return err
	}
	return nil
}

// finishVXLAN makes the writes of addVXLAN after the link itself.
func (k *Linux) finishVXLAN(vx netlink.Link, a plan.Action) error {
	if err := k.nl.LinkSetAlias(vx, a.Alias); err != nil {
		return fmt.Errorf("set alias: %w", err)
	}
	// A bridge port needs no IPv6 address: without one the host sends no
	// DAD, MLD or router solicitation of its own to every VTEP, and has
	// no link-local route through the device. A kernel without IPv6
	// makes none anyway.
	err := k.nl.LinkSetIP6AddrGenMode(vx, nl.IN6_ADDR_GEN_MODE_NONE)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("set addrgenmode none: %w", err)
	}
	if a.Master != "" {
		m, err := k.link(a.Master)
		if err != nil {
			return err
		}
		if err := k.nl.LinkSetMasterByIndex(vx, m.Attrs().Index); err != nil {
			return fmt.Errorf("set master %s: %w", a.Master, err)
		}
		if err := k.bridgePort(vx.Attrs().Index, *a.VXLAN); err != nil {
			return err
		}
	}
	if a.Up {
		return k.nl.LinkSetUp(vx)
	}
	return nil
}

// bridgePort sets a bridge port's flags learning and neigh_suppress in
// one message (IFLA_PROTINFO of family AF_BRIDGE), so that they change
// together or not at all.
// Equivalent to: bridge link set dev NAME learning off neigh_suppress on
func (k *Linux) bridgePort(index int, x model.VXLANLink) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	msg.Index = int32(index)
	req.AddData(msg)
	pi := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
	pi.AddRtAttr(unix.IFLA_BRPORT_LEARNING, flag(x.PortLearning))
	pi.AddRtAttr(unix.IFLA_BRPORT_NEIGH_SUPPRESS, flag(x.NeighSuppress))
	req.AddData(pi)
	return k.ns.Do(func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
}

func flag(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}
