package observe

import (
	"github.com/google/nftables"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// decodeVmap reads a verdict map's elements back (nft.DecodeVmapElements).
// A map with an element guestnet would not have written comes back with
// one element that has no key and no chain: the plan sees drift, and a
// full replace rewrites the table (a delta cannot name that element).
func decodeVmap(name string, els []nftables.SetElement) []model.VmapElement {
	out, ok := nft.DecodeVmapElements(name, els)
	if !ok {
		return append(out, model.VmapElement{})
	}
	return out
}
