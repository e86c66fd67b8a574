package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// One `guestnet serve` per network namespace. Two daemons on one
// namespace with different --state-dir would both answer DHCP on the same
// bridges from separate lease stores (one address leased to two clients)
// and rewrite each other's anti-spoofing bindings without end. The state
// dir's own lock does not see them, so the daemon also takes an exclusive
// flock on a file named by the namespace's inode, in a folder only root
// may write (an abstract unix socket would be per namespace too, but any
// user in the namespace could bind its name first and keep the daemon
// from starting). The kernel releases the lock when the process dies, and
// the namespace's inode cannot be reused while the daemon holds a handle
// on it.

// serveLockDir holds the per-namespace lock files.
var serveLockDir = "/run/guestnet"

// serveOwner is what the lock file says about the daemon holding it.
type serveOwner struct {
	PID      int      `json:"pid"`
	StateDir string   `json:"state_dir"`
	Config   []string `json:"config"`
}

// claimNamespace takes the namespace's serve lock until ctx ends (or the
// process does), or says which daemon holds it.
func (d *Daemon) claimNamespace(ctx context.Context) error {
	if d.Engine.NS == nil {
		return nil // a fake kernel (unit tests): no namespace to share
	}
	var st syscall.Stat_t
	err := d.Engine.NS.Do(func() error { return syscall.Stat("/proc/thread-self/ns/net", &st) })
	if err != nil {
		return fmt.Errorf("identify network namespace %q: %w", d.Engine.NS.Name, err)
	}
	if err := os.MkdirAll(serveLockDir, 0o700); err != nil {
		return fmt.Errorf("serve lock: %w", err)
	}
	path := filepath.Join(serveLockDir, fmt.Sprintf("serve-netns-%d-%d.lock", st.Dev, st.Ino))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("serve lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("serve lock %s: %w", path, err)
		}
		return d.otherServer(f)
	}
	b, _ := json.Marshal(serveOwner{PID: os.Getpid(), StateDir: d.Dir(), Config: absPaths(d.Config)})
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(b, '\n'), 0)
	}
	go func() {
		<-ctx.Done()
		f.Close() // releases the lock
	}()
	return nil
}

// otherServer is the error of a second daemon on a namespace: it names
// the first one as far as its lock file says.
func (d *Daemon) otherServer(f *os.File) error {
	var o serveOwner
	b := make([]byte, 64<<10)
	n, _ := f.ReadAt(b, 0)
	who := "another guestnet serve"
	if json.Unmarshal(b[:n], &o) == nil && o.PID != 0 {
		who = fmt.Sprintf("guestnet serve (PID %d, state dir %s, config %s)", o.PID, o.StateDir, strings.Join(o.Config, ","))
	}
	return fmt.Errorf("%s already serves network namespace %q: two daemons on one namespace would answer DHCP from separate lease stores "+
		"and undo each other's anti-spoofing bindings; stop that one first (systemctl stop, or kill the PID), or reload it to change its config",
		who, d.Engine.NS.Name)
}
