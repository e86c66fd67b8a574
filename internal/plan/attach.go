package plan

import (
	"fmt"

	"github.com/guestnet/guestnet/internal/model"
)

// AttachOptions say how to make a missing TAP.
type AttachOptions struct {
	Create bool // create a persistent TAP when the interface does not exist
	Owner  int  // uid allowed to open the TAP, -1 for root only
	Group  int  // gid allowed to open the TAP, -1 for none
	// Bind, when set, binds the port to these addresses (anti-spoofing):
	// it replaces an earlier binding. Nil keeps the port's binding.
	Bind *model.PortBind
}

// Attach returns the actions that put iface into network n's bridge, up,
// with the bridge's MTU (what a hand-written qemu-ifup does).
func Attach(n model.Network, iface string, h model.Host, o AttachOptions) ([]Action, error) {
	if err := checkBind6(n, iface, o.Bind); err != nil {
		return nil, err
	}
	br, ok := h.Link(n.Bridge)
	if !ok {
		return nil, fmt.Errorf("attach %s to %s: bridge %s does not exist (run guestnet apply first)", iface, n.Name, n.Bridge)
	}
	l, ok := h.Link(iface)
	var acts []Action
	if !ok {
		if !o.Create {
			return nil, fmt.Errorf("attach %s to %s: no such interface (use --create to make a TAP)", iface, n.Name)
		}
		acts = append(acts, Action{Op: OpTapAdd, Link: iface, Owner: o.Owner, Group: o.Group})
		l = model.Link{Name: iface, MTU: 1500}
	}
	switch {
	case iface == br.Name || l.Owner() != "":
		return nil, fmt.Errorf("attach %s to %s: %s is a guestnet bridge, not a guest interface", iface, n.Name, iface)
	case l.Master != "" && l.Master != br.Name:
		return nil, fmt.Errorf("attach %s to %s: %s is already a port of %s (detach it first)", iface, n.Name, iface, l.Master)
	}
	if l.MTU != br.MTU {
		acts = append(acts, Action{Op: OpMTU, Link: iface, MTU: br.MTU, OldMTU: l.MTU})
	}
	if l.Master != br.Name {
		acts = append(acts, Action{Op: OpMaster, Link: iface, Master: br.Name, OldMaster: l.Master})
	}
	if !l.Up {
		acts = append(acts, Action{Op: OpLinkUp, Link: iface})
	}
	return acts, nil
}

// Detach returns the actions that take iface out of network n's bridge and
// down. An interface that is already gone or elsewhere needs nothing: QEMU
// removes its TAP itself, and ifdown must not fail for that.
func Detach(n model.Network, iface string, h model.Host) []Action {
	l, ok := h.Link(iface)
	if !ok || l.Master != n.Bridge {
		return nil
	}
	acts := []Action{{Op: OpMaster, Link: iface, OldMaster: n.Bridge}}
	if l.Up {
		acts = append(acts, Action{Op: OpLinkDown, Link: iface})
	}
	return acts
}

// checkBind6 refuses IPv6 addresses a port of n could never send from: a
// first-come network lets a port claim addresses in its prefix and
// link-local only, so a bound one must lie there too.
func checkBind6(n model.Network, iface string, b *model.PortBind) error {
	if b == nil || !n.FirstCome() {
		return nil
	}
	for _, a := range b.IPs {
		if model.FamilyOf(a) != model.IPv6 || model.LinkLocal.Contains(a) || (n.IPv6.IsValid() && n.Subnet6().Contains(a)) {
			continue
		}
		where := "the network has no ipv6 prefix, so only link-local (fe80::/10)"
		if n.IPv6.IsValid() {
			where = n.Subnet6().String() + " or link-local (fe80::/10)"
		}
		return fmt.Errorf("attach %s to %s --ip %s: outside the network's IPv6 addresses; want %s", iface, n.Name, a, where)
	}
	return nil
}
