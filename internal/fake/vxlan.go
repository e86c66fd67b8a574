package fake

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// addVXLAN makes a VXLAN device as the kernel does: EEXIST for a name
// taken, and for a VNI and port another VXLAN device has (the kernel's
// "A VXLAN device with the specified VNI already exists"); a device made
// with a master (an undone delete) gets its port flags too.
func (k *Kernel) addVXLAN(a plan.Action) error {
	if _, err := k.link(a.Link); err == nil {
		return unix.EEXIST
	}
	x := *a.VXLAN
	for _, o := range k.Host.Links {
		if o.VXLAN != nil && o.VXLAN.VNI == x.VNI && o.VXLAN.Port == x.Port {
			return fmt.Errorf("vxlan %d port %d is %s's: %w", x.VNI, x.Port, o.Name, unix.EEXIST)
		}
	}
	if a.Master != "" {
		if _, err := k.link(a.Master); err != nil {
			return err
		}
	}
	dev := x
	dev.PortLearning, dev.NeighSuppress = false, false
	l := model.Link{Name: a.Link, Kind: "vxlan", Alias: a.Alias, MTU: a.MTU, MAC: a.MAC, VXLAN: &dev, Up: a.Up}
	if l.MTU == 0 {
		l.MTU = 1500 // the kernel's without a lower device
	}
	if a.Master != "" {
		setMaster(&l, a.Master)
		bridgePort(&l, x)
	}
	for _, o := range k.Host.Links {
		l.Index = max(l.Index, o.Index+1)
	}
	k.Host.Links = append(k.Host.Links, l)
	slices.SortFunc(k.Host.Links, func(x, y model.Link) int { return strings.Compare(x.Name, y.Name) })
	return nil
}

// setMaster moves a link into a bridge (or out of it: ""). A VXLAN
// device's port flags are the kernel's: a new port learns and does not
// suppress, a link out of any bridge has none.
func setMaster(l *model.Link, master string) {
	if l.VXLAN != nil && l.Master != master {
		x := *l.VXLAN // a copy: readers hold the old pointer
		x.PortLearning, x.NeighSuppress = master != "", false
		l.VXLAN = &x
	}
	l.Master = master
}

// bridgePort sets a port's flags; the kernel refuses a link that is no
// bridge's port. The fake keeps flags of VXLAN devices only.
func bridgePort(l *model.Link, f model.VXLANLink) error {
	if l.Master == "" {
		return fmt.Errorf("bridge link set dev %s: not a bridge port: %w", l.Name, unix.EOPNOTSUPP)
	}
	if l.VXLAN != nil {
		x := *l.VXLAN
		x.PortLearning, x.NeighSuppress = f.PortLearning, f.NeighSuppress
		l.VXLAN = &x
	}
	return nil
}
