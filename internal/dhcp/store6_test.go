package dhcp

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestStore6 keeps DHCPv6 leases next to DHCPv4 ones in one file: each
// family reads back its own, the DHCPv4 walks never see the DHCPv6 bucket,
// a reopened store (a restart) has them all, and a garbage DHCPv6 record
// makes the store refused like a DHCPv4 one.
func TestStore6(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.db")
	st, err := OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	v4 := Lease{MAC: "02:00:00:00:00:01", IP: netip.MustParseAddr("10.99.0.100"), Expiry: exp}
	v6 := Lease6{DUID: "00:03:00:01:02:00:00:00:61:10", IAID: 1, IP: netip.MustParseAddr("fd42:61::10"),
		MAC: "02:00:00:00:61:10", Hostname: "fixed", Expiry: exp, Port: "vnet3", PortIndex: 9}
	other := Lease6{DUID: "00:01", IAID: 2, IP: netip.MustParseAddr("fd42:61::100"), Expiry: exp}
	for _, err := range []error{st.Put("six", v4), st.Put6("six", v6), st.Put6("six", other), st.Put6("lab", other)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Delete6("lab", other.IP); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = OpenBolt(path, false, time.Second) // inspects the whole file first
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer st.Close()
	nets, _ := st.Networks()
	if !slices.Equal(nets, []string{"six"}) {
		t.Errorf("DHCPv4 networks %v, want [six] (no %s)", nets, Bucket6)
	}
	ls, err := st.Load("six")
	if err != nil || len(ls) != 1 || ls[0].IP != v4.IP {
		t.Errorf("DHCPv4 leases %v (%v), want the one", ls, err)
	}
	l6, err := st.Load6("six")
	if err != nil || len(l6) != 2 || l6[0] != v6 && l6[1] != v6 {
		t.Errorf("DHCPv6 leases %+v (%v), want both, the static one whole", l6, err)
	}
	if l, _ := st.Load6("lab"); len(l) != 0 {
		t.Errorf("deleted DHCPv6 lease still there: %v", l)
	}
	if n6, _ := st.Networks6(); !slices.Contains(n6, "six") {
		t.Errorf("Networks6 %v, want six", n6)
	}
}

func TestStore6GarbageRefusedAndRecovered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.db")
	st, err := OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	good := Lease6{DUID: "00:01", IAID: 1, IP: netip.MustParseAddr("fd42:61::100"), Expiry: time.Now().Add(time.Hour)}
	if err := st.Put6("six", good); err != nil {
		t.Fatal(err)
	}
	st.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(Bucket6)).Bucket([]byte("six")).Put(make([]byte, 16), []byte("{not json"))
	})
	st.Close()
	refused(t, path, "DHCPv6 leases of six")
	r, err := RecoverBolt(path, time.Now(), time.Second)
	if err != nil || r.Kept != 1 || r.Bad != 1 {
		t.Fatalf("recover: %+v %v; want the good DHCPv6 lease kept, one bad", r, err)
	}
	st, err = OpenBolt(path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ls, _ := st.Load6("six"); len(ls) != 1 || ls[0].IP != good.IP {
		t.Errorf("after recovery: %v, want the good lease", ls)
	}
}
