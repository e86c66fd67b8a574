package match

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestCannotSimulate: a match the matcher does not know is an error that
// names it, never a silent true or false.
func TestCannotSimulate(t *testing.T) {
	p := Packet{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), IIF: "br0", Proto: "icmp"}
	for _, m := range []model.Match{
		{Kind: "meta mark"},
		{Kind: model.MatchL4, Name: "sctp"},
		{Kind: model.MatchL4, Name: "tcp", Neg: true},
		{Kind: model.MatchDPort, Port: 53}, // on an icmp packet: no port to read
	} {
		ok, err := Rule(model.Rule{Match: []model.Match{m}, Verdict: model.Accept}, p)
		var ue *UnknownError
		if !errors.As(err, &ue) || ok {
			t.Errorf("%s: got %v, %v; want an UnknownError", m, ok, err)
		}
	}
	if _, _, err := Lookup(model.Ruleset{}, model.Accept, p); err == nil {
		t.Error("Lookup of a verdict with no map: want an error")
	}
}

// TestAbsentInterface: at a hook without an input (or output) interface,
// an interface match fails negated or not, as the kernel's meta load breaks.
func TestAbsentInterface(t *testing.T) {
	p := Packet{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), IIF: "br0"}
	for _, c := range []struct {
		m    model.Match
		want bool
	}{
		{model.Match{Kind: model.MatchIIF, Name: "br0"}, true},
		{model.Match{Kind: model.MatchIIF, Name: "br0", Neg: true}, false},
		{model.Match{Kind: model.MatchOIF, Name: "br0"}, false},
		{model.Match{Kind: model.MatchOIF, Name: "br0", Neg: true}, false},
		{model.Match{Kind: model.MatchIIFGrp, Port: 0}, true},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("10.0.0.0/24"), Neg: true}, false},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00::/8")}, false},
	} {
		if got, err := Match(c.m, p); err != nil || got != c.want {
			t.Errorf("%s on %+v: got %v, %v; want %v", c.m, p, got, err, c.want)
		}
	}
}

// TestAddressFamily: an address match holds only for packets of its
// prefix's family (the nfproto check Encode puts before the load), negated
// or not, and compares addresses within the family.
func TestAddressFamily(t *testing.T) {
	v4 := Packet{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1")}
	v6 := Packet{Src: netip.MustParseAddr("fd00:99::2"), Dst: netip.MustParseAddr("fd00:99::1")}
	for _, c := range []struct {
		m    model.Match
		p    Packet
		want bool
	}{
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:99::/64")}, v6, true},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:98::/64")}, v6, false},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:98::/64"), Neg: true}, v6, true},
		{model.Match{Kind: model.MatchDAddr, Prefix: netip.MustParsePrefix("fd00:99::1/128")}, v6, true},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:99::/64"), Neg: true}, v4, false},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("0.0.0.0/0")}, v6, false},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("10.0.0.0/24")}, v4, true},
	} {
		if got, err := Match(c.m, c.p); err != nil || got != c.want {
			t.Errorf("%s on %v: got %v, %v; want %v", c.m, c.p.Src, got, err, c.want)
		}
	}
}
