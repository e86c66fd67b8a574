package ra

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

func rsBytes(t testing.TB, opts ...ndp.Option) []byte {
	b, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRS(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1")
	slla := &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}
	cases := []struct {
		name    string
		b       []byte
		hop     int
		src     netip.Addr
		ok      bool
		unicast bool
	}{
		{"from a link-local address", rsBytes(t, slla), 255, ll, true, true},
		{"from the unspecified address", rsBytes(t), 255, netip.IPv6Unspecified(), true, false},
		{"forwarded (hop limit 254)", rsBytes(t), 254, ll, false, false},
		{"code 1", append([]byte{133, 1}, rsBytes(t)[2:]...), 255, ll, false, false},
		{"too short", []byte{133, 0, 0, 0}, 255, ll, false, false},
		{"an RA", mustRA(t), 255, ll, false, false},
		{"source link-layer from ::", rsBytes(t, slla), 255, netip.IPv6Unspecified(), false, false},
		{"option of length 0", append(rsBytes(t), 1, 0, 0, 0, 0, 0, 0, 0), 255, ll, false, false},
		{"empty", nil, 255, ll, false, false},
	}
	for _, c := range cases {
		s, err := ParseRS(c.b, c.hop, c.src)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", c.name, err, c.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v is not ErrInvalid", c.name, err)
		}
		if err == nil && s.Unicast() != c.unicast {
			t.Errorf("%s: unicast %v, want %v", c.name, s.Unicast(), c.unicast)
		}
	}
}

func mustRA(t testing.TB) []byte {
	b, err := ndp.MarshalMessage(&ndp.RouterAdvertisement{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseRS: a hostile guest controls every byte of a solicitation; the
// parse path never panics, and what it accepts is an RS.
func FuzzParseRS(f *testing.F) {
	f.Add(rsBytes(f), 255, []byte(netip.MustParseAddr("fe80::1").AsSlice()))
	f.Add(rsBytes(f, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}), 255, make([]byte, 16))
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 255, make([]byte, 16))
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 31, 1, 0, 0, 0, 0, 0, 0}, 255, make([]byte, 4))
	f.Fuzz(func(t *testing.T, b []byte, hop int, src []byte) {
		a, _ := netip.AddrFromSlice(src)
		s, err := ParseRS(b, hop, a)
		if err == nil && (len(b) < 8 || b[0] != 133 || !s.From.IsValid()) {
			t.Errorf("accepted %x from %v as %+v", b, a, s)
		}
	})
}
