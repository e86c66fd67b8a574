package apply

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// vmapSet is one of guestnet's verdict maps: interface names, or IPv4
// addresses (intervals for nat_from, whose keys are subnets), to a jump.
func vmapSet(t *nftables.Table, name string, key model.MatchKind) *nftables.Set {
	// A name is a string to nft, kept in host byte order: without saying
	// so in the set's user data, nft lists every name as "".
	s := &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict,
		KeyByteOrder: binaryutil.NativeEndian}
	if key == model.MatchSAddr || key == model.MatchDAddr {
		s.KeyType, s.KeyByteOrder = nftables.TypeIPAddr, binaryutil.BigEndian
		s.Interval = name == model.VmapNATFrom
	}
	return s
}

// vmapElements encodes elements: a name padded as nft pads an ifname; an
// address; or, in an interval map, a prefix as its first address and the
// end mark one past its last (none past 255.255.255.255).
func vmapElements(interval bool, key model.MatchKind, els []model.VmapElement) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range els {
		v := &expr.Verdict{Kind: expr.VerdictJump, Chain: e.Chain}
		if key == model.MatchIIF || key == model.MatchOIF {
			b := make([]byte, unix.IFNAMSIZ)
			copy(b, e.Name)
			out = append(out, nftables.SetElement{Key: b, VerdictData: v})
			continue
		}
		out = append(out, nftables.SetElement{Key: e.Prefix.Masked().Addr().AsSlice(), VerdictData: v})
		if interval {
			if next := model.Broadcast(e.Prefix).Next(); next.IsValid() {
				out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
			}
		}
	}
	return out
}
