package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// syncBGP follows the spec's bgp section after each apply: the speaker
// starts with the first section, follows its changes, announces what the
// applied networks say (model.Announced: a network removed or destroyed
// is withdrawn here) and stops when the section goes. d.mu is held.
func (d *Daemon) syncBGP() {
	if d.spec == nil || d.spec.BGP == nil {
		var err error
		switch {
		case d.speaker != nil: // the section left the config: its routes go too
			d.speaker.Stop(false)
			d.speaker = nil
			_ = d.evpn.routes.prefixes(nil, nil) // no speaker: nothing to announce
			err = removeMark(d.Dir())
		case marked(d.Dir()):
			// A speaker of an earlier serve stopped with its routes kept
			// (a crash, a restart) and the section went meanwhile: no
			// speaker will take them over, so they go now.
			var n int
			n, err = bgp.RemoveRoutes(d.bgpKernel(), d.Log)
			if err == nil {
				d.Log.Info("bgp: no bgp section: the routes an earlier speaker installed are removed", "routes", n)
				err = removeMark(d.Dir())
			}
		}
		if err != nil {
			err = fmt.Errorf("bgp: remove the routes of the speaker that left the config: %w", err)
			d.Log.Error("bgp", "err", err)
		}
		d.bgpErr.set(err)
		return
	}
	if d.speaker == nil {
		d.speaker = bgp.New(d.bgpKernel(), d.Log.With("service", "bgp"))
	}
	nets := d.spec.Models()
	own := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		own = append(own, n.Subnets()...)
	}
	d.speaker.Protect(own)
	err := mark(d.Dir()) // before the first route: a crash leaves it behind
	if err == nil {
		// A peer refused is an error that leaves the other sessions
		// running: they get the prefixes too. A peer that is this host
		// (a spec shared by every host) is left out, no error. Scope
		// comes before Announce: the paths go out under its policy.
		err = errors.Join(d.speaker.Configure(d.ctx, d.spec.BGP.BGP), d.speaker.Scope(model.Scoped(nets)), d.evpn.routes.prefixes(d.speaker, model.Announced(nets)))
	}
	d.bgpErr.set(err)
	if err != nil {
		d.Log.Error("bgp", "err", err)
	}
}

// bgpKernel is the kernel the speaker reads and writes: the engine's,
// with IPv6 routes read beside (bgp.WithRoutes6) in a real namespace.
func (d *Daemon) bgpKernel() bgp.Kernel {
	if d.Engine.NS == nil {
		return d.Engine.Kernel
	}
	return bgp.WithRoutes6(d.Engine.Kernel, d.Engine.NS)
}

// withdrawAhead withdraws, before an apply to next, what the applied
// networks announce and next will not: the peers stop sending traffic
// for networks about to go before they go (removing 1,000 networks
// takes the kernel tens of seconds), not after. What next adds is
// announced once it is applied (syncBGP). When next has no bgp section
// the networks it removes are withdrawn ahead too; the others stay
// announced until syncBGP stops the speaker after the apply. d.mu is
// held.
func (d *Daemon) withdrawAhead(next *spec.Spec) {
	if d.speaker == nil || d.spec == nil {
		return // no speaker
	}
	keep := model.Announced(next.Models())
	var now []netip.Prefix
	for _, p := range model.Announced(d.spec.Models()) {
		if _, ok := slices.BinarySearchFunc(keep, p, model.ComparePrefix); ok {
			now = append(now, p)
		}
	}
	if err := d.evpn.routes.prefixes(d.speaker, now); err != nil {
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
		_ = d.evpn.routes.prefixes(nil, nil) // no speaker: nothing to announce
	}
}

// bgpHealth names the peers whose session is not established (this
// host's own address in a shared spec's peers is not one), and the
// speaker's last error. d.mu is held.
func (d *Daemon) bgpHealth() error {
	if d.speaker == nil {
		return d.bgpErr.get()
	}
	var down []string
	for _, p := range d.speaker.Status().Peers {
		if p.State != bgp.StateEstablished && p.State != bgp.StateSelf {
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

// SpeakerMarkPath is the file that says a speaker may have routes in the
// kernel: written before it starts, removed once its routes are. A serve
// that starts without a bgp section and finds it removes the routes an
// earlier speaker left (a crash, a restart); without it, a config that
// never had the section costs no read of the routing table at each
// apply and drift repair.
func SpeakerMarkPath(dir string) string { return filepath.Join(dir, "bgp-speaker") }

func marked(dir string) bool {
	_, err := os.Stat(SpeakerMarkPath(dir))
	return err == nil
}

func mark(dir string) error {
	if marked(dir) {
		return nil
	}
	return state.WriteFile(SpeakerMarkPath(dir), fmt.Appendf(nil, "a guestnet BGP speaker ran here; its routes (protocol bgp, metric %d) may be in the kernel\n", model.BGPMetric))
}

func removeMark(dir string) error {
	err := os.Remove(SpeakerMarkPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}
