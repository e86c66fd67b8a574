package observe

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// decodeVmap reads a verdict map's elements back. The library hands a
// verdict over as its raw attributes (code, chain name). In an interval
// map each element with a verdict starts a range that the next end mark
// closes. An element that is not a jump with a key guestnet writes comes
// back without a chain (unreadable).
func decodeVmap(key model.MatchKind, interval bool, els []nftables.SetElement) []model.VmapElement {
	var out []model.VmapElement
	bad := func() { out = append(out, model.VmapElement{}) }
	if !interval {
		for _, e := range els {
			chain, ok := jumpOf(e.Val)
			el := model.VmapElement{Chain: chain}
			switch {
			case !ok:
				bad()
				continue
			case key == model.MatchIIF || key == model.MatchOIF:
				name, ok := ifnameOf(e.Key)
				if !ok {
					bad()
					continue
				}
				el.Name = name
			default:
				a, ok := netip.AddrFromSlice(e.Key)
				if !ok || !a.Is4() {
					bad()
					continue
				}
				el.Prefix = netip.PrefixFrom(a, 32)
			}
			out = append(out, el)
		}
		return out
	}
	starts := map[netip.Addr]string{}
	var ends []netip.Addr
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || !a.Is4() {
			bad()
			continue
		}
		if e.IntervalEnd {
			ends = append(ends, a)
			continue
		}
		chain, ok := jumpOf(e.Val)
		if !ok {
			bad()
			continue
		}
		starts[a] = chain
	}
	slices.SortFunc(ends, netip.Addr.Compare)
	for a, chain := range starts {
		// The range ends before the first end mark above its start, or at
		// the last address when there is none.
		last := netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if i := slices.IndexFunc(ends, func(x netip.Addr) bool { return x.Compare(a) > 0 }); i >= 0 {
			last = ends[i].Prev()
		}
		p, ok := prefixSpan(a, last)
		if !ok {
			bad()
			continue
		}
		out = append(out, model.VmapElement{Prefix: p, Chain: chain})
	}
	return out
}

// jumpOf reads a verdict's attributes: the chain of a jump.
func jumpOf(b []byte) (string, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", false
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || expr.VerdictKind(code) != expr.VerdictJump || chain == "" {
		return "", false
	}
	return chain, true
}

// ifnameOf reads an interface name padded with zeros, as nft writes it.
func ifnameOf(b []byte) (string, bool) {
	if len(b) != unix.IFNAMSIZ {
		return "", false
	}
	name, _, _ := bytes.Cut(b, []byte{0})
	return string(name), len(name) > 0
}

// prefixSpan is the prefix spanning [from, to], if the span is one.
func prefixSpan(from, to netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= 32; bits++ {
		p := netip.PrefixFrom(from, bits)
		if p.Masked().Addr() == from && model.Broadcast(p) == to {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
