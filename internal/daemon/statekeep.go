package daemon

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/guestnet/guestnet/internal/state"
)

// The state file is the only record of the ports attach added and the
// MACs and addresses it bound them to: a bridge made again after drift
// gets its ports back from it. Removed while the daemon serves (by hand,
// by a cleanup script), the next repair would make the bridge again
// without its guests and leave them unrestricted, and the daemon would
// write the file back without them. So the daemon remembers the state it
// last read, and writes it back, with a warning, when the file is gone.
// It does not second-guess a file that is there: attach, detach and
// apply change it while the daemon serves, under the same lock.

// noteState remembers st, read from the state file, if the file exists.
// The caller holds d.mu.
func (d *Daemon) noteState(st state.State) {
	if _, err := os.Stat(d.Engine.StatePath); err == nil {
		d.lastState = &st
	}
}

// keepState writes the remembered state back if the state file is gone,
// and otherwise remembers what it holds. The caller holds d.mu and the
// engine's lock (no CLI is writing the file).
func (d *Daemon) keepState() {
	path := d.Engine.StatePath
	what := "removed"
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		st, err := state.Load(path)
		if err == nil {
			d.noteState(st)
			return
		}
		if d.lastState == nil {
			return // nothing to put back: the error reaches the operator as it is
		}
		var ioErr *fs.PathError
		if errors.As(err, &ioErr) {
			// Not read at all (out of file descriptors, EIO): the file is
			// not known to be damaged, and moving it aside would leave
			// none on disk while the write back fails for the same reason.
			d.Log.Error("the state file cannot be read; left as it is, tried again at the next repair", "path", path, "err", err)
			return
		}
		// Unreadable (truncated, overwritten): kept aside for a look, and
		// written back from memory like a removed one.
		aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			d.Log.Error("the state file cannot be read, nor moved aside", "path", path, "err", err, "move_err", rerr)
			return
		}
		d.Log.Warn("the state file cannot be read: moved aside", "path", path, "err", err, "aside", aside)
		what = "unreadable"
	}
	last := d.lastState
	if last == nil || len(last.Networks) == 0 {
		return
	}
	ports, binds := 0, 0
	for _, n := range last.Networks {
		ports += len(n.Ports)
		binds += len(n.Binds)
	}
	if err := state.Save(path, *last); err != nil {
		d.Log.Error("the state file was removed while serving, and writing it back failed: the attached ports and their bindings are known only to this process now",
			"path", path, "err", err, "ports", ports, "bindings", binds)
		return
	}
	d.Log.Warn("the state file was "+what+" while serving: written back from memory (to forget networks or ports, use guestnet destroy or detach)",
		"path", path, "networks", len(last.Networks), "ports", ports, "bindings", binds)
}
