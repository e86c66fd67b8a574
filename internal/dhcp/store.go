package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestnet/guestnet/internal/groupcommit"
	berrors "go.etcd.io/bbolt/errors"
)

// BoltStore keeps leases in a bbolt file, one bucket per network. Writes
// from concurrent requests are grouped into one transaction and one commit
// (groupcommit: the changes that arrive while a commit syncs go together
// in the next): each caller returns only once its lease is on disk, and a
// burst of clients shares the cost of the sync.
type BoltStore struct {
	db     *bolt.DB
	writes groupcommit.Group[func(*bolt.Tx) error]
}

var _ Store = (*BoltStore)(nil)

// OpenBolt opens (or creates, when path does not exist) the lease
// database. readOnly opens it without taking the writer's lock, for
// `guestnet leases` while no daemon runs; timeout bounds the wait for a
// lock another process holds.
//
// An existing file is inspected first (inspect.go): one that is empty,
// truncated, fails bbolt's consistency check or holds a record that does
// not decode is refused with a *CorruptError, never opened as an empty
// store and never a panic.
func OpenBolt(path string, readOnly bool, timeout time.Duration) (*BoltStore, error) {
	exists, err := checkPath(path)
	if err != nil {
		return nil, err
	}
	if exists {
		s, err := inspect(path, timeout)
		if err != nil {
			return nil, err
		}
		if s.Problem != "" {
			return nil, &CorruptError{Path: path, Problem: s.Problem, Readable: s.count()}
		}
	}
	st, err := openBolt(path, readOnly, timeout)
	if err != nil && !errors.Is(err, berrors.ErrTimeout) {
		// Anything but a lock another guestnet holds: a restart cannot fix it.
		return nil, &CorruptError{Path: path, Problem: "cannot be opened (" + errors.Unwrap(err).Error() + ")",
			Fix: "check the state folder and its permissions"}
	}
	return st, err
}

// checkPath reports whether the lease store exists, and refuses a path
// that is not a regular file. A symbolic link is refused, not followed:
// the store lives in guestnet's root-only state folder, and a link there
// (dangling, into a missing folder, or to another filesystem) has no
// reason to exist; following it would create the database wherever it
// points, or fail later with a bare "no such file or directory".
func checkPath(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &CorruptError{Path: path, Problem: "cannot be examined (" + err.Error() + ")",
			Fix: "check the state folder and its permissions"}
	}
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		target, _ := os.Readlink(path)
		return false, &CorruptError{Path: path, Problem: fmt.Sprintf("a symbolic link (to %s), not a file", target),
			Fix: "guestnet follows no link to its lease store: replace the link with the file it points to (mv " + target + " " + path + "), " +
				"or remove it to start with no leases (guests keep their addresses only if they renew them)"}
	case m.IsDir():
		return false, &CorruptError{Path: path, Problem: "a directory, not a lease database",
			Fix: "move the directory away: guestnet then starts a new, empty store (guests keep their addresses only if they renew them); " +
				"or put a backup of the lease database in its place"}
	case !m.IsRegular():
		return false, &CorruptError{Path: path, Problem: fmt.Sprintf("not a regular file (%s)", m.Type()),
			Fix: "move it away, or put a backup of the lease database in its place"}
	}
	return true, nil
}

func openBolt(path string, readOnly bool, timeout time.Duration) (*BoltStore, error) {
	// The freelist is rebuilt on open instead of written with every commit:
	// fewer pages to sync per lease.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open lease store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the database; every acknowledged lease is already synced.
func (s *BoltStore) Close() error { return s.db.Close() }

func key(ip netip.Addr) []byte { b := ip.As4(); return b[:] }

// Load returns a network's leases.
func (s *BoltStore) Load(network string) ([]Lease, error) {
	var out []Lease
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(network))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			l, err := decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load leases of %s: %w", network, err)
	}
	return out, nil
}

// decode reads one record; its key must be its address.
func decode(k, v []byte) (Lease, error) {
	var l Lease
	if err := json.Unmarshal(v, &l); err != nil {
		return l, fmt.Errorf("lease record %x: %w", k, err)
	}
	if !l.IP.Is4() || string(key(l.IP)) != string(k) {
		return l, fmt.Errorf("lease record %x: holds address %v, not its key", k, l.IP)
	}
	return l, nil
}

// Networks lists the networks that have a bucket.
func (s *BoltStore) Networks() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if string(name) != Bucket6 {
				out = append(out, string(name))
			}
			return nil
		})
	})
	return out, err
}

// Put stores a lease durably.
func (s *BoltStore) Put(network string, l Lease) error {
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(network))
		if err != nil {
			return err
		}
		return b.Put(key(l.IP), v)
	})
}

// Delete removes a lease durably.
func (s *BoltStore) Delete(network string, ip netip.Addr) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(network))
		if b == nil {
			return nil
		}
		return b.Delete(key(ip))
	})
}

// update runs fn in a write transaction shared with the changes of other
// callers, and returns once that transaction is on disk. A transaction
// that fails is run again for each change alone (groupcommit), so that one
// failing change fails only its own caller.
func (s *BoltStore) update(fn func(*bolt.Tx) error) error {
	return s.writes.Do(fn, func(fns []func(*bolt.Tx) error) error {
		return s.db.Update(func(tx *bolt.Tx) error {
			for _, f := range fns {
				if err := f(tx); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
