package nft

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// The guard table's keys are ifname . ether_addr . ipv4_addr: 16 bytes of
// name, 6 of MAC padded to 8, 4 of address (28 bytes, registers 8 to 14).
const guardKeyLen = 28

// GuardKey is a binding as an element of an interval set: a wildcard MAC
// or address spans its whole range. For an exact binding start == end.
func GuardKey(b model.Bind) (start, end []byte) {
	start, end = make([]byte, guardKeyLen), make([]byte, guardKeyLen)
	copy(start, b.Port)
	copy(end, b.Port)
	if mac, err := net.ParseMAC(b.MAC); err == nil && b.MAC != "" {
		copy(start[16:22], mac)
		copy(end[16:22], mac)
	} else {
		copy(end[16:22], bytes.Repeat([]byte{0xff}, 6))
	}
	if b.IP.IsValid() {
		a := b.IP.As4()
		copy(start[24:], a[:])
		copy(end[24:], a[:])
	} else {
		copy(end[24:], []byte{255, 255, 255, 255})
	}
	return start, end
}

// DecodeGuardKey reads an element back; ok is false for one guestnet would
// not have written. end is nil for elements of a set without intervals.
func DecodeGuardKey(start, end []byte) (model.Bind, bool) {
	if end == nil {
		end = start
	}
	if len(start) != guardKeyLen || len(end) != guardKeyLen || !bytes.Equal(start[:16], end[:16]) {
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
	case bytes.Equal(start[24:], end[24:]):
		b.IP = netip.AddrFrom4([4]byte(start[24:]))
	case !bytes.Equal(start[24:], []byte{0, 0, 0, 0}) || !bytes.Equal(end[24:], []byte{255, 255, 255, 255}):
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

// GuardChains are the expressions of the guard table's rules, by chain, in
// the order model.GuardRules prints them.
func GuardChains() map[string][][]expr.Any {
	jump := func(set string) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: "check"},
		}
	}
	toSpoofed := &expr.Verdict{Kind: expr.VerdictGoto, Chain: "spoofed"}
	etherType := func(t uint16) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(t >> 8), byte(t)}},
		}
	}
	// lookup loads iifname . MAC (at macOff of base) . IPv4 (at ipOff of
	// the network header) into registers 8-14 (the kernel names 8 and 12 by the 16-byte
	// registers 1 and 2 that start there) and looks the key up.
	key := func(base expr.PayloadBase, macOff, ipOff uint32) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: base, Offset: macOff, Len: 6},
			&expr.Payload{DestRegister: 14, Base: expr.PayloadBaseNetworkHeader, Offset: ipOff, Len: 4},
		}
	}
	lookup := func(set string, base expr.PayloadBase, macOff, ipOff uint32) []expr.Any {
		return append(key(base, macOff, ipOff), &expr.Lookup{SourceRegister: 1, SetName: set})
	}
	// htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4: the layout whose
	// sender fields sit at offsets 8 (MAC) and 14 (address).
	arpType := append(etherType(unix.ETH_P_ARP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 1, 8, 0, 6, 4}})
	arp := func(set string) []expr.Any {
		out := append(slices.Clone(arpType), lookup(set, expr.PayloadBaseLLHeader, 6, 14)...)
		out = append(out,
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6},
			&expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Verdict{Kind: expr.VerdictAccept})
		return out
	}
	ipv4 := func(set string) []expr.Any {
		out := append(etherType(unix.ETH_P_IP), lookup(set, expr.PayloadBaseLLHeader, 6, offSaddr)...)
		return append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	// toServer matches IPv4 UDP to port 67: what a DHCP client sends. It
	// tests the frame's protocol (meta protocol), not the Ethernet header's
	// type field: a frame with an 802.1Q tag (VLAN 0 too, which the host
	// strips and so takes as its own) shows nft the tag's type there, and
	// would slip past an `ether type ip` test with a neighbour's chaddr.
	toServer := append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(unix.ETH_P_IP >> 8), byte(unix.ETH_P_IP & 0xff)}},
	},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 67}})
	// A port bound only by leases lets any MAC ask for a lease (a guest
	// that changed its MAC, nested guests); what it gets is bound in turn.
	dhcp := append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: model.GuardLearnedPorts},
	}, etherType(unix.ETH_P_IP)...)
	dhcp = append(dhcp,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offSaddr, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 68}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 67}},
		&expr.Verdict{Kind: expr.VerdictAccept})
	// owned sends a frame to chain spoofed when the MAC at off of base is
	// in set macs (bound to some port) and iifname . MAC is not in set
	// ports (not bound to this one).
	owned := func(match []expr.Any, macs, ports string, base expr.PayloadBase, off uint32) []expr.Any {
		return append(slices.Clone(match),
			&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: 6},
			&expr.Lookup{SourceRegister: 1, SetName: macs},
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: base, Offset: off, Len: 6},
			&expr.Lookup{SourceRegister: 1, SetName: ports, Invert: true},
			toSpoofed)
	}
	// fragment: the MF flag of an IPv4 header (the first fragment of a
	// datagram, the only one with the UDP header).
	fragment := append(slices.Clone(toServer),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0x20, 0}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0}},
		toSpoofed)
	// record remembers the source of a frame about to be dropped, with a
	// counter. It has no verdict: when set dropped is full, the rule stops
	// and the next one drops the frame all the same.
	record := func(match []expr.Any, ipOff uint32) []expr.Any {
		out := append(slices.Clone(match), key(expr.PayloadBaseLLHeader, 6, ipOff)...)
		return append(out, &expr.Dynset{SrcRegKey: 1, SetName: model.GuardDropped,
			Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}})
	}
	const chaddr = 8 + 28 // UDP header, then BOOTP op..giaddr
	return map[string][][]expr.Any{
		"spoofed": {
			record(etherType(unix.ETH_P_IP), offSaddr), record(arpType, 14),
			{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
		},
		"check": {
			arp(model.GuardBound), arp(model.GuardLearned),
			ipv4(model.GuardBound), ipv4(model.GuardLearned), dhcp,
			{toSpoofed},
		},
		"prerouting": {
			owned(nil, model.GuardMACs, model.GuardPortMACs, expr.PayloadBaseLLHeader, 6),
			owned(nil, model.GuardLearnedMACs, model.GuardLearnedPortMACs, expr.PayloadBaseLLHeader, 6),
			fragment,
			owned(toServer, model.GuardMACs, model.GuardPortMACs, expr.PayloadBaseTransportHeader, chaddr),
			owned(toServer, model.GuardLearnedMACs, model.GuardLearnedPortMACs, expr.PayloadBaseTransportHeader, chaddr),
			jump(model.GuardPorts), jump(model.GuardLearnedPorts),
		},
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
