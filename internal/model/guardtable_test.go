package model

import (
	"net/netip"
	"testing"
)

// TestGuardRuleText: a rule prints its ether type and transport protocol
// checks only where no later field implies them, as nft lists rules, and
// an address is printed in its family.
func TestGuardRuleText(t *testing.T) {
	ether := func(p string) Term { return Term{Op: OpEtherType, Proto: p} }
	udp := Term{Op: OpL4, Proto: "udp"}
	dport := Term{Op: OpEq, Field: FieldUDPDport, Value: []byte{0, 67}}
	for _, c := range []struct {
		r    GuardRule
		want string
	}{
		{GuardRule{[]Term{ether("ip"), udp, dport}, GuardVerdict{Kind: "accept"}}, "ether type ip udp dport 67 accept"},
		{GuardRule{[]Term{ether("ip"), udp, dport, {Op: OpFlag, Field: FieldFragOff, Value: []byte{0x20, 0}}}, GuardVerdict{"goto", "spoofed"}}, "udp dport 67 ip frag-off & 8192 != 0 goto spoofed"},
		{GuardRule{[]Term{ether("ip6"), udp}, GuardVerdict{Kind: "drop"}}, "ether type ip6 meta l4proto udp drop"},
		// meta protocol, as the kernel's listing shows it: printed before
		// udp dport, left out where ip frag-off implies it.
		{GuardRule{[]Term{{Op: OpProtocol, Proto: "ip"}, udp, dport}, GuardVerdict{Kind: "accept"}}, "meta protocol ip udp dport 67 accept"},
		{GuardRule{[]Term{{Op: OpProtocol, Proto: "ip"}, udp, dport, {Op: OpFlag, Field: FieldFragOff, Value: []byte{0x20, 0}}}, GuardVerdict{"goto", "spoofed"}}, "udp dport 67 ip frag-off & 8192 != 0 goto spoofed"},
		{GuardRule{[]Term{ether("ip6"), {Op: OpEq, Field: FieldSrc(IPv6), Value: netip.MustParseAddr("fd00::1").AsSlice()}}, GuardVerdict{Kind: "accept"}}, "ip6 saddr fd00::1 accept"},
		{GuardRule{[]Term{ether("arp"), {Op: OpARPHeader}, {Op: OpLookup, Set: "s", Neg: true, Key: []Field{FieldIIF, FieldARPSrcIP}}}, GuardVerdict{}}, "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . arp saddr ip != @s"},
		{GuardRule{[]Term{{Op: OpUpdate, Set: "d", Key: []Field{FieldIIF, FieldChaddr}}}, GuardVerdict{}}, "update @d { iifname . @th,288,48 counter }"},
	} {
		if got := c.r.String(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}
