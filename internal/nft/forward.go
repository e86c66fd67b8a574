package nft

import (
	"encoding/binary"
	"net/netip"

	"github.com/guestnet/guestnet/internal/model"
)

// Forward elements are laid out as nft lays out the concatenation
// ipv4_addr . ipv4_addr . inet_proto . inet_service, each field padded to
// 4 bytes; the key is the start of each interval and KeyEnd its end. The
// data is ipv4_addr . inet_service.

func last(p netip.Prefix) netip.Addr { return model.Broadcast(p) }

func key(src, dst netip.Addr, proto byte, port int) []byte {
	b := make([]byte, 16)
	s, d := src.As4(), dst.As4()
	copy(b[0:4], s[:])
	copy(b[4:8], d[:])
	b[8] = proto
	binary.BigEndian.PutUint16(b[12:14], uint16(port))
	return b
}

// EncodeForward returns the element's key, key end and data.
func EncodeForward(f model.Forward) (k, kEnd, val []byte) {
	p := l4protos[f.Proto]
	k = key(f.Src.Addr(), f.Dst.Addr(), p, f.Port)
	kEnd = key(last(f.Src), last(f.Dst), p, f.Port)
	val = make([]byte, 8)
	to := f.To.As4()
	copy(val[0:4], to[:])
	binary.BigEndian.PutUint16(val[4:6], uint16(f.ToPort))
	return k, kEnd, val
}

// prefixOf is the prefix spanning [from, to], if the span is one.
func prefixOf(from, to netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= from.BitLen(); bits++ {
		p := netip.PrefixFrom(from, bits)
		if p.Masked().Addr() == from && last(p) == to {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// DecodeForward reads an element back; ok is false for one guestnet would
// not have written.
func DecodeForward(k, kEnd, val []byte) (model.Forward, bool) {
	if len(k) != 16 || len(kEnd) != 16 || len(val) < 6 {
		return model.Forward{}, false
	}
	a4 := func(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }
	src, ok1 := prefixOf(a4(k[0:4]), a4(kEnd[0:4]))
	dst, ok2 := prefixOf(a4(k[4:8]), a4(kEnd[4:8]))
	port := int(binary.BigEndian.Uint16(k[12:14]))
	if !ok1 || !ok2 || k[8] != kEnd[8] || port != int(binary.BigEndian.Uint16(kEnd[12:14])) {
		return model.Forward{}, false
	}
	f := model.Forward{Src: src, Dst: dst, Port: port, To: a4(val[0:4]), ToPort: int(binary.BigEndian.Uint16(val[4:6]))}
	for name, p := range l4protos {
		if p == k[8] {
			f.Proto = name
		}
	}
	return f, f.Proto != ""
}

// EncodeExact returns a hash-map element: key inet_proto . inet_service,
// data ipv4_addr . inet_service (fields padded to 4 bytes).
func EncodeExact(f model.Forward) (k, val []byte) {
	k = make([]byte, 8)
	k[0] = l4protos[f.Proto]
	binary.BigEndian.PutUint16(k[4:6], uint16(f.Port))
	_, _, val = EncodeForward(f)
	return k, val
}

// DecodeExact reads a hash-map element back.
func DecodeExact(k, val []byte) (model.Forward, bool) {
	if len(k) != 8 || len(val) < 6 {
		return model.Forward{}, false
	}
	any4 := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	f := model.Forward{Src: any4, Dst: any4, Port: int(binary.BigEndian.Uint16(k[4:6])),
		To: netip.AddrFrom4([4]byte(val[0:4])), ToPort: int(binary.BigEndian.Uint16(val[4:6]))}
	for name, p := range l4protos {
		if p == k[0] && name != "icmp" {
			f.Proto = name
		}
	}
	return f, f.Proto != ""
}
