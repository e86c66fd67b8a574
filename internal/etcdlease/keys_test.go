package etcdlease

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

func TestAddrKeysSortAsAddresses(t *testing.T) {
	as := []netip.Addr{netip.MustParseAddr("10.60.0.9"), netip.MustParseAddr("10.60.0.10"), netip.MustParseAddr("10.60.0.100"),
		netip.MustParseAddr("10.60.1.0"), netip.MustParseAddr("9.255.255.255")}
	slices.SortFunc(as, netip.Addr.Compare)
	var ks []string
	for _, a := range as {
		k := addrKey(a)
		if back, ok := parseAddrKey(k); !ok || back != a {
			t.Errorf("addrKey(%s) = %q reads back as %v", a, k, back)
		}
		ks = append(ks, k)
	}
	if !slices.IsSorted(ks) {
		t.Errorf("keys do not sort as their addresses: %v", ks)
	}
	k := keys{"/g/"}
	n, kind, a, ok := k.parse(k.lease("stretch", as[2]))
	if !ok || n != "stretch" || kind != "lease" || a != as[2] {
		t.Errorf("parse(lease key) = %q %q %v %v", n, kind, a, ok)
	}
	for _, bad := range []string{"/g/net/stretch/lease/10.60.0.1.5", "/g/host/a", "/g/net/stretch/lease/x"} {
		if _, _, _, ok := k.parse(bad); ok {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestBlocksCutRanges(t *testing.T) {
	r := func(a, b string) model.Range {
		return model.Range{From: netip.MustParseAddr(a), To: netip.MustParseAddr(b)}
	}
	got := Blocks([]model.Range{r("10.60.0.100", "10.60.0.135"), r("10.60.1.0", "10.60.1.3")}, 16)
	want := []model.Range{r("10.60.0.100", "10.60.0.115"), r("10.60.0.116", "10.60.0.131"), r("10.60.0.132", "10.60.0.135"), r("10.60.1.0", "10.60.1.3")}
	if !slices.Equal(got, want) {
		t.Errorf("Blocks = %v, want %v", got, want)
	}
	// The keys of a block's leases are one key range, and only its own.
	k := keys{"/g/"}
	start, end := k.leaseRange("s", want[0])
	for _, a := range []string{"10.60.0.99", "10.60.0.100", "10.60.0.115", "10.60.0.116"} {
		key := k.lease("s", netip.MustParseAddr(a))
		in := key >= start && key < end
		if in != want[0].Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s in the key range of %v: %v", a, want[0], in)
		}
	}
}
