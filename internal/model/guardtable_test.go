package model

import (
	"net/netip"
	"testing"
	"time"
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
		// A not-equal compare of the ether type prints its name, and the
		// ether type as a key part is no check to leave out.
		{GuardRule{[]Term{{Op: OpNeq, Field: FieldEtherType, Value: []byte{0x08, 0x00}}, {Op: OpNeq, Field: FieldEtherType, Value: []byte{0x08, 0x06}},
			{Op: OpUpdate, Set: "o", Key: []Field{FieldIIF, FieldEtherSrc, FieldEtherType}}}, GuardVerdict{}},
			"ether type != ip ether type != arp update @o { iifname . ether saddr . ether type counter }"},
		{GuardRule{[]Term{{Op: OpNeq, Field: FieldEtherType, Value: []byte{0x81, 0x00}}, {Op: OpNeq, Field: FieldEtherType, Value: []byte{0x88, 0xcc}}}, GuardVerdict{Kind: "drop"}},
			"ether type != 8021q ether type != 0x88cc drop"},
		{GuardRule{[]Term{{Op: OpNeq, Field: FieldUDPDport, Value: []byte{0, 67}}}, GuardVerdict{Kind: "accept"}}, "udp dport != 67 accept"},
	} {
		if got := c.r.String(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// TestOtherDropSummary: status's line for frames neither IPv4 nor ARP says
// what they were (IPv6, VLAN-tagged, or the bare ether type) and why a
// bound port may not send them; a MAC bound elsewhere is the reason when
// it is one.
func TestOtherDropSummary(t *testing.T) {
	for _, c := range []struct {
		x    OtherDrop
		want string
	}{
		{OtherDrop{MAC: "52:54:00:00:00:01", EtherType: "ip6", Packets: 12, Ago: 3 * time.Second},
			"12 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:01 (last 3s ago): a bound port may send only IPv4, IPv6 and ARP"},
		{OtherDrop{MAC: "52:54:00:00:00:01", EtherType: "8021q", Packets: 1},
			"1 VLAN-tagged frame (ether type 8021q) from MAC 52:54:00:00:00:01 (last 0s ago): a bound port may send only untagged IPv4 and ARP (the tag hides what the frame carries)"},
		{OtherDrop{MAC: "52:54:00:00:00:01", EtherType: "0x88cc", Packets: 2},
			"2 frames of ether type 0x88cc from MAC 52:54:00:00:00:01 (last 0s ago): a bound port may send only IPv4, IPv6 and ARP"},
		{OtherDrop{MAC: "52:54:00:00:00:01", EtherType: "ip6", Packets: 2, MACBoundTo: []string{"vga"}},
			"2 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:01 (last 0s ago): the MAC is bound to port vga"},
	} {
		if got := c.x.Summary(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
	if got := EtherTypeName(0x86dd) + " " + EtherTypeName(0x88a8) + " " + EtherTypeName(0x0042); got != "ip6 8021ad 0x0042" {
		t.Errorf("ether type names: %s", got)
	}
}
