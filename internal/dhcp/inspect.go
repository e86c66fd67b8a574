package dhcp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A lease store that cannot be read must stop the daemon with a message,
// never panic it (bbolt asserts on a zeroed page) and never let it start
// empty (bbolt initialises a 0-byte file as a new database): either would
// hand out addresses that guests still hold. inspect reads a store whole
// before anything opens it for real.

// CorruptError is a lease store that cannot be read: the daemon and
// `guestnet leases` refuse it and say the way out.
type CorruptError struct {
	Path     string
	Problem  string // what is wrong: "0 bytes (truncated?)", "page 7: ..."
	Readable int    // leases that can still be read from it
	// Fix is the way out when it is not --recover-leases (a directory or
	// a link where the store should be); "" for a damaged database.
	Fix string
}

func (e *CorruptError) Error() string {
	if e.Fix != "" {
		return fmt.Sprintf("lease store %s: %s: %s", e.Path, e.Problem, e.Fix)
	}
	keep := "none of its leases can be read"
	if e.Readable > 0 {
		keep = fmt.Sprintf("%d leases can still be read from it", e.Readable)
	}
	return fmt.Sprintf("lease store %s: %s: %s; `guestnet serve --recover-leases` moves it aside to %s.corrupt-TIME, "+
		"keeps the leases that can be read and starts (guests keep their addresses only if they renew them), "+
		"or stop and restore a backup of %s", e.Path, e.Problem, keep, filepath.Base(e.Path), filepath.Base(e.Path))
}

// salvage is what inspect read from a store.
type salvage struct {
	Problem string             // the first thing found wrong, "" for a sound store
	Leases  map[string][]Lease // by network: every record that decoded
	Leases6 map[string][]Lease6
	Bad     int // records that did not decode
}

func (s salvage) count() int {
	n := 0
	for _, ls := range s.Leases {
		n += len(ls)
	}
	for _, ls := range s.Leases6 {
		n += len(ls)
	}
	return n
}

func (s *salvage) fail(format string, a ...any) {
	if s.Problem == "" {
		s.Problem = fmt.Sprintf(format, a...)
	}
}

// guarded runs fn and turns a panic into an error. bbolt panics on pages
// it cannot make sense of, and reading a page past the end of a
// truncated file faults (SetPanicOnFault makes that a panic too, for
// this goroutine only).
func guarded(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("a page cannot be read (bbolt: %v)", r)
		}
	}()
	return fn()
}

// inspect opens the store read-only and reads it all: its size against
// its pages' high-water mark, every record of every bucket, then bbolt's
// own consistency check (tx.Check). It returns an error only when the
// file cannot be read at all for another reason (permissions, a lock held
// past timeout); what is wrong with the content is in Problem.
func inspect(path string, timeout time.Duration) (salvage, error) {
	s := salvage{Leases: map[string][]Lease{}, Leases6: map[string][]Lease6{}}
	fi, err := os.Stat(path)
	if err != nil {
		return s, fmt.Errorf("open lease store %s: %w", path, err)
	}
	if fi.Size() == 0 {
		s.fail("0 bytes (truncated?)")
		return s, nil
	}
	var db *bolt.DB
	err = guarded(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true,
			NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return s, fmt.Errorf("open lease store %s: another guestnet serve holds it: %w", path, err)
	case errors.Is(err, os.ErrPermission):
		return s, fmt.Errorf("open lease store %s: %w", path, err)
	case err != nil:
		s.fail("%d bytes, not a readable bbolt database (%v)", fi.Size(), err)
		return s, nil
	}
	defer guarded(db.Close)
	if err := guarded(func() error { return s.read(db, fi.Size()) }); err != nil {
		s.fail("%v", err)
	}
	return s, nil
}

// read walks every bucket in its own guarded step, so that one bad page
// loses only the records behind it, and runs tx.Check only on a store
// whose every page could be walked: bbolt's check rebuilds the freelist
// in a goroutine of its own, where a panic could not be recovered.
func (s *salvage) read(db *bolt.DB, size int64) error {
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}
	defer tx.Rollback() // also on a panic: a leaked read transaction blocks Close
	if tx.Size() > size {
		s.fail("%d bytes, but its pages reach to byte %d (truncated?)", size, tx.Size())
	}
	var names [][]byte
	if err := guarded(func() error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, append([]byte(nil), name...))
			return nil
		})
	}); err != nil {
		s.fail("list networks: %v", err)
	}
	for _, name := range names {
		if err := guarded(func() error { return s.bucket(tx, name) }); err != nil {
			s.fail("network %s: %v", name, err)
		}
	}
	if s.Problem != "" {
		return nil
	}
	for err := range tx.Check() {
		s.fail("consistency check: %v", err)
	}
	return nil
}

func (s *salvage) bucket(tx *bolt.Tx, name []byte) error {
	b := tx.Bucket(name)
	if b == nil {
		return fmt.Errorf("bucket missing")
	}
	if string(name) == Bucket6 {
		return s.bucket6(b)
	}
	return b.ForEach(func(k, v []byte) error {
		l, err := decode(k, v)
		if err != nil {
			s.Bad++
			s.fail("network %s: %v", name, err)
			return nil
		}
		s.Leases[string(name)] = append(s.Leases[string(name)], l)
		return nil
	})
}

// bucket6 reads the DHCPv6 leases: one sub-bucket per network.
func (s *salvage) bucket6(top *bolt.Bucket) error {
	return top.ForEachBucket(func(name []byte) error {
		return top.Bucket(name).ForEach(func(k, v []byte) error {
			l, err := decode6(k, v)
			if err != nil {
				s.Bad++
				s.fail("DHCPv6 leases of %s: %v", name, err)
				return nil
			}
			s.Leases6[string(name)] = append(s.Leases6[string(name)], l)
			return nil
		})
	})
}

// Recovery is what RecoverBolt did.
type Recovery struct {
	Problem string // what was wrong; "" when the store was sound and left alone
	MovedTo string // where the unreadable file went
	Kept    int    // leases copied into the new store
	Bad     int    // records that did not decode (records on unreadable pages are not counted: they cannot be)
}

// RecoverBolt is the way out of a CorruptError: it moves a store that
// cannot be read aside to PATH.corrupt-TIME (UTC) and writes the leases it
// could still read into a new store at path. A sound or missing store is
// left as it is.
func RecoverBolt(path string, now time.Time, timeout time.Duration) (Recovery, error) {
	if exists, err := checkPath(path); !exists || err != nil {
		return Recovery{}, err // nothing there, or not a file to recover
	}
	s, err := inspect(path, timeout)
	if err != nil || s.Problem == "" {
		return Recovery{}, err
	}
	r := Recovery{Problem: s.Problem, MovedTo: path + ".corrupt-" + now.UTC().Format("20060102T150405Z"), Bad: s.Bad}
	if err := os.Rename(path, r.MovedTo); err != nil {
		return r, fmt.Errorf("move the unreadable lease store aside: %w", err)
	}
	st, err := openBolt(path, false, timeout)
	if err != nil {
		return r, err
	}
	defer st.Close()
	for network, ls := range s.Leases {
		for _, l := range ls {
			if err := st.Put(network, l); err != nil {
				return r, fmt.Errorf("write salvaged lease %s of %s: %w", l.IP, network, err)
			}
			r.Kept++
		}
	}
	for network, ls := range s.Leases6 {
		for _, l := range ls {
			if err := st.Put6(network, l); err != nil {
				return r, fmt.Errorf("write salvaged DHCPv6 lease %s of %s: %w", l.IP, network, err)
			}
			r.Kept++
		}
	}
	return r, nil
}
