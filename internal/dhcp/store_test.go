package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestnet/guestnet/internal/dhcp/dhcptest"
)

// realStore writes n leases of two networks into a new store, as the
// daemon does (BoltStore.Put), and returns its path.
func realStore(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "leases.db")
	st, err := OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n { // concurrent, as the daemon's clients: Batch groups them
		wg.Add(1)
		go func() {
			defer wg.Done()
			network := []string{"default", "lab"}[i%2]
			a := netip.AddrFrom4([4]byte{10, 99, byte(i / 250), byte(i%250 + 2)})
			l := Lease{MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256), IP: a, Hostname: fmt.Sprintf("guest-%03d", i), Expiry: exp}
			errs <- st.Put(network, l)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// refused opens path as serve and as leases would, and checks both refuse
// it with a CorruptError that names the file, the problem and the way out.
func refused(t *testing.T, path, problem string) *CorruptError {
	t.Helper()
	var ce *CorruptError
	for _, readOnly := range []bool{false, true} {
		st, err := OpenBolt(path, readOnly, time.Second)
		if err == nil {
			st.Close()
			t.Fatalf("readOnly=%v: a store that cannot be read was opened", readOnly)
		}
		if !errors.As(err, &ce) {
			t.Fatalf("readOnly=%v: want a *CorruptError, got %T: %v", readOnly, err, err)
		}
		msg := err.Error()
		for _, want := range []string{path, problem, "--recover-leases", "restore a backup"} {
			if !strings.Contains(msg, want) {
				t.Errorf("readOnly=%v: message lacks %q:\n%s", readOnly, want, msg)
			}
		}
	}
	t.Logf("message: %s", ce)
	return ce
}

func TestStoreSoundAndMissing(t *testing.T) {
	path := realStore(t, 300)
	st, err := OpenBolt(path, true, time.Second)
	if err != nil {
		t.Fatalf("a sound store was refused: %v", err)
	}
	a, _ := st.Load("default")
	b, _ := st.Load("lab")
	st.Close()
	if len(a)+len(b) != 300 {
		t.Errorf("loaded %d+%d leases, want 300", len(a), len(b))
	}
	if r, err := RecoverBolt(path, time.Now(), time.Second); err != nil || r.Problem != "" {
		t.Errorf("recovery of a sound store: %+v, %v (want nothing done)", r, err)
	}
	fresh := filepath.Join(t.TempDir(), "leases.db")
	st, err = OpenBolt(fresh, false, time.Second)
	if err != nil {
		t.Fatalf("a missing store is a first start: %v", err)
	}
	st.Close()
}

func TestStoreEmptyFileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	refused(t, path, "0 bytes (truncated?)")
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Errorf("the refused file was written to: %d bytes", fi.Size())
	}
	r, err := RecoverBolt(path, time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.MovedTo != path+".corrupt-20261130T010203Z" || r.Kept != 0 {
		t.Errorf("recovery: %+v", r)
	}
	if _, err := os.Stat(r.MovedTo); err != nil {
		t.Errorf("the bad file was not kept aside: %v", err)
	}
	st, err := OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	st.Close()
}

func TestStoreTruncatedRefused(t *testing.T) {
	for _, keep := range []int64{100, 4096, 8192, -1} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			path := realStore(t, 300)
			fi, _ := os.Stat(path)
			size := keep
			if size < 0 {
				size = fi.Size() / 2
			}
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			refused(t, path, "bytes")
		})
	}
}

// TestStoreZeroedPageRefused zeroes one leaf page in the middle of a store
// holding 300 leases: bbolt itself panics on it ("assertion failed" or
// "invalid page type"); the store must refuse it with a message, and
// recovery must keep the leases of the other pages.
func TestStoreZeroedPageRefused(t *testing.T) {
	path := realStore(t, 300)
	page, leaves, err := dhcptest.ZeroLeafPage(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaves) < 3 {
		t.Fatalf("only %d leaf pages in a store of 300 leases", len(leaves))
	}
	t.Logf("zeroed page %d of leaf pages %v", page, leaves)

	ce := refused(t, path, "page")
	if ce.Readable == 0 || ce.Readable >= 300 {
		t.Errorf("%d leases readable; want some, not all 300", ce.Readable)
	}
	r, err := RecoverBolt(path, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	defer st.Close()
	a, _ := st.Load("default")
	b, _ := st.Load("lab")
	if len(a)+len(b) != r.Kept || r.Kept != ce.Readable {
		t.Errorf("recovery kept %d, store holds %d, %d were readable", r.Kept, len(a)+len(b), ce.Readable)
	}
	t.Logf("recovery: %+v", r)
}

func TestStoreGarbageRecordRefused(t *testing.T) {
	path := realStore(t, 20)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("default")).Put([]byte{10, 99, 0, 77}, []byte("\x00garbage{"))
	})
	db.Close()
	ce := refused(t, path, "lease record 0a63004d")
	if ce.Readable != 20 {
		t.Errorf("%d leases readable, want the 20 good ones", ce.Readable)
	}
	r, err := RecoverBolt(path, time.Now(), time.Second)
	if err != nil || r.Kept != 20 || r.Bad != 1 {
		t.Errorf("recovery: %+v, %v; want 20 kept, 1 bad", r, err)
	}
}
