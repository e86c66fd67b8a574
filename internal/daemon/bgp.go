package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// syncBGP follows the spec's bgp section after each apply: the speaker
// starts with the first section, follows its changes, announces what the
// applied networks say (model.Announced: a network removed or destroyed
// is withdrawn here) and stops when the section goes. d.mu is held.
func (d *Daemon) syncBGP() {
	if d.spec == nil || d.spec.BGP == nil {
		if d.speaker != nil { // the section left the config: its routes go too
			d.speaker.Stop(false)
			d.speaker = nil
		}
		d.bgpErr.set(nil)
		return
	}
	if d.speaker == nil {
		d.speaker = bgp.New(d.Engine.Kernel, d.Log.With("service", "bgp"))
	}
	nets := d.spec.Models()
	own := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		if s := n.Subnet(); s.IsValid() {
			own = append(own, s)
		}
	}
	d.speaker.Protect(own)
	err := d.speaker.Configure(d.ctx, d.spec.BGP.BGP)
	if err == nil {
		err = d.speaker.Announce(model.Announced(nets))
	}
	d.bgpErr.set(err)
	if err != nil {
		d.Log.Error("bgp", "err", err)
	}
}

// withdrawAhead withdraws, before an apply to next, what the applied
// networks announce and next will not: the peers stop sending traffic
// for networks about to go before they go (removing 1,000 networks
// takes the kernel tens of seconds), not after. What next adds is
// announced once it is applied (syncBGP). d.mu is held.
func (d *Daemon) withdrawAhead(next *spec.Spec) {
	if d.speaker == nil || d.spec == nil || next.BGP == nil {
		return // no speaker, or the section goes: syncBGP stops it after the apply
	}
	keep := model.Announced(next.Models())
	var now []netip.Prefix
	for _, p := range model.Announced(d.spec.Models()) {
		if _, ok := slices.BinarySearchFunc(keep, p, model.ComparePrefix); ok {
			now = append(now, p)
		}
	}
	if err := d.speaker.Announce(now); err != nil {
		d.Log.Error("bgp: withdraw ahead of the apply", "err", err)
	}
}

// bgpUsed is true when the config has a bgp section. d.mu is held.
func (d *Daemon) bgpUsed() bool { return d.spec != nil && d.spec.BGP != nil }

// stopBGP ends the sessions as the daemon stops; the routes the speaker
// installed stay (graceful restart, see bgp.Speaker.Stop). d.mu is held.
func (d *Daemon) stopBGP() {
	if d.speaker != nil {
		d.speaker.Stop(true)
		d.speaker = nil
	}
}

// bgpHealth names the peers whose session is not established, and the
// speaker's last error. d.mu is held.
func (d *Daemon) bgpHealth() error {
	if d.speaker == nil {
		return d.bgpErr.get()
	}
	var down []string
	for _, p := range d.speaker.Status().Peers {
		if p.State != bgp.StateEstablished {
			down = append(down, fmt.Sprintf("%s (AS %d) %s", p.Address, p.ASN, p.State))
		}
	}
	slices.Sort(down)
	var err error
	if len(down) > 0 {
		err = fmt.Errorf("BGP sessions not established: %s", strings.Join(down, ", "))
	}
	return errors.Join(d.bgpErr.get(), err)
}

// BGP is the speaker's status; false when the config has no bgp section.
func (d *Daemon) BGP() (bgp.Status, bool) {
	d.mu.Lock()
	s := d.speaker
	d.mu.Unlock()
	if s == nil {
		return bgp.Status{}, false
	}
	return s.Status(), true
}
