package nft

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// The guard table's keys are ifname . ether_addr . address: 16 bytes of
// name, 6 of MAC padded to 8, then the address, whose width is its
// family's (4 bytes for IPv4, 28 in all, in registers 8 to 14; 16 for
// IPv6, 40 in all).
const guardKeyHead = 24

// GuardKeyLen is the length of a key whose address is of family f.
func GuardKeyLen(f model.Family) int { return guardKeyHead + f.Len() }

// GuardKey is a binding as an element of an interval set: a wildcard MAC
// or address spans its whole range. For an exact binding start == end.
// The address part takes its width from the binding's address; a
// wildcard address, which has no family, spans the guard table's
// (model.GuardFamily).
func GuardKey(b model.Bind) (start, end []byte) {
	fam := model.GuardFamily
	if b.IP.IsValid() {
		fam = model.FamilyOf(b.IP)
	}
	n := GuardKeyLen(fam)
	start, end = make([]byte, n), make([]byte, n)
	copy(start, b.Port)
	copy(end, b.Port)
	if mac, err := net.ParseMAC(b.MAC); err == nil && b.MAC != "" {
		copy(start[16:22], mac)
		copy(end[16:22], mac)
	} else {
		copy(end[16:22], bytes.Repeat([]byte{0xff}, 6))
	}
	if b.IP.IsValid() {
		a := b.IP.Unmap().AsSlice()
		copy(start[guardKeyHead:], a)
		copy(end[guardKeyHead:], a)
	} else {
		copy(end[guardKeyHead:], bytes.Repeat([]byte{0xff}, fam.Len()))
	}
	return start, end
}

// DecodeGuardKey reads an element back, of either family (told by its
// length); ok is false for one guestnet would not have written. end is
// nil for elements of a set without intervals.
func DecodeGuardKey(start, end []byte) (model.Bind, bool) {
	if end == nil {
		end = start
	}
	var fam model.Family
	switch len(start) {
	case GuardKeyLen(model.IPv4):
		fam = model.IPv4
	case GuardKeyLen(model.IPv6):
		fam = model.IPv6
	default:
		return model.Bind{}, false
	}
	if len(end) != len(start) || !bytes.Equal(start[:16], end[:16]) {
		return model.Bind{}, false
	}
	b := model.Bind{Port: string(bytes.TrimRight(start[:16], "\x00"))}
	switch {
	case bytes.Equal(start[16:24], end[16:24]):
		b.MAC = net.HardwareAddr(start[16:22]).String()
	case !bytes.Equal(start[16:24], make([]byte, 8)) || !bytes.Equal(end[16:22], bytes.Repeat([]byte{0xff}, 6)):
		return b, false
	}
	switch {
	case bytes.Equal(start[guardKeyHead:], end[guardKeyHead:]):
		b.IP, _ = netip.AddrFromSlice(start[guardKeyHead:])
	case !bytes.Equal(start[guardKeyHead:], make([]byte, fam.Len())) || !bytes.Equal(end[guardKeyHead:], bytes.Repeat([]byte{0xff}, fam.Len())):
		return b, false
	}
	return b, true
}

// PortKey is a port as an element of the ifname sets.
func PortKey(port string) []byte { return ifname(port) }

// MACKey is a MAC as an element of sets macs and learned_macs (6 bytes).
func MACKey(mac string) ([]byte, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("bound MAC %q is not an Ethernet address", mac)
	}
	return hw, nil
}

// PortMACKey is an element of sets port_macs and learned_port_macs:
// ifname . ether_addr, 16 bytes of name and 6 of MAC padded to 8.
func PortMACKey(p model.PortMAC) ([]byte, error) {
	hw, err := MACKey(p.MAC)
	if err != nil {
		return nil, err
	}
	return append(append(ifname(p.Port), hw...), 0, 0), nil
}

// DecodeMACKey and DecodePortMACKey read elements back; ok is false for
// one guestnet would not have written.
func DecodeMACKey(k []byte) (string, bool) {
	if len(k) != 6 {
		return "", false
	}
	return net.HardwareAddr(k).String(), true
}

func DecodePortMACKey(k []byte) (model.PortMAC, bool) {
	if len(k) != 24 || !bytes.Equal(k[22:], []byte{0, 0}) {
		return model.PortMAC{}, false
	}
	return model.PortMAC{Port: string(bytes.TrimRight(k[:16], "\x00")), MAC: net.HardwareAddr(k[16:22]).String()}, true
}

// DecodeOtherKey reads an element of set dropped_other, which the rule in
// chain spoofed makes: ifname . ether_addr . ether_type, 16 bytes of name,
// 6 of MAC padded to 8, and 2 of ether type (big endian, as the frame
// carries it) padded to 4. ok is false for one the rule would not have
// made. The key has the length of an IPv4 binding's, so only the set it
// comes from tells them apart.
func DecodeOtherKey(k []byte) (model.OtherDrop, bool) {
	if len(k) != 28 || !bytes.Equal(k[22:24], []byte{0, 0}) || !bytes.Equal(k[26:], []byte{0, 0}) {
		return model.OtherDrop{}, false
	}
	return model.OtherDrop{
		Port:      string(bytes.TrimRight(k[:16], "\x00")),
		MAC:       net.HardwareAddr(k[16:22]).String(),
		EtherType: model.EtherTypeName(uint16(k[24])<<8 | uint16(k[25])),
	}, true
}

// GuardChains are the expressions of the guard table's rules, by chain, in
// the order model.Guard.String prints them: both come from the one
// description, model.GuardTableOf.
func GuardChains() map[string][][]expr.Any {
	out := map[string][][]expr.Any{}
	for _, c := range model.GuardTableOf(model.GuardFamily).Chains {
		out[c.Name] = [][]expr.Any{}
		for _, r := range c.Rules {
			out[c.Name] = append(out[c.Name], EncodeGuardRule(r))
		}
	}
	return out
}

// EncodeGuardRule translates one rule of the guard table's description to
// expressions. A concatenated key is loaded into consecutive 32-bit
// registers from 8 on (each part rounded up to 4 bytes); a part already
// in its registers from the previous lookup of the rule is not loaded
// again, as nft itself does.
func EncodeGuardRule(r model.GuardRule) []expr.Any {
	var e encoder
	for _, t := range r.Terms {
		switch t.Op {
		case model.OpEtherType:
			et := model.EtherTypes[t.Proto]
			e.cmp(expr.CmpOpEq, model.FieldEtherType, []byte{byte(et >> 8), byte(et)})
		case model.OpProtocol:
			et := model.EtherTypes[t.Proto]
			e.add(&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1})
			e.clobber(reg32First, 1)
			e.add(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(et >> 8), byte(et)}})
		case model.OpARPHeader:
			e.cmp(expr.CmpOpEq, arpHeaderField, model.ARPHeader)
		case model.OpL4:
			e.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
			e.clobber(reg32First, 1)
			e.add(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{model.L4Protos[t.Proto]}})
		case model.OpEq:
			e.cmp(expr.CmpOpEq, t.Field, t.Value)
		case model.OpNeq:
			e.cmp(expr.CmpOpNeq, t.Field, t.Value)
		case model.OpFlag:
			e.fresh(t.Field)
			e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: t.Field.Len, Mask: t.Value, Xor: make([]byte, len(t.Value))})
			e.add(&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, len(t.Value))})
		case model.OpLookup:
			e.key(t.Key)
			e.add(&expr.Lookup{SourceRegister: 1, SetName: t.Set, Invert: t.Neg})
		case model.OpUpdate:
			e.key(t.Key)
			d := &expr.Dynset{SrcRegKey: 1, SetName: t.Set, Operation: unix.NFT_DYNSET_OP_UPDATE}
			if !t.Bare {
				d.Exprs = []expr.Any{&expr.Counter{}}
			}
			e.add(d)
		case model.OpPrefix:
			// As nft encodes `ip6 saddr fe80::/10`: the whole address,
			// masked, compared.
			m := model.PrefixMask(len(t.Value), t.Bits)
			e.fresh(t.Field)
			e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: t.Field.Len, Mask: m, Xor: make([]byte, len(m))})
			op := expr.CmpOpEq
			if t.Neg {
				op = expr.CmpOpNeq
			}
			e.add(&expr.Cmp{Op: op, Register: 1, Data: t.Value})
		case model.OpCounter:
			e.add(&expr.Counter{})
		}
	}
	switch r.Verdict.Kind {
	case "accept":
		e.add(&expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		e.add(&expr.Verdict{Kind: expr.VerdictDrop})
	case "goto":
		e.add(&expr.Verdict{Kind: expr.VerdictGoto, Chain: r.Verdict.Chain})
	case "jump":
		e.add(&expr.Verdict{Kind: expr.VerdictJump, Chain: r.Verdict.Chain})
	}
	return e.out
}

// arpHeaderField is the field behind OpARPHeader (OpEtherType's is
// model.FieldEtherType).
var arpHeaderField = model.Field{Text: "arp header", Header: model.HeaderNetwork, Offset: 0, Len: 6, Proto: "arp"}

// reg32First is NFT_REG32_00, the first 32-bit register; the 16-byte
// register 1 starts there.
const reg32First = 8

// metaKeys are the meta keys of the guard's meta fields, by their text.
var metaKeys = map[string]expr.MetaKey{
	model.FieldIIF.Text:     expr.MetaKeyIIFNAME,
	model.FieldOIF.Text:     expr.MetaKeyOIFNAME,
	model.FieldL4Proto.Text: expr.MetaKeyL4PROTO,
}

var payloadBase = map[model.Header]expr.PayloadBase{
	model.HeaderLink:      expr.PayloadBaseLLHeader,
	model.HeaderNetwork:   expr.PayloadBaseNetworkHeader,
	model.HeaderTransport: expr.PayloadBaseTransportHeader,
}

// encoder collects a rule's expressions and remembers which field each
// 32-bit register holds.
type encoder struct {
	out  []expr.Any
	regs [24]string
}

func (e *encoder) add(x expr.Any) { e.out = append(e.out, x) }

// clobber forgets what n bytes from 32-bit register r held.
func (e *encoder) clobber(r, n uint32) {
	for i := r; i < r+(n+3)/4 && int(i) < len(e.regs); i++ {
		e.regs[i] = ""
	}
}

// load loads f into the registers from 32-bit register r, unless they
// hold it already.
func (e *encoder) load(f model.Field, r uint32) {
	tag := fmt.Sprintf("%s@%d", f.Text, r)
	held := true
	for i := r; i < r+(f.Len+3)/4; i++ {
		held = held && e.regs[i] == tag
	}
	if held {
		return
	}
	// The kernel lists a register that starts a 16-byte one by that one's
	// number (8 as 1, 12 as 2), others by their 32-bit number.
	reg := r
	if (r-reg32First)%4 == 0 {
		reg = (r-reg32First)/4 + 1
	}
	if f.Header == model.HeaderMeta {
		e.add(&expr.Meta{Key: metaKeys[f.Text], Register: reg})
	} else {
		e.add(&expr.Payload{DestRegister: reg, Base: payloadBase[f.Header], Offset: f.Offset, Len: f.Len})
	}
	for i := r; i < r+(f.Len+3)/4; i++ {
		e.regs[i] = tag
	}
}

// fresh loads f into register 1 for a comparison: always, and not to be
// reused as a key part (the comparison may transform it).
func (e *encoder) fresh(f model.Field) {
	e.clobber(reg32First, f.Len)
	e.load(f, reg32First)
	e.clobber(reg32First, f.Len)
}

// cmp loads f into register 1 and compares it with v.
func (e *encoder) cmp(op expr.CmpOp, f model.Field, v []byte) {
	e.fresh(f)
	e.add(&expr.Cmp{Op: op, Register: 1, Data: v})
}

// key loads a concatenation, part after part.
func (e *encoder) key(key []model.Field) {
	r := uint32(reg32First)
	for _, f := range key {
		e.load(f, r)
		r += (f.Len + 3) / 4
	}
}

// SameGuardRule reports whether expressions read from the kernel are one
// of guestnet's guard rules (set IDs and counter values aside).
func SameGuardRule(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if normal(got[i]) != normal(want[i]) {
			return false
		}
	}
	return true
}

func normal(e expr.Any) string {
	switch x := e.(type) {
	case *expr.Lookup:
		return fmt.Sprintf("lookup %d %s %v", x.SourceRegister, x.SetName, x.Invert)
	case *expr.Counter:
		return "counter"
	case *expr.Dynset:
		inner := ""
		for _, x := range x.Exprs {
			inner += " " + normal(x)
		}
		return fmt.Sprintf("dynset %d %d %s %d %v %v [%s]", x.SrcRegKey, x.SrcRegData, x.SetName, x.Operation, x.Timeout, x.Invert, inner)
	case *expr.Verdict:
		return fmt.Sprintf("verdict %d %s", x.Kind, x.Chain)
	case *expr.Meta:
		return fmt.Sprintf("meta %d %d %v", x.Key, x.Register, x.SourceRegister)
	case *expr.Payload:
		return fmt.Sprintf("payload %d %d %d %d", x.DestRegister, x.Base, x.Offset, x.Len)
	case *expr.Cmp:
		return fmt.Sprintf("cmp %d %d %x", x.Op, x.Register, x.Data)
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise %d %d %d %x %x", x.SourceRegister, x.DestRegister, x.Len, x.Mask, x.Xor)
	}
	return fmt.Sprintf("%T %+v", e, e)
}

// PrefixKey is an element of set prefixes6, port . prefix: 16 bytes of
// name and the prefix's first and last address.
func PrefixKey(p model.PortPrefix) (start, end []byte) {
	first := p.Prefix.Masked().Addr().As16()
	last := first
	for i := range last {
		bits := max(0, min(8, p.Prefix.Bits()-8*i))
		last[i] |= byte(0xff >> bits)
	}
	return append(ifname(p.Port), first[:]...), append(ifname(p.Port), last[:]...)
}

// DecodePrefixKey reads an element of set prefixes6 back; ok is false
// for a range that is no prefix.
func DecodePrefixKey(start, end []byte) (model.PortPrefix, bool) {
	if len(start) != 32 || len(end) != 32 || !bytes.Equal(start[:16], end[:16]) {
		return model.PortPrefix{}, false
	}
	a, _ := netip.AddrFromSlice(start[16:])
	for bits := 0; bits <= 128; bits++ {
		p := model.PortPrefix{Port: string(bytes.TrimRight(start[:16], "\x00")), Prefix: netip.PrefixFrom(a, bits)}
		if s, e := PrefixKey(p); p.Prefix.Masked() == p.Prefix && bytes.Equal(s, start) && bytes.Equal(e, end) {
			return p, true
		}
	}
	return model.PortPrefix{}, false
}

// ClaimKey is an element of set claims6: 16 bytes of port name and the
// address.
func ClaimKey(port string, ip netip.Addr) []byte {
	a := ip.As16()
	return append(ifname(port), a[:]...)
}

// DecodeClaimKey reads an element of set claims6 back.
func DecodeClaimKey(k []byte) (model.Claim6, bool) {
	if len(k) != 32 {
		return model.Claim6{}, false
	}
	a, _ := netip.AddrFromSlice(k[16:])
	return model.Claim6{Port: string(bytes.TrimRight(k[:16], "\x00")), IP: a}, true
}

// Addr4Key is an IPv4 address as an element of set vxlan_gateways.
func Addr4Key(ip netip.Addr) ([]byte, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("gateway %s of a stretched network is not an IPv4 address", ip)
	}
	a := ip.As4()
	return a[:], nil
}

// DecodeAddr4Key reads an element of set vxlan_gateways back.
func DecodeAddr4Key(k []byte) (netip.Addr, bool) {
	if len(k) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(k)), true
}

// DecodeVXLANDropKey reads an element of sets vxlan_dropped_in and
// vxlan_dropped_out: ifname . ether_addr . ether_type, laid out as set
// dropped_other's (DecodeOtherKey).
func DecodeVXLANDropKey(k []byte, out bool) (model.VXLANDrop, bool) {
	o, ok := DecodeOtherKey(k)
	return model.VXLANDrop{Port: o.Port, Out: out, MAC: o.MAC, EtherType: o.EtherType}, ok
}

// AddrKey is an IPv6 address as an element of sets held6 and claimed6.
func AddrKey(ip netip.Addr) []byte {
	a := ip.As16()
	return a[:]
}

// DecodeAddrKey reads an element of sets held6 and claimed6 back.
func DecodeAddrKey(k []byte) (netip.Addr, bool) {
	if len(k) != 16 {
		return netip.Addr{}, false
	}
	a, _ := netip.AddrFromSlice(k)
	return a, true
}

// DecodeRouter6Key reads an element of set router6, which the RA guard's
// rules make: ifname . ether_addr . ipv6_addr . inet_proto, 16 bytes of
// name, 6 of MAC padded to 8, 16 of address and 1 of protocol padded to
// 4. ICMPv6 (58) is a router advertisement or redirect, UDP (17) a DHCPv6
// server message.
func DecodeRouter6Key(k []byte) (model.Drop6, bool) {
	if len(k) != 44 || !bytes.Equal(k[22:24], []byte{0, 0}) || !bytes.Equal(k[41:], []byte{0, 0, 0}) {
		return model.Drop6{}, false
	}
	kind := map[byte]model.Drop6Kind{58: model.Drop6Router, 17: model.Drop6DHCP}[k[40]]
	if kind == "" {
		return model.Drop6{}, false
	}
	a, _ := netip.AddrFromSlice(k[24:40])
	return model.Drop6{Kind: kind, Port: string(bytes.TrimRight(k[:16], "\x00")), MAC: net.HardwareAddr(k[16:22]).String(), IP: a}, true
}
