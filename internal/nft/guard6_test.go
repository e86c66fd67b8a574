package nft

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
)

// TestGuard6Keys: the elements of the IPv6 sets survive the trip through
// their bytes, and ones guestnet would not write are refused.
func TestGuard6Keys(t *testing.T) {
	for _, p := range []model.PortPrefix{
		{Port: "vnet12", Prefix: netip.MustParsePrefix("fd42:99::/64")},
		{Port: "a-fifteen-bytes", Prefix: netip.MustParsePrefix("fe80::/10")},
		{Port: "tap0", Prefix: netip.MustParsePrefix("2001:db8:71::/48")},
	} {
		s, e := PrefixKey(p)
		if got, ok := DecodePrefixKey(s, e); !ok || got != p {
			t.Errorf("%v: decoded %v (ok=%v)", p, got, ok)
		}
	}
	s, e := PrefixKey(model.PortPrefix{Port: "tap0", Prefix: netip.MustParsePrefix("fd42:99::/64")})
	e[31] = 0xfe // a range that is no prefix
	if got, ok := DecodePrefixKey(s, e); ok {
		t.Errorf("a range decoded as %v", got)
	}
	c := model.Claim6{Port: "vnet3", IP: netip.MustParseAddr("fe80::1")}
	if got, ok := DecodeClaimKey(ClaimKey(c.Port, c.IP)); !ok || got != c {
		t.Errorf("claim decoded %v (ok=%v)", got, ok)
	}
	if got, ok := DecodeAddrKey(AddrKey(c.IP)); !ok || got != c.IP {
		t.Errorf("address decoded %v (ok=%v)", got, ok)
	}
	// router6: name 16, MAC 8, address 16, protocol 4, as the kernel fills
	// it from iifname . ether saddr . ip6 saddr . meta l4proto.
	k := append(append(append(ifname("vgr"), 2, 0, 0, 0, 0, 0x0e, 0, 0), netip.MustParseAddr("fe80::e").AsSlice()...), 58, 0, 0, 0)
	x, ok := DecodeRouter6Key(k)
	if !ok || x.Kind != model.Drop6Router || x.Port != "vgr" || x.MAC != "02:00:00:00:00:0e" || x.IP != netip.MustParseAddr("fe80::e") {
		t.Errorf("router6 key decoded %+v (ok=%v)", x, ok)
	}
	k[40] = 17
	if x, _ := DecodeRouter6Key(k); x.Kind != model.Drop6DHCP {
		t.Errorf("a UDP router6 key decoded as %+v", x)
	}
	k[40] = 6
	if x, ok := DecodeRouter6Key(k); ok {
		t.Errorf("a TCP router6 key decoded as %+v", x)
	}
}

// TestGuard6Encoding: a link-local test and the RA guard's record encode
// as nft itself encodes `meta protocol ip6 ip6 saddr fe80::/10` (nft
// --debug=netlink: the whole address masked, compared) and a key ending in
// meta l4proto (a meta load into the key's last register).
func TestGuard6Encoding(t *testing.T) {
	ll := model.GuardRule{Terms: []model.Term{{Op: model.OpProtocol, Proto: "ip6"},
		{Op: model.OpPrefix, Field: model.FieldSrc(model.IPv6), Value: model.LinkLocal.Addr().AsSlice(), Bits: 10}}, Verdict: model.GuardVerdict{Kind: "accept"}}
	if s := ll.String(); s != "ip6 saddr fe80::/10 accept" {
		t.Errorf("printed %q", s)
	}
	mask := make([]byte, 16)
	mask[0], mask[1] = 0xff, 0xc0
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x86, 0xdd}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: model.LinkLocal.Addr().AsSlice()},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	if got := EncodeGuardRule(ll); !SameGuardRule(got, want) {
		t.Errorf("encodes as\n%s\nwant\n%s", dump(got), dump(want))
	}
	own6, _ := model.GuardTableOf(model.GuardFamily).Chain("own6")
	got := EncodeGuardRule(own6.Rules[0])
	var key []string
	for _, e := range got {
		switch x := e.(type) {
		case *expr.Meta:
			key = append(key, normal(x))
		case *expr.Payload:
			key = append(key, normal(x))
		}
	}
	// protocol, l4proto, icmpv6 type; then the key: name at 8 (as 1), MAC
	// at 12 (as 2), address at 14, protocol at 18.
	wantKey := []string{"meta 1 1 false", "meta 16 1 false", "payload 1 2 0 1", "meta 6 1 false", "payload 2 0 6 6", "payload 14 1 8 16", "meta 16 18 false"}
	if len(key) != len(wantKey) {
		t.Fatalf("loads %q, want %q", key, wantKey)
	}
	for i := range key {
		if key[i] != wantKey[i] {
			t.Errorf("load %d: %s, want %s", i, key[i], wantKey[i])
		}
	}
}
