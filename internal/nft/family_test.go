package nft

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// TestIPv6Match: an IPv6 prefix in an address match renders with nft's
// ip6 keyword, encodes as a load of the IPv6 header's address (offset 8
// or 24, 16 bytes) behind an nfproto ipv6 check, and decodes back to the
// same rule; the IPv4 rendering and encoding stay as they were.
func TestIPv6Match(t *testing.T) {
	for _, c := range []struct {
		m       model.Match
		text    string
		off     uint32
		len     uint32
		nfproto byte
		masked  bool
	}{
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:99::/64")}, "ip6 saddr fd00:99::/64", 8, 16, unix.NFPROTO_IPV6, true},
		{model.Match{Kind: model.MatchDAddr, Neg: true, Prefix: netip.MustParsePrefix("fd00:99::1/128")}, "ip6 daddr != fd00:99::1", 24, 16, unix.NFPROTO_IPV6, false},
		{model.Match{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("10.99.0.0/24")}, "ip saddr 10.99.0.0/24", 12, 4, unix.NFPROTO_IPV4, true},
		{model.Match{Kind: model.MatchDAddr, Prefix: netip.MustParsePrefix("10.99.0.1/32")}, "ip daddr 10.99.0.1", 16, 4, unix.NFPROTO_IPV4, false},
	} {
		if got := c.m.String(); got != c.text {
			t.Errorf("%+v renders as %q, want %q", c.m, got, c.text)
		}
		r := model.Rule{Network: "n1", Match: []model.Match{{Kind: model.MatchIIF, Name: "gn-n1"}, c.m}, Verdict: model.Accept}
		exprs, err := Encode(r, true)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		// iifname (2 expressions), then nfproto meta and cmp, then the load.
		if cmp, ok := exprs[3].(*expr.Cmp); !ok || len(cmp.Data) != 1 || cmp.Data[0] != c.nfproto {
			t.Errorf("%s: nfproto check %#v, want %d", r, exprs[3], c.nfproto)
		}
		if p, ok := exprs[4].(*expr.Payload); !ok || p.Base != expr.PayloadBaseNetworkHeader || p.Offset != c.off || p.Len != c.len {
			t.Errorf("%s: load %#v, want network header offset %d length %d", r, exprs[4], c.off, c.len)
		}
		if _, ok := exprs[5].(*expr.Bitwise); ok != c.masked {
			t.Errorf("%s: masked %v, want %v", r, ok, c.masked)
		}
		got, ok := Decode(exprs, r.Network)
		if !ok || got.String() != r.String() || got.Match[1].Prefix != c.m.Prefix {
			t.Errorf("%s decodes to %s (ok %v)", r, got, ok)
		}
	}
	// table ip filter (DOCKER-USER) has no IPv6 header to match.
	r := model.Rule{Network: "n1", Match: []model.Match{{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:99::/64")}}, Verdict: model.Accept}
	if exprs, err := Encode(r, false); err == nil {
		t.Errorf("%s encoded for table ip filter: %v", r, exprs)
	}
	// An IPv6-sized load after an nfproto ipv4 check is not guestnet's.
	exprs, _ := Encode(model.Rule{Network: "n1", Match: []model.Match{{Kind: model.MatchSAddr, Prefix: netip.MustParsePrefix("fd00:99::/64")}}, Verdict: model.Accept}, true)
	exprs[1].(*expr.Cmp).Data = []byte{unix.NFPROTO_IPV4}
	if got, ok := Decode(exprs, "n1"); ok {
		t.Errorf("an IPv6 load behind an IPv4 check decoded as %s", got)
	}
}
