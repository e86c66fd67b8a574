package nft

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// TestGuardKeys: every kind of binding survives the trip through the set
// element bytes, and elements guestnet would not write are refused.
func TestGuardKeys(t *testing.T) {
	for _, b := range []model.Bind{
		{Port: "tap0", MAC: "52:54:00:12:34:56", IP: netip.MustParseAddr("10.99.0.20")},
		{Port: "vnet12", MAC: "52:54:00:12:34:56", IP: netip.IPv4Unspecified()},
		{Port: "tap0", IP: netip.MustParseAddr("10.99.0.20")}, // any MAC
		{Port: "a-fifteen-bytes", MAC: "02:00:00:00:00:01"},   // any address
		{Port: "tap0", MAC: "52:54:00:12:34:56", IP: netip.MustParseAddr("fd00:99::20")},
		{Port: "tap0", IP: netip.MustParseAddr("fd00:99::20")},
	} {
		start, end := GuardKey(b)
		// name 16, MAC 8, then the address in its own family's width.
		if want := 24 + b.IP.BitLen()/8 + 4*btoi(!b.IP.IsValid()); len(start) != want || len(end) != want {
			t.Errorf("%v: key of %d bytes, want %d", b, len(start), want)
		}
		got, ok := DecodeGuardKey(start, end)
		if !ok || got != b {
			t.Errorf("%v: decoded %v (ok=%v)", b, got, ok)
		}
		if b.MAC != "" && b.IP.IsValid() {
			if got, ok := DecodeGuardKey(start, nil); !ok || got != b {
				t.Errorf("%v as an exact element: decoded %v (ok=%v)", b, got, ok)
			}
		}
	}
	start, end := GuardKey(model.Bind{Port: "tap0", IP: netip.MustParseAddr("10.99.0.20")})
	end[17] = 0x10 // a MAC range that is not "any"
	if b, ok := DecodeGuardKey(start, end); ok {
		t.Errorf("a partial MAC range decoded as %v", b)
	}
	if _, ok := DecodeGuardKey(start[:20], nil); ok {
		t.Error("a short key decoded")
	}
	v6, _ := GuardKey(model.Bind{Port: "tap0", IP: netip.MustParseAddr("fd00:99::20")})
	if _, ok := DecodeGuardKey(v6, start); ok {
		t.Error("an IPv6 start with an IPv4 end decoded")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestGuardRulesFromOneSource: the printed rules and the encoded ones
// come from the same description, rule for rule; no two encoded rules are
// alike (SameGuardRule tells them apart), and no two print alike.
func TestGuardRulesFromOneSource(t *testing.T) {
	exprs, text := GuardChains(), model.GuardRules()
	for _, c := range model.GuardTableOf(model.GuardFamily).Chains {
		if len(exprs[c.Name]) != len(c.Rules) || len(text[c.Name]) != len(c.Rules) {
			t.Errorf("chain %s: %d rules described, %d encoded, %d printed", c.Name, len(c.Rules), len(exprs[c.Name]), len(text[c.Name]))
		}
		for i, r := range exprs[c.Name] {
			for j := range i {
				if SameGuardRule(r, exprs[c.Name][j]) || text[c.Name][i] == text[c.Name][j] {
					t.Errorf("chain %s rules %d and %d are the same: %s", c.Name, j, i, text[c.Name][i])
				}
			}
		}
	}
}

// TestGuardKeyRegisters: a rule's key is loaded into consecutive 32-bit
// registers (name at 8, MAC at 12, address at 14), numbered as the kernel
// lists them, and its address load is the family's: an IPv6 source is 16
// bytes at offset 8 of the network header, behind an ether type ip6 check,
// printed as ip6 saddr.
func TestGuardKeyRegisters(t *testing.T) {
	for _, c := range []struct {
		fam       model.Family
		text      string
		ethertype []byte
		off, len  uint32
	}{
		{model.IPv4, "iifname . ether saddr . ip saddr @bound accept", []byte{0x08, 0x00}, 12, 4},
		{model.IPv6, "iifname . ether saddr . ip6 saddr @bound accept", []byte{0x86, 0xdd}, 8, 16},
	} {
		chain, _ := model.GuardTableOf(c.fam).Chain("check")
		var rule model.GuardRule
		for _, r := range chain.Rules {
			if r.String() == c.text {
				rule = r
			}
		}
		if rule.Terms == nil {
			t.Fatalf("%s: no rule %q in chain check", c.fam, c.text)
		}
		want := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: c.ethertype},
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Payload{DestRegister: 14, Base: expr.PayloadBaseNetworkHeader, Offset: c.off, Len: c.len},
			&expr.Lookup{SourceRegister: 1, SetName: model.GuardBound},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
		if got := EncodeGuardRule(rule); !SameGuardRule(got, want) {
			t.Errorf("%s: %s encodes as\n%s\nwant\n%s", c.fam, c.text, dump(got), dump(want))
		}
		set, _ := model.GuardTableOf(c.fam).Set(model.GuardBound)
		if got := set.Key[2]; got != c.fam.AddrType() {
			t.Errorf("%s: set bound keys addresses as %s", c.fam, got)
		}
	}
}

func dump(xs []expr.Any) string {
	var b strings.Builder
	for _, x := range xs {
		b.WriteString(normal(x) + "\n")
	}
	return b.String()
}

// TestOwnerKeys: the elements of sets macs and port_macs survive the trip
// through their bytes, and ones guestnet would not write are refused.
func TestOwnerKeys(t *testing.T) {
	p := model.PortMAC{Port: "a-fifteen-bytes", MAC: "52:54:00:12:34:56"}
	k, err := PortMACKey(p)
	if err != nil || len(k) != 24 {
		t.Fatalf("PortMACKey(%v) = %x, %v", p, k, err)
	}
	if got, ok := DecodePortMACKey(k); !ok || got != p {
		t.Errorf("decoded %v (ok=%v), want %v", got, ok, p)
	}
	m, err := MACKey(p.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := DecodeMACKey(m); !ok || got != p.MAC {
		t.Errorf("decoded MAC %q (ok=%v)", got, ok)
	}
	k[23] = 1 // padding guestnet never sets
	if _, ok := DecodePortMACKey(k); ok {
		t.Error("a key with non-zero padding decoded")
	}
	for _, bad := range []string{"", "52:54:00:12:34", "00:00:00:00:fe:80:00:00"} {
		if _, err := MACKey(bad); err == nil {
			t.Errorf("MACKey(%q) made a key", bad)
		}
	}
}

// TestOtherKeys: an element of set dropped_other, laid out as the kernel
// fills it from iifname . ether saddr . ether type, reads back with the
// ether type's nft name (or its number), and one with padding the rule
// never sets is refused.
func TestOtherKeys(t *testing.T) {
	key := func(port string, mac []byte, et uint16) []byte {
		return append(append(append(ifname(port), mac...), 0, 0), byte(et>>8), byte(et), 0, 0)
	}
	mac := []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	for et, want := range map[uint16]string{0x86dd: "ip6", 0x8100: "8021q", 0x88a8: "8021ad", 0x88cc: "0x88cc"} {
		got, ok := DecodeOtherKey(key("vnet12", mac, et))
		if w := (model.OtherDrop{Port: "vnet12", MAC: "52:54:00:12:34:56", EtherType: want}); !ok || got.Port != w.Port || got.MAC != w.MAC || got.EtherType != w.EtherType {
			t.Errorf("ether type %#04x: decoded %+v (ok=%v), want %+v", et, got, ok, w)
		}
	}
	k := key("tap0", mac, 0x86dd)
	k[27] = 1
	if x, ok := DecodeOtherKey(k); ok {
		t.Errorf("a key with non-zero padding decoded as %+v", x)
	}
	if x, ok := DecodeOtherKey(k[:24]); ok {
		t.Errorf("a short key decoded as %+v", x)
	}
}

// TestOtherDropRule: chain spoofed records a frame that is neither IPv4,
// IPv6 nor ARP by port, MAC and ether type, as nft itself encodes
// `ether type != ip ether type != arp ether type != ip6 update @dropped_other { iifname .
// ether saddr . ether type counter }` (nft --debug=netlink): two not-equal
// compares, then the key in registers 1, 2 and 14, the ether type loaded
// again as a key part.
func TestOtherDropRule(t *testing.T) {
	chain, _ := model.GuardTableOf(model.GuardFamily).Chain("spoofed")
	const text = "ether type != ip ether type != arp ether type != ip6 update @dropped_other { iifname . ether saddr . ether type counter }"
	var rule model.GuardRule
	for _, r := range chain.Rules {
		if r.String() == text {
			rule = r
		}
	}
	if rule.Terms == nil {
		t.Fatalf("no rule %q in chain spoofed: %q", text, model.GuardRules()["spoofed"])
	}
	want := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x00}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x06}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x86, 0xdd}},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Payload{DestRegister: 14, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Dynset{SrcRegKey: 1, SetName: model.GuardDroppedOther, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}},
	}
	if got := EncodeGuardRule(rule); !SameGuardRule(got, want) {
		t.Errorf("encodes as\n%s\nwant\n%s", dump(got), dump(want))
	}
	if n := len(chain.Rules); chain.Rules[n-1].String() != "counter packets 0 bytes 0 drop" || chain.Rules[n-2].String() != text {
		t.Errorf("the record of other frames is not the last rule before the counted drop: %q", model.GuardRules()["spoofed"])
	}
}
