package model

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The guard table is described once, as data: its sets, its chains and
// the terms of each rule. Guard.String renders the description as nft
// lists it, nft.GuardChains encodes the same description as expressions,
// and apply and observe make and check the sets it declares; none of them
// holds a rule of its own, so the text and the expressions cannot drift.

// GuardFamily is the address family of the keys of the guard table's
// ARP and IPv4 sets (bound, learned, dropped). IPv6 has sets and chains of
// its own in the same table (guard6.go), whatever GuardFamily is.
const GuardFamily = IPv4

// Header is the part of a frame a field is read from.
type Header uint8

const (
	HeaderMeta      Header = iota // a meta key (the input interface)
	HeaderLink                    // the Ethernet header
	HeaderNetwork                 // the ARP, IPv4 or IPv6 header
	HeaderTransport               // the UDP header and beyond
)

// Field is a value a guard rule reads: a meta key or Len bytes at Offset
// of a header.
type Field struct {
	Text   string // as nft prints it
	Header Header
	Offset uint32
	Len    uint32
	// Type is the set key type of the value: ifname, ether_addr,
	// ipv4_addr, ipv6_addr ("" for fields no set holds).
	Type string
	// Proto is the ether type ("ip", "ip6", "arp") a load of the field
	// implies; nft leaves a rule's check of that ether type unprinted.
	Proto string
	// L4 is the transport protocol ("udp") the field implies; nft leaves
	// the rule's meta l4proto check unprinted.
	L4 string
}

// The guard table's fields.
var (
	FieldIIF      = Field{Text: "iifname", Header: HeaderMeta, Len: 16, Type: "ifname"}
	FieldOIF      = Field{Text: "oifname", Header: HeaderMeta, Len: 16, Type: "ifname"}
	FieldEtherSrc = Field{Text: "ether saddr", Header: HeaderLink, Offset: 6, Len: 6, Type: "ether_addr"}
	// FieldEtherType is the Ethernet header's type: a VLAN-tagged frame's
	// shows the tag's (8021q), not the protocol behind it.
	FieldEtherType = Field{Text: "ether type", Header: HeaderLink, Offset: 12, Len: 2, Type: "ether_type"}
	// The sender fields of an ARP packet for Ethernet and IPv4.
	FieldARPSrcMAC = Field{Text: "arp saddr ether", Header: HeaderNetwork, Offset: 8, Len: 6, Type: "ether_addr", Proto: "arp"}
	FieldARPSrcIP  = Field{Text: "arp saddr ip", Header: HeaderNetwork, Offset: 14, Len: 4, Type: IPv4.AddrType(), Proto: "arp"}
	// FieldARPDstIP is an ARP packet's target address.
	FieldARPDstIP = Field{Text: "arp daddr ip", Header: HeaderNetwork, Offset: 24, Len: 4, Type: IPv4.AddrType(), Proto: "arp"}
	FieldFragOff  = Field{Text: "ip frag-off", Header: HeaderNetwork, Offset: 6, Len: 2, Proto: string(IPv4)}
	FieldUDPSport = Field{Text: "udp sport", Header: HeaderTransport, Offset: 0, Len: 2, L4: "udp"}
	FieldUDPDport = Field{Text: "udp dport", Header: HeaderTransport, Offset: 2, Len: 2, L4: "udp"}
	// FieldChaddr is a BOOTP message's client MAC: 36 bytes into the UDP
	// header (8 of UDP, 28 of op..giaddr), as a raw payload match.
	FieldChaddr = RawTransport(8+28, 6, "ether_addr")
	// FieldL4Proto is the transport protocol, behind any IPv6 extension
	// headers, as a key part.
	FieldL4Proto   = Field{Text: "meta l4proto", Header: HeaderMeta, Len: 1, Type: "inet_proto"}
	FieldICMP6Type = Field{Text: "icmpv6 type", Header: HeaderTransport, Offset: 0, Len: 1, Type: "icmpv6_type", Proto: string(IPv6), L4: "ipv6-icmp"}
	// FieldNDTarget is the target address of a neighbour solicitation or
	// advertisement: 8 bytes into the ICMPv6 header.
	FieldNDTarget = RawTransport(8, 16, IPv6.AddrType())
)

// The ICMPv6 types the guard tells apart, by nft's names.
var ICMP6Types = map[string]byte{
	"mld-listener-report": 131, "nd-router-solicit": 133, "nd-router-advert": 134,
	"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137, "mld2-listener-report": 143,
}

// FieldSrc is the source address of the family's network header.
func FieldSrc(f Family) Field {
	return Field{Text: string(f) + " saddr", Header: HeaderNetwork, Offset: f.SrcOffset(), Len: uint32(f.Len()), Type: f.AddrType(), Proto: string(f)}
}

// RawTransport is a raw payload field, n bytes at off of the transport
// header (nft's @th,BITS,BITS).
func RawTransport(off, n uint32, typ string) Field {
	return Field{Text: fmt.Sprintf("@th,%d,%d", off*8, n*8), Header: HeaderTransport, Offset: off, Len: n, Type: typ}
}

// TermOp is what a term of a guard rule does.
type TermOp uint8

const (
	OpEtherType TermOp = iota // ether type is Proto
	OpProtocol                // meta protocol is Proto: the frame's protocol, behind any VLAN tag
	OpARPHeader               // htype Ethernet, ptype IPv4, hlen 6, plen 4
	OpL4                      // meta l4proto is Proto
	OpEq                      // Field == Value
	OpNeq                     // Field != Value
	OpFlag                    // Field & Value != 0
	OpLookup                  // Key (a concatenation) is (Neg: is not) in Set
	OpUpdate                  // add Key to Set, or refresh it, with a counter unless Bare
	OpCounter                 // count
	OpPrefix                  // Field is (Neg: is not) in the prefix Value/Bits
)

// Term is one step of a guard rule.
type Term struct {
	Op    TermOp
	Proto string  // OpEtherType, OpProtocol: ip, ip6, arp; OpL4: udp
	Field Field   // OpEq, OpNeq, OpFlag
	Value []byte  // OpEq, OpNeq: the value; OpFlag: the mask (big endian)
	Key   []Field // OpLookup, OpUpdate: the fields concatenated
	Set   string  // OpLookup, OpUpdate
	Neg   bool    // OpLookup, OpPrefix: not in the set, the prefix
	Bits  int     // OpPrefix: the prefix length
	Bare  bool    // OpUpdate: no counter in the element
}

// EtherTypes are the ether types nft names: those of the protocols the
// guard checks, and the VLAN tags (802.1Q, 802.1ad) it records.
var EtherTypes = map[string]uint16{"ip": 0x0800, "ip6": 0x86dd, "arp": 0x0806, "8021q": 0x8100, "8021ad": 0x88a8}

// EtherTypeName names an ether type as nft prints it: "ip6", "8021q", or
// the number ("0x88cc") for one nft has no name for.
func EtherTypeName(t uint16) string {
	for name, v := range EtherTypes {
		if v == t {
			return name
		}
	}
	return fmt.Sprintf("0x%04x", t)
}

// L4Protos are the IP protocol numbers of the transport protocols.
var L4Protos = map[string]byte{"tcp": 6, "udp": 17, "ipv6-icmp": 58}

// ARPHeader is the start of an ARP packet for Ethernet and IPv4: htype 1,
// ptype 0x0800, hlen 6, plen 4 (the layout whose sender fields are
// FieldARPSrcMAC and FieldARPSrcIP).
var ARPHeader = []byte{0, 1, 8, 0, 6, 4}

// GuardVerdict is what a guard rule does to a frame that matches it; an
// empty Kind is none (the rule goes on to the next).
type GuardVerdict struct {
	Kind  string // "accept", "drop", "goto", "jump"
	Chain string // of goto and jump
}

func (v GuardVerdict) String() string {
	if v.Chain != "" {
		return v.Kind + " " + v.Chain
	}
	return v.Kind
}

// GuardRule is one rule: its terms in order, then its verdict.
type GuardRule struct {
	Terms   []Term
	Verdict GuardVerdict
}

// GuardChain is one chain of the table; Hook is "" for a regular chain.
type GuardChain struct {
	Name  string
	Hook  string // "prerouting": type filter, priority filter, policy accept
	Rules []GuardRule
}

// GuardSet declares one set.
type GuardSet struct {
	Name     string
	Key      []string // key types, concatenated
	Interval bool
	Size     int
	Timeout  time.Duration // with the dynamic flag: an element lives this long
}

// GuardTable is the whole table: sets, then chains in the order they are
// made (a chain before the chains that go to it).
type GuardTable struct {
	Sets   []GuardSet
	Chains []GuardChain
}

// GuardTableOf describes the guard table whose keys hold addresses of
// family f: the sets' address type and the source address its rules look
// up and record follow f. guestnet makes the IPv4 one (GuardFamily); its
// ARP rules (whose sender address is IPv4) and DHCPv4 rules are IPv4's
// whatever f. The IPv6 sets and chains (first-come claims, RA guard,
// neighbour advertisements: guard6) are part of every description, and
// prerouting sends every IPv6 frame of a guest port to them (chain check6)
// before bound ports go to chain check.
//
// Base chain prerouting sees every frame a bridge port receives, before
// the bridge learns its source MAC: a frame whose source MAC is bound to
// a port is dropped unless it comes from that port (so a stolen MAC never
// moves the bridge's forwarding database), and so is a DHCP message whose
// client MAC (BOOTP chaddr, 36 bytes into the UDP header) is bound to a
// port and that comes from another: no guest can ask for, renew, release
// or decline a neighbour's lease. A first fragment bound for the DHCP
// server is dropped too, since its chaddr could sit in a later fragment.
// Frames of bound ports then go to chain check, which accepts ARP and IPv4
// only from a bound port . MAC . address, and DHCP requests from any MAC on
// a port bound only by leases (a MAC bound elsewhere never gets there).
// Chain spoofed counts and drops, remembering the source of each dropped
// ARP and IPv4 frame in set dropped, of each IPv6 one in set dropped6, and
// the port . MAC . ether type of any other (VLAN-tagged, ...) in set
// dropped_other.
func GuardTableOf(f Family) GuardTable {
	src := FieldSrc(f)
	bind := []string{"ifname", "ether_addr", f.AddrType()}
	owner := []string{"ifname", "ether_addr"}
	ether := func(p string) Term { return Term{Op: OpEtherType, Proto: p} }
	arp := []Term{ether("arp"), {Op: OpARPHeader}}
	lookup := func(set string, neg bool, key ...Field) Term {
		return Term{Op: OpLookup, Set: set, Neg: neg, Key: key}
	}
	toSpoofed := GuardVerdict{"goto", "spoofed"}
	accept := GuardVerdict{Kind: "accept"}
	// toServer matches UDP to port 67: what a DHCP client sends (DHCPv4
	// is IPv4 whatever the family of the keys).
	// It tests the frame's protocol (meta protocol), not the Ethernet
	// header's type: a frame with an 802.1Q tag (VLAN 0 too, which the
	// host strips and so reads as its own) shows nft the tag's type there,
	// and would slip past an ether type test with a neighbour's chaddr.
	toServer := []Term{{Op: OpProtocol, Proto: string(IPv4)}, {Op: OpL4, Proto: "udp"}, {Op: OpEq, Field: FieldUDPDport, Value: port(67)}}
	// owned sends a frame to chain spoofed when the MAC in field mac is in
	// set macs (bound to some port) and iifname . MAC is not in set ports
	// (not bound to this one).
	owned := func(match []Term, macs, ports string, mac Field) GuardRule {
		return GuardRule{append(clone(match), lookup(macs, false, mac), lookup(ports, true, FieldIIF, mac)), toSpoofed}
	}
	// ARP from a bound port . MAC . address, whose sender MAC is the
	// frame's.
	arpFrom := func(set string) GuardRule {
		return GuardRule{append(clone(arp),
			lookup(set, false, FieldIIF, FieldEtherSrc, FieldARPSrcIP),
			lookup(set, false, FieldIIF, FieldARPSrcMAC, FieldARPSrcIP)), accept}
	}
	ipFrom := func(set string) GuardRule {
		return GuardRule{[]Term{ether(string(f)), lookup(set, false, FieldIIF, FieldEtherSrc, src)}, accept}
	}
	record := func(match []Term, addr Field) GuardRule {
		return GuardRule{Terms: append(clone(match), Term{Op: OpUpdate, Set: GuardDropped, Key: []Field{FieldIIF, FieldEtherSrc, addr}})}
	}
	// recordOther remembers a frame of any other ether type (IPv6, a VLAN
	// tag, ...) by its port, MAC and ether type.
	not := func(p string) Term {
		return Term{Op: OpNeq, Field: FieldEtherType, Value: binary.BigEndian.AppendUint16(nil, EtherTypes[p])}
	}
	recordOther := GuardRule{Terms: []Term{not(string(IPv4)), not("arp"), not(string(IPv6)),
		{Op: OpUpdate, Set: GuardDroppedOther, Key: []Field{FieldIIF, FieldEtherSrc, FieldEtherType}}}}
	// rarp accepts a RARP frame whose source MAC is bound to its port.
	rarp := func(set string) GuardRule {
		return GuardRule{[]Term{{Op: OpEq, Field: FieldEtherType, Value: port(EtherTypeRARP)}, lookup(set, false, FieldIIF, FieldEtherSrc)}, accept}
	}
	sets6, chains6, dispatch6, record6 := guard6()
	setsX, chainsX, dispatchX, postX := guardVXLAN()
	t := GuardTable{
		Sets: []GuardSet{
			{Name: GuardPorts, Key: []string{"ifname"}},
			{Name: GuardBound, Key: bind, Interval: true}, // only declared bindings hold ranges (any MAC, any address)
			{Name: GuardMACs, Key: []string{"ether_addr"}},
			{Name: GuardPortMACs, Key: owner},
			{Name: GuardLearnedPorts, Key: []string{"ifname"}},
			{Name: GuardLearned, Key: bind},
			{Name: GuardLearnedMACs, Key: []string{"ether_addr"}},
			{Name: GuardLearnedPortMACs, Key: owner},
			{Name: GuardDropped, Key: bind, Size: DropEntries, Timeout: DropMemory},
			{Name: GuardDroppedOther, Key: []string{"ifname", "ether_addr", "ether_type"}, Size: DropEntries, Timeout: DropMemory},
		},
		Chains: []GuardChain{
			{Name: "spoofed", Rules: []GuardRule{
				record([]Term{ether(string(f))}, src),
				record(arp, FieldARPSrcIP),
				record6,
				recordOther,
				{[]Term{{Op: OpCounter}}, GuardVerdict{Kind: "drop"}},
			}},
			{Name: "check", Rules: []GuardRule{
				arpFrom(GuardBound), arpFrom(GuardLearned),
				ipFrom(GuardBound), ipFrom(GuardLearned),
				// A port bound only by leases lets any MAC ask for a lease
				// (a guest that changed its MAC, nested guests); what it
				// gets is bound in turn.
				{[]Term{
					lookup(GuardLearnedPorts, false, FieldIIF), ether(string(IPv4)),
					{Op: OpEq, Field: FieldSrc(IPv4), Value: IPv4.Unspecified().AsSlice()},
					{Op: OpL4, Proto: "udp"},
					{Op: OpEq, Field: FieldUDPSport, Value: port(68)},
					{Op: OpEq, Field: FieldUDPDport, Value: port(67)},
				}, accept},
				// QEMU's announce after a live migration (RARP) from the
				// port's own MAC: the bridge learns where the guest is now.
				rarp(GuardPortMACs), rarp(GuardLearnedPortMACs),
				// IPv6 that reaches this chain comes from a port bound to no
				// IPv6 address outside a first-come bridge (mode bridge):
				// each family is restricted by the addresses listed of it.
				{[]Term{ether(string(IPv6))}, accept},
				{nil, toSpoofed},
			}},
			{Name: "prerouting", Hook: "prerouting", Rules: []GuardRule{
				dispatchX,
				owned(nil, GuardMACs, GuardPortMACs, FieldEtherSrc),
				owned(nil, GuardLearnedMACs, GuardLearnedPortMACs, FieldEtherSrc),
				// The MF flag of an IPv4 header: the first fragment of a
				// datagram, the only one with the UDP header.
				{append(clone(toServer), Term{Op: OpFlag, Field: FieldFragOff, Value: []byte{0x20, 0}}), toSpoofed},
				owned(toServer, GuardMACs, GuardPortMACs, FieldChaddr),
				owned(toServer, GuardLearnedMACs, GuardLearnedPortMACs, FieldChaddr),
			}},
		},
	}
	t.Sets = append(append(t.Sets, sets6...), setsX...)
	pre := &t.Chains[len(t.Chains)-1]
	pre.Rules = append(pre.Rules, dispatch6...)
	pre.Rules = append(pre.Rules,
		GuardRule{[]Term{lookup(GuardPorts, false, FieldIIF)}, GuardVerdict{"jump", "check"}},
		GuardRule{[]Term{lookup(GuardLearnedPorts, false, FieldIIF)}, GuardVerdict{"jump", "check"}})
	// spoofed first, then the chains that go to it, then those that go to
	// them; the VXLAN chains before the base chains that go to them.
	t.Chains = slices.Concat(t.Chains[:1], chains6, t.Chains[1:2], chainsX, t.Chains[2:], []GuardChain{postX})
	return t
}

func port(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

func clone(ts []Term) []Term { return append([]Term(nil), ts...) }

// Chain returns the chain of that name.
func (t GuardTable) Chain(name string) (GuardChain, bool) {
	for _, c := range t.Chains {
		if c.Name == name {
			return c, true
		}
	}
	return GuardChain{}, false
}

// Set returns the set of that name.
func (t GuardTable) Set(name string) (GuardSet, bool) {
	for _, s := range t.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return GuardSet{}, false
}

// String renders the rule as `nft list` prints it: a check of an ether
// type or transport protocol that a later field implies is left out.
func (r GuardRule) String() string {
	implied := func(i int, proto, l4 string) bool {
		for _, t := range r.Terms[i+1:] {
			for _, f := range append([]Field{t.Field}, t.Key...) {
				if (proto != "" && f.Proto == proto) || (l4 != "" && f.L4 == l4) {
					return true
				}
			}
			if proto == "arp" && t.Op == OpARPHeader {
				return true
			}
		}
		return false
	}
	var parts []string
	for i, t := range r.Terms {
		switch t.Op {
		case OpEtherType:
			if !implied(i, t.Proto, "") {
				parts = append(parts, "ether type "+t.Proto)
			}
		case OpProtocol:
			if !implied(i, t.Proto, "") {
				parts = append(parts, "meta protocol "+t.Proto)
			}
		case OpARPHeader:
			parts = append(parts, fmt.Sprintf("arp htype %d arp ptype %s arp hlen %d arp plen %d",
				binary.BigEndian.Uint16(ARPHeader), "ip", ARPHeader[4], ARPHeader[5]))
		case OpL4:
			if !implied(i, "", t.Proto) {
				parts = append(parts, "meta l4proto "+t.Proto)
			}
		case OpEq:
			parts = append(parts, t.Field.Text+" "+fieldValue(t.Field, t.Value))
		case OpNeq:
			parts = append(parts, t.Field.Text+" != "+fieldValue(t.Field, t.Value))
		case OpFlag:
			parts = append(parts, fmt.Sprintf("%s & %s != 0", t.Field.Text, fieldValue(t.Field, t.Value)))
		case OpLookup:
			op := ""
			if t.Neg {
				op = "!= "
			}
			parts = append(parts, fmt.Sprintf("%s %s@%s", keyText(t.Key), op, t.Set))
		case OpUpdate:
			counter := " counter"
			if t.Bare {
				counter = ""
			}
			parts = append(parts, fmt.Sprintf("update @%s { %s%s }", t.Set, keyText(t.Key), counter))
		case OpCounter:
			parts = append(parts, "counter packets 0 bytes 0")
		case OpPrefix:
			op := ""
			if t.Neg {
				op = "!= "
			}
			a, _ := netip.AddrFromSlice(t.Value)
			if strings.HasPrefix(t.Field.Text, "@") { // a raw field: nft prints mask and value in hex
				eq := "=="
				if t.Neg {
					eq = "!="
				}
				parts = append(parts, fmt.Sprintf("%s & 0x%x %s 0x%x", t.Field.Text, prefixMask(len(t.Value), t.Bits), eq, t.Value))
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %s%s", t.Field.Text, op, netip.PrefixFrom(a, t.Bits)))
		}
	}
	if r.Verdict.Kind != "" {
		parts = append(parts, r.Verdict.String())
	}
	return strings.Join(parts, " ")
}

func keyText(key []Field) string {
	s := make([]string, len(key))
	for i, f := range key {
		s[i] = f.Text
	}
	return strings.Join(s, " . ")
}

// fieldValue prints a value as nft does for the field: an address, an
// ether type's name, or a number.
func fieldValue(f Field, v []byte) string {
	switch f.Type {
	case IPv4.AddrType(), IPv6.AddrType():
		a, _ := netip.AddrFromSlice(v)
		return a.String()
	case "ether_type":
		return EtherTypeName(binary.BigEndian.Uint16(v))
	case "icmpv6_type":
		for name, t := range ICMP6Types {
			if len(v) == 1 && v[0] == t {
				return name
			}
		}
	}
	var n uint64
	for _, b := range v {
		n = n<<8 | uint64(b)
	}
	return fmt.Sprint(n)
}

// GuardRules are the rules of the guard table as nft prints them, chain by
// chain.
func GuardRules() map[string][]string {
	out := map[string][]string{}
	for _, c := range GuardTableOf(GuardFamily).Chains {
		out[c.Name] = []string{}
		for _, r := range c.Rules {
			out[c.Name] = append(out[c.Name], r.String())
		}
	}
	return out
}

// prefixMask is the mask of a prefix of bits in n bytes.
func prefixMask(n, bits int) []byte {
	m := make([]byte, n)
	for i := range m {
		b := max(0, min(8, bits-8*i))
		m[i] = byte(0xff << (8 - b))
	}
	return m
}

// PrefixMask is the mask of a prefix of bits in n bytes, as a bitwise
// expression takes it.
func PrefixMask(n, bits int) []byte { return prefixMask(n, bits) }
