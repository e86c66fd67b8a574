package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// ifname pads an interface name the way nft does for an exact match.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// header is where a family's network header keeps its addresses, and
// the nfproto value that says a packet has that header.
type header struct {
	nfproto      byte
	saddr, daddr uint32
	len          uint32
}

func headerOf(f model.Family) header {
	proto := byte(unix.NFPROTO_IPV4)
	if f == model.IPv6 {
		proto = unix.NFPROTO_IPV6
	}
	return header{proto, f.SrcOffset(), f.DstOffset(), uint32(f.Len())}
}

// familyOfNfproto is the family of an nfproto value, ok false for others.
func familyOfNfproto(b []byte) (model.Family, bool) {
	switch {
	case bytes.Equal(b, []byte{unix.NFPROTO_IPV4}):
		return model.IPv4, true
	case bytes.Equal(b, []byte{unix.NFPROTO_IPV6}):
		return model.IPv6, true
	}
	return "", false
}

const (
	offSaddr = 12 // IPv4 header offsets (the NAT verdicts are IPv4-only)
	offDaddr = 16
	ctReply  = expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED
	ctDstNAT = 1 << 5 // IPS_DST_NAT
)

var l4protos = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "ipv6-icmp": unix.IPPROTO_ICMPV6}

// nfprotos are the nfproto values of a MatchNFProto, by nft's name.
var nfprotos = map[string]byte{"ipv4": unix.NFPROTO_IPV4, "ipv6": unix.NFPROTO_IPV6}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// Encode translates a rule to nftables expressions. inet says the table is
// family inet, where a network header match needs an explicit nfproto
// check; elsewhere (table ip filter) only IPv4 matches can be encoded. An
// address match takes its header's offsets and length from the family of
// its prefix.
func Encode(r model.Rule, inet bool) ([]expr.Any, error) {
	var out []expr.Any
	for _, m := range r.Match {
		switch m.Kind {
		case model.MatchIIF, model.MatchOIF:
			key := expr.MetaKeyIIFNAME
			if m.Kind == model.MatchOIF {
				key = expr.MetaKeyOIFNAME
			}
			out = append(out, &expr.Meta{Key: key, Register: 1},
				&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: ifname(m.Name)})
		case model.MatchSAddr, model.MatchDAddr:
			if !m.Prefix.IsValid() {
				return nil, fmt.Errorf("encode rule: %s without a prefix", m.Kind)
			}
			fam := model.FamilyOf(m.Prefix.Addr())
			h := headerOf(fam)
			if inet {
				out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{h.nfproto}})
			} else if fam != model.IPv4 {
				return nil, fmt.Errorf("encode rule: %s is an %s match, and only a table of family inet holds those (not table ip filter)", m, fam)
			}
			off := h.saddr
			if m.Kind == model.MatchDAddr {
				off = h.daddr
			}
			net := m.Prefix.Masked().Addr().Unmap().AsSlice()
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: h.len})
			if m.Prefix.Bits() < fam.Bits() {
				out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: h.len, Mask: netMask(m.Prefix.Bits(), int(h.len)), Xor: make([]byte, h.len)})
			}
			out = append(out, &expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: net})
		case model.MatchLocal:
			out = append(out, &expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)})
		case model.MatchRPF:
			// Equivalent to: fib saddr . iif oif != 0
			out = append(out, &expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
		case model.MatchL4:
			proto, ok := l4protos[m.Name]
			if !ok {
				return nil, fmt.Errorf("encode rule: protocol %q", m.Name)
			}
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
		case model.MatchNFProto:
			p, ok := nfprotos[m.Name]
			if !ok || m.Neg {
				return nil, fmt.Errorf("encode rule: meta nfproto %q (want ipv4 or ipv6, not negated)", m.Name)
			}
			if !inet {
				return nil, fmt.Errorf("encode rule: %s is only needed in a table of family inet", m)
			}
			out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}})
		case model.MatchIIFGrp:
			out = append(out, &expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, uint32(m.Port))})
		case model.MatchDPort:
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(m.Port))})
		case model.MatchCtDNAT:
			out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binary.NativeEndian.AppendUint32(nil, ctDstNAT), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
		case model.MatchCtReply:
			out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binary.NativeEndian.AppendUint32(nil, ctReply), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
		default:
			return nil, fmt.Errorf("encode rule: unknown match %q", m.Kind)
		}
	}
	switch r.Verdict {
	case model.Accept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case model.Drop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case model.Reject:
		out = append(out, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	case model.Masquerade:
		out = append(out, &expr.Masq{})
	case model.DNATMap:
		// Equivalent to: dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @forwards
		// (the expressions nft itself generates: a concatenation in 32-bit
		// registers 1 (=8), 9, 10, 11; the map's data lands in 1 and 9).
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offSaddr, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: offDaddr, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 10},
			&expr.Byteorder{SourceRegister: 10, DestRegister: 10, Op: expr.ByteorderHton, Size: 2, Len: 1},
			&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: model.ForwardsSrcMap},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true})
	case model.DNATPort:
		// Equivalent to: dnat ip to meta l4proto . th dport map @forwards
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: model.ForwardsMap},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true})
	case model.DNATFloat, model.SNATFloat:
		// Equivalent to: dnat ip to ip daddr map @floating_in
		//            or: snat ip to ip saddr map @floating_out
		off, set, typ := uint32(offDaddr), model.FloatingIn, expr.NATTypeDestNAT
		if r.Verdict == model.SNATFloat {
			off, set, typ = offSaddr, model.FloatingOut, expr.NATTypeSourceNAT
		}
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set},
			&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
	default:
		d, ok := dispatchOf(r.Verdict)
		if !ok {
			return nil, fmt.Errorf("encode rule: unknown verdict %q", r.Verdict)
		}
		if !inet {
			return nil, fmt.Errorf("encode rule: %q dispatches to guestnet's own chains, which only its table inet holds", r.Verdict)
		}
		// Equivalent to: oifname vmap @forward_to (and the like), or
		// ip saddr vmap @nat_from (ip6 saddr vmap @nat_from6): the key is loaded into register 1 and
		// looked up with the verdict register (0) as destination, so the
		// element's verdict (a jump) is the rule's; a miss goes on.
		switch d.Key {
		case model.MatchIIF:
			out = append(out, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		case model.MatchOIF:
			out = append(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		case model.MatchSAddr, model.MatchDAddr:
			h := headerOf(model.VmapFamily(d.Name))
			off := h.saddr
			if d.Key == model.MatchDAddr {
				off = h.daddr
			}
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{h.nfproto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: h.len})
		}
		out = append(out, &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: d.Name})
	}
	return out, nil
}

// dispatch is one verdict map as the codec needs it.
type dispatch struct {
	Name    string
	Key     model.MatchKind
	Verdict model.Verdict
}

// dispatchOf is the verdict map a dispatch verdict looks up.
func dispatchOf(v model.Verdict) (dispatch, bool) {
	for _, d := range model.Vmaps {
		if d.Dispatch == v {
			return dispatch{d.Name, d.Key, d.Dispatch}, true
		}
	}
	return dispatch{}, false
}

// dispatchBySet is the verdict map of that name.
func dispatchBySet(name string) (dispatch, bool) {
	for _, d := range model.Vmaps {
		if d.Name == name {
			return dispatch{d.Name, d.Key, d.Dispatch}, true
		}
	}
	return dispatch{}, false
}

// netMask is the mask of a prefix length, n bytes long.
func netMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits && i < 8*n; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// Comment is the rule's userdata: the network name, as an nft comment.
func Comment(network string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, network)
}

// CommentOf reads back the comment of a rule's userdata.
func CommentOf(ud []byte) string {
	s, _ := userdata.GetString(ud, userdata.TypeComment)
	return s
}

// Decode translates expressions back to a rule. It understands what Encode
// writes (and the counters iptables-nft adds); anything else is reported as
// not ok, which callers treat as drift in guestnet's table.
func Decode(exprs []expr.Any, comment string) (model.Rule, bool) {
	r := model.Rule{Network: comment}
	var pending *model.Match // set by a load, completed by its cmp
	var mask []byte
	var lookup string // the map a lookup read, for the NAT after it
	// fam is the network header an address load reads: IPv4 unless an
	// nfproto check said otherwise (iptables-nft's table ip has none).
	fam := model.IPv4
	// nfproto is the family an nfproto check just named: the start of an
	// address match when a network header load follows, otherwise a
	// MatchNFProto of its own.
	nfproto := ""
	for _, e := range exprs {
		if p, ok := e.(*expr.Payload); nfproto != "" && (!ok || p.Base != expr.PayloadBaseNetworkHeader) {
			r.Match = append(r.Match, model.Match{Kind: model.MatchNFProto, Name: nfproto})
		}
		if _, ok := e.(*expr.Cmp); !ok || pending == nil || pending.Kind != "nfproto" {
			nfproto = ""
		}
		switch e := e.(type) {
		case *expr.Meta:
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				pending = &model.Match{Kind: model.MatchIIF}
			case expr.MetaKeyOIFNAME:
				pending = &model.Match{Kind: model.MatchOIF}
			case expr.MetaKeyNFPROTO:
				pending = &model.Match{Kind: "nfproto"}
			case expr.MetaKeyIIFGROUP:
				pending = &model.Match{Kind: model.MatchIIFGrp}
			case expr.MetaKeyL4PROTO:
				pending = &model.Match{Kind: model.MatchL4}
				if e.Register != 1 {
					pending = nil // a key part of the forwards lookup
				}
			default:
				return r, false
			}
			mask = nil
		case *expr.Fib:
			switch {
			case e.FlagDADDR && e.ResultADDRTYPE && !e.FlagSADDR && !e.FlagIIF && !e.FlagOIF && !e.FlagMARK && !e.FlagPRESENT:
				pending, mask = &model.Match{Kind: model.MatchLocal}, nil
			case e.FlagSADDR && e.FlagIIF && e.ResultOIF && !e.FlagDADDR && !e.FlagOIF && !e.FlagMARK && !e.FlagPRESENT:
				pending, mask = &model.Match{Kind: model.MatchRPF}, nil
			default:
				return r, false
			}
		case *expr.Byteorder:
		case *expr.Lookup:
			if e.IsDestRegSet && e.DestRegister == 0 {
				// A verdict map: the load before it is its key.
				d, ok := dispatchBySet(e.SetName)
				if !ok || pending == nil || pending.Kind != d.Key || mask != nil || e.SourceRegister != 1 || e.Invert ||
					((d.Key == model.MatchSAddr || d.Key == model.MatchDAddr) && (fam != model.VmapFamily(d.Name) || pending.Prefix.Addr() != fam.Unspecified())) {
					return r, false
				}
				r.Verdict, pending = d.Verdict, nil
				continue
			}
			if !e.IsDestRegSet || (e.SetName != model.ForwardsMap && e.SetName != model.ForwardsSrcMap && e.SetName != model.FloatingIn && e.SetName != model.FloatingOut) {
				return r, false
			}
			lookup, pending = e.SetName, nil
		case *expr.NAT:
			switch {
			case e.Type == expr.NATTypeDestNAT && lookup == model.ForwardsSrcMap:
				r.Verdict = model.DNATMap
			case e.Type == expr.NATTypeDestNAT && lookup == model.ForwardsMap:
				// Its nfproto check is part of the verdict (its key holds
				// no address that implies the family).
				if n := len(r.Match); n > 0 && r.Match[n-1] == (model.Match{Kind: model.MatchNFProto, Name: "ipv4"}) {
					r.Match = r.Match[:n-1]
				}
				r.Verdict = model.DNATPort
			case e.Type == expr.NATTypeDestNAT && lookup == model.FloatingIn:
				r.Verdict = model.DNATFloat
			case e.Type == expr.NATTypeSourceNAT && lookup == model.FloatingOut:
				r.Verdict = model.SNATFloat
			default:
				return r, false
			}
		case *expr.Payload:
			if e.DestRegister == 1 && e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2 {
				pending, mask = &model.Match{Kind: model.MatchDPort}, nil
				continue
			}
			if e.DestRegister != 1 || e.Base == expr.PayloadBaseTransportHeader {
				pending = nil // a key part of the forwards lookup
				continue
			}
			// iptables-nft loads only the prefix's whole bytes (3 for a /24).
			h := headerOf(fam)
			if e.Base != expr.PayloadBaseNetworkHeader || e.Len < 1 || e.Len > h.len || (e.Offset != h.saddr && e.Offset != h.daddr) {
				return r, false
			}
			k := model.MatchSAddr
			if e.Offset == h.daddr {
				k = model.MatchDAddr
			}
			// The prefix holds the family until the cmp completes it.
			pending, mask = &model.Match{Kind: k, Prefix: netip.PrefixFrom(fam.Unspecified(), 0)}, nil
		case *expr.Ct:
			switch e.Key {
			case expr.CtKeySTATE:
				pending = &model.Match{Kind: model.MatchCtReply}
			case expr.CtKeySTATUS:
				pending = &model.Match{Kind: model.MatchCtDNAT}
			default:
				return r, false
			}
			mask = nil
		case *expr.Bitwise:
			mask = e.Mask
		case *expr.Cmp:
			if pending != nil && pending.Kind == "nfproto" {
				f, ok := familyOfNfproto(e.Data)
				if !ok || e.Op != expr.CmpOpEq {
					return r, false
				}
				fam, pending, nfproto = f, nil, "ipv4"
				if f == model.IPv6 {
					nfproto = "ipv6"
				}
				continue
			}
			if pending == nil || !completeMatch(pending, e, mask) {
				return r, false
			}
			if pending.Kind != "nfproto" {
				r.Match = append(r.Match, *pending)
			}
			pending = nil
		case *expr.Counter:
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				r.Verdict = model.Accept
			case expr.VerdictDrop:
				r.Verdict = model.Drop
			default:
				return r, false
			}
		case *expr.Reject:
			r.Verdict = model.Reject
		case *expr.Masq:
			r.Verdict = model.Masquerade
		case *expr.Target: // iptables-nft's xtables target
			if e.Name != "MASQUERADE" {
				return r, false
			}
			r.Verdict = model.Masquerade
		default:
			return r, false
		}
	}
	if nfproto != "" {
		return r, false // an nfproto check with no verdict after it
	}
	return r, r.Verdict != "" && pending == nil
}

func completeMatch(m *model.Match, c *expr.Cmp, mask []byte) bool {
	m.Neg = c.Op == expr.CmpOpNeq
	switch m.Kind {
	case model.MatchIIF, model.MatchOIF:
		if c.Op != expr.CmpOpEq && c.Op != expr.CmpOpNeq {
			return false
		}
		m.Name = string(bytes.TrimRight(c.Data, "\x00"))
	case model.MatchSAddr, model.MatchDAddr:
		n := model.FamilyOf(m.Prefix.Addr()).Len() // set by the payload load
		if len(c.Data) < 1 || len(c.Data) > n {
			return false
		}
		a := make([]byte, n)
		copy(a, c.Data)
		bits := 8 * len(c.Data)
		if mask != nil {
			bits = maskBits(mask)
			if bits < 0 || len(c.Data) != n {
				return false
			}
		}
		addr, _ := netip.AddrFromSlice(a)
		m.Prefix = netip.PrefixFrom(addr, bits)
	case model.MatchCtReply:
		m.Neg = false
		return c.Op == expr.CmpOpNeq && len(mask) == 4 && binary.NativeEndian.Uint32(mask) == ctReply
	case model.MatchCtDNAT:
		m.Neg = false
		return c.Op == expr.CmpOpNeq && len(mask) == 4 && binary.NativeEndian.Uint32(mask) == ctDstNAT
	case model.MatchLocal:
		return c.Op == expr.CmpOpEq && len(c.Data) == 4 && binary.NativeEndian.Uint32(c.Data) == unix.RTN_LOCAL
	case model.MatchRPF:
		m.Neg = false
		return c.Op == expr.CmpOpNeq && len(c.Data) == 4 && binary.NativeEndian.Uint32(c.Data) == 0 && mask == nil
	case model.MatchIIFGrp:
		if c.Op != expr.CmpOpEq || len(c.Data) != 4 {
			return false
		}
		m.Port = int(binary.NativeEndian.Uint32(c.Data))
	case model.MatchDPort:
		if c.Op != expr.CmpOpEq || len(c.Data) != 2 {
			return false
		}
		m.Port = int(binary.BigEndian.Uint16(c.Data))
	case model.MatchL4:
		for name, p := range l4protos {
			if len(c.Data) == 1 && c.Data[0] == p {
				m.Name = name
				return c.Op == expr.CmpOpEq
			}
		}
		return false
	}
	return true
}

// maskBits is the prefix length of a mask of leading ones (of 4 or 16
// bytes), -1 for any other mask.
func maskBits(m []byte) int {
	if len(m) != 4 && len(m) != 16 {
		return -1
	}
	bits := 0
	for i := 0; i < 8*len(m); i++ {
		if m[i/8]&(0x80>>(i%8)) == 0 {
			break
		}
		bits++
	}
	if !bytes.Equal(m, netMask(bits, len(m))) {
		return -1
	}
	return bits
}
