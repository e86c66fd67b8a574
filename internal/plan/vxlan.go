package plan

import (
	"fmt"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// A stretched network's VXLAN device is a port of its bridge, made and
// repaired here: id, dstport and local as declared (no local when the
// spec leaves it to the kernel's route lookup), nolearning, the network's
// MTU, the owner alias; then as a bridge port learning off (remote MACs
// come from EVPN, never from flooded frames) and neigh_suppress on (the
// bridge answers ARP from its neighbour table: ARP suppression); then up.

// WantVXLAN is the device network n's VXLAN device must be, port flags
// included.
func WantVXLAN(n model.Network) model.VXLANLink {
	port := n.VXLAN.Port
	if port == 0 {
		port = model.VXLANPort
	}
	return model.VXLANLink{VNI: n.VXLAN.VNI, Port: port, Local: n.VXLAN.Local, NeighSuppress: true}
}

// device is x with the bridge port flags cleared: what creating it sets.
func device(x model.VXLANLink) model.VXLANLink {
	x.PortLearning, x.NeighSuppress = false, false
	return x
}

// newPortFlags are the flags the kernel gives a link that becomes a
// bridge port: learning on, neigh_suppress off.
func newPortFlags(x model.VXLANLink) model.VXLANLink {
	x.PortLearning, x.NeighSuppress = true, false
	return x
}

// vxlanMTU is a stretched network's MTU (the spec fills StretchMTU).
func vxlanMTU(n model.Network) int {
	if n.MTU == 0 {
		return model.StretchMTU
	}
	return n.MTU
}

// ensureVXLAN returns the actions that make or repair network n's VXLAN
// device. A device whose VNI, port, local or learning differ is deleted
// and made again (the kernel cannot change the port of a VXLAN device);
// MTU, master, port flags and up state are set in place.
func ensureVXLAN(n model.Network, h model.Host) []Action {
	if !n.Stretched() {
		return nil
	}
	want := WantVXLAN(n)
	name := model.VXLANName(want.VNI)
	mtu := vxlanMTU(n)
	l, ok := h.Link(name)
	var acts []Action
	if ok && (l.VXLAN == nil || device(*l.VXLAN) != device(want)) {
		acts = append(acts, deleteVXLAN(l))
		ok = false
	}
	if !ok {
		dev := device(want)
		acts = append(acts, Action{Op: OpVXLANAdd, Link: name, Alias: model.OwnerAlias(n.Name), MTU: mtu, VXLAN: &dev})
		l = model.Link{Name: name, MTU: mtu, VXLAN: &dev}
	}
	if l.MTU != mtu {
		acts = append(acts, Action{Op: OpMTU, Link: name, MTU: mtu, OldMTU: l.MTU})
	}
	flags := *l.VXLAN
	if l.Master != n.Bridge {
		acts = append(acts, Action{Op: OpMaster, Link: name, Master: n.Bridge, OldMaster: l.Master})
		flags = newPortFlags(flags)
	}
	if flags.PortLearning != want.PortLearning || flags.NeighSuppress != want.NeighSuppress {
		acts = append(acts, Action{Op: OpBridgePort, Link: name, VXLAN: &want, OldVXLAN: &flags})
	}
	if !l.Up {
		acts = append(acts, Action{Op: OpLinkUp, Link: name})
	}
	return acts
}

// deleteVXLAN deletes a VXLAN device in one write, carrying all of it
// (settings, port flags, master, MTU, MAC, up) so that its inverse makes
// it again as it was.
func deleteVXLAN(l model.Link) Action {
	a := Action{Op: OpLinkDel, Link: l.Name, Alias: l.Alias, MAC: l.MAC, MTU: l.MTU, Master: l.Master, Up: l.Up}
	if l.VXLAN != nil {
		x := *l.VXLAN
		a.VXLAN = &x
	}
	return a
}

// staleVXLANs deletes the VXLAN devices that wanted networks own but no
// longer use: the network's VNI changed, or it is no longer stretched.
func staleVXLANs(want []model.Network, h model.Host) []Action {
	keep := map[string]string{} // network -> its device
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n.Name] = true
		if n.Stretched() {
			keep[n.Name] = model.VXLANName(n.VXLAN.VNI)
		}
	}
	var acts []Action
	for _, l := range h.Links {
		if o := l.Owner(); l.Kind == "vxlan" && wanted[o] && keep[o] != l.Name {
			acts = append(acts, deleteVXLAN(l))
		}
	}
	return acts
}

// vxlanAddString is an OpVXLANAdd's command line.
func vxlanAddString(a Action) string {
	x := a.VXLAN
	var b strings.Builder
	b.WriteString("ip link add " + a.Link)
	if a.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", a.MTU)
	}
	if a.MAC != "" {
		b.WriteString(" address " + a.MAC)
	}
	if a.Master != "" {
		b.WriteString(" master " + a.Master)
	}
	fmt.Fprintf(&b, " type vxlan id %d dstport %d", x.VNI, x.Port)
	if x.Local.IsValid() {
		b.WriteString(" local " + x.Local.String())
	}
	if !x.Learning {
		b.WriteString(" nolearning")
	}
	b.WriteString(" && ip link set " + a.Link + " alias " + a.Alias + " addrgenmode none")
	if a.Master != "" {
		b.WriteString(" && " + bridgePortString(a.Link, *x))
	}
	if a.Up {
		b.WriteString(" && ip link set " + a.Link + " up")
	}
	return b.String()
}

// bridgePortString is `bridge link set` of a port's flags.
func bridgePortString(link string, x model.VXLANLink) string {
	return fmt.Sprintf("bridge link set dev %s learning %s neigh_suppress %s", link, onOff(x.PortLearning), onOff(x.NeighSuppress))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
