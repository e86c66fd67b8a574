package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// While guestnet serve runs, `guestnet destroy NET` asks the daemon: the
// network is removed (its bridge, rules, DHCP, DNS, its BGP announcement)
// and held down, so that neither drift repair nor a reload (SIGHUP) makes
// it again while the config still declares it. `guestnet apply` of the
// config, the operator saying "make the host match the config", brings
// the held networks back. The held names survive a restart of serve (a
// file beside the state), since a restart must not undo a destroy either.

// DestroyedPath is the file of the held-down networks of a state folder.
func DestroyedPath(dir string) string { return filepath.Join(dir, "destroyed.json") }

// loadHeld reads the held-down networks; a missing file holds none.
func loadHeld(dir string) (map[string]bool, error) {
	data, err := os.ReadFile(DestroyedPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	way := "it lists the networks guestnet destroy removed while serve ran; remove the file to bring them back"
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, way)
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, fmt.Errorf("read %s: %w (%s)", DestroyedPath(dir), err, way)
	}
	held := make(map[string]bool, len(names))
	for _, n := range names {
		held[n] = true
	}
	return held, nil
}

// saveHeld writes the held-down networks (the file goes when none are).
func saveHeld(dir string, held map[string]bool) error {
	if len(held) == 0 {
		err := os.Remove(DestroyedPath(dir))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return err
	}
	names := make([]string, 0, len(held))
	for n := range held {
		names = append(names, n)
	}
	slices.Sort(names)
	data, _ := json.Marshal(names)
	return state.WriteFile(DestroyedPath(dir), append(data, '\n'))
}

// ReleaseHeld forgets names from the held-down networks of a state
// folder: `guestnet apply` without a daemon applies them, and the next
// serve must not take them down again. undo writes the set back (the
// apply failed). Nothing is written when no name was held.
func ReleaseHeld(dir string, names []string) (undo func() error, err error) {
	held, err := loadHeld(dir)
	if err != nil {
		return nil, err
	}
	left := maps.Clone(held)
	for _, n := range names {
		delete(left, n)
	}
	if len(left) == len(held) {
		return func() error { return nil }, nil
	}
	if err := saveHeld(dir, left); err != nil {
		return nil, fmt.Errorf("forget the networks guestnet destroy held down: %w", err)
	}
	return func() error { return saveHeld(dir, held) }, nil
}

// withoutHeld is s minus the held-down networks (and the peers entries
// naming them). It logs each declared network it leaves out.
func (d *Daemon) withoutHeld(s *spec.Spec) *spec.Spec {
	if len(d.held) == 0 {
		return s
	}
	out := *s
	out.Networks = nil
	for _, n := range s.Networks {
		if d.held[n.Name] {
			d.Log.Warn("network declared in the config but destroyed with guestnet destroy: left down "+
				"(guestnet apply of the config brings it back)", "network", n.Name)
			continue
		}
		if slices.ContainsFunc(n.Peers, func(p string) bool { return d.held[p] }) {
			n.Peers = slices.DeleteFunc(slices.Clone(n.Peers), func(p string) bool { return d.held[p] })
		}
		out.Networks = append(out.Networks, n)
	}
	return &out
}

// destroy removes networks of the config and holds them down. Every name
// must be a network the daemon serves now or one already held down (a
// second destroy is no typo: the network is down, as asked); on any error
// nothing changes.
func (d *Daemon) destroy(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("destroy: no network named")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.spec == nil {
		return fmt.Errorf("destroy: the daemon has applied no config yet")
	}
	var unknown []string
	for _, n := range names {
		if !d.held[n] && !slices.ContainsFunc(d.spec.Networks, func(x spec.Network) bool { return x.Name == n }) {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		var served []string
		for _, n := range d.spec.Networks {
			served = append(served, n.Name)
		}
		return &unknownError{fmt.Sprintf("destroy: %s: not a network guestnet serve runs here (it runs: %s)",
			strings.Join(unknown, ", "), strings.Join(served, ", "))}
	}
	held := make(map[string]bool, len(d.held)+len(names))
	for n := range d.held {
		held[n] = true
	}
	for _, n := range names {
		held[n] = true
	}
	prev := d.held
	d.held = held
	s := d.withoutHeld(d.spec)
	// Record first: a crash after the kernel changed must not bring the
	// networks back at the next start.
	if err := saveHeld(d.Dir(), held); err != nil {
		d.held = prev
		return fmt.Errorf("destroy: record the destroyed networks: %w", err)
	}
	d.withdrawAhead(s)
	d.withdrawRAAhead(s) // while the bridges are still there
	p, err := d.Engine.Converge(ctx, s)
	if err != nil {
		d.held = prev
		d.syncBGP() // announce what is still applied again
		if serr := saveHeld(d.Dir(), prev); serr != nil {
			err = errors.Join(err, serr)
		}
		return fmt.Errorf("destroy: %w", err)
	}
	for _, a := range p.Actions {
		d.Log.Info("destroyed", "action", a.String())
	}
	d.spec = s
	d.syncServices()
	return nil
}

// heldNote names the held-down networks for guestnet status: without it
// the status lists the other networks only, as if the config declared
// nothing else. d.mu is held.
func (d *Daemon) heldNote() string {
	if len(d.held) == 0 {
		return ""
	}
	names := make([]string, 0, len(d.held))
	for n := range d.held {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Sprintf("held down by guestnet destroy: %s (guestnet apply of the config brings them back)", strings.Join(names, ", "))
}

// unknownError is a destroy of a network the daemon does not serve.
type unknownError struct{ msg string }

func (e *unknownError) Error() string { return e.msg }
