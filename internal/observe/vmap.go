package observe

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// decodeVmap reads a verdict map's elements back (nft.DecodeVmapElements).
// A map with an element guestnet would not have written comes back with
// one element that has no key and no chain: the plan sees drift, and a
// full replace rewrites the table (a delta cannot name that element).
func decodeVmap(name string, els []nftables.SetElement) []model.VmapElement {
	for i := range els {
		if els[i].VerdictData == nil {
			els[i].VerdictData = verdictOf(els[i].Val)
		}
	}
	out, ok := nft.DecodeVmapElements(name, els)
	if !ok {
		return append(out, model.VmapElement{})
	}
	return out
}

// verdictOf reads a verdict from its netlink attributes (code, chain):
// the library reads a verdict map's element data as those raw bytes into
// Val, and leaves VerdictData nil. nil when there is none.
func verdictOf(b []byte) *expr.Verdict {
	if len(b) == 0 {
		return nil
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	seen := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind, seen = expr.VerdictKind(int32(ad.Uint32())), true
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil || !seen {
		return nil
	}
	return v
}
