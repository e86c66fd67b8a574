package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// The verdict maps of guestnet's table as nftables objects, and their
// elements both ways: apply builds them with these, observe reads them
// back with DecodeVmapElements.

// vmapKey is the key of a verdict map guestnet writes, ok false for another
// name.
func vmapKey(name string) (model.MatchKind, bool) {
	for _, v := range model.Vmaps {
		if v.Name == name {
			return v.Key, true
		}
	}
	return "", false
}

// VmapInterval reports whether the map holds prefixes (flags interval):
// nat_from and nat_from6, keyed on guest subnets. dns_to and dns_to6 hold
// single addresses.
func VmapInterval(name string) bool { return name == model.VmapNATFrom || name == model.VmapNATFrom6 }

// VmapSet is the set guestnet's verdict map of that name is made as.
// Equivalent to: nft add map inet guestnet forward_to { type ifname : verdict; }
// (type ipv4_addr : verdict for dns_to, ipv6_addr for dns_to6; plus flags
// interval for nat_from and nat_from6).
func VmapSet(t *nftables.Table, name string) (*nftables.Set, error) {
	k, ok := vmapKey(name)
	if !ok {
		return nil, fmt.Errorf("no verdict map %q in guestnet's table (its maps are %s)", name, vmapNames())
	}
	s := &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
	if k == model.MatchSAddr || k == model.MatchDAddr {
		s.KeyType, s.KeyByteOrder = nftables.TypeIPAddr, binaryutil.BigEndian // else nft prints the addresses reversed
		if model.VmapFamily(name) == model.IPv6 {
			s.KeyType = nftables.TypeIP6Addr
		}
		s.Interval = VmapInterval(name)
	}
	return s, nil
}

func vmapNames() string {
	var b bytes.Buffer
	for i, v := range model.Vmaps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.Name)
	}
	return b.String()
}

// VmapElements are the set elements of map elements (all of one map, or
// those a delta adds or deletes). An interface key is the name padded to
// IFNAMSIZ, as nft writes it. In nat_from, keyed on prefixes, each prefix
// is a start element carrying the jump and an end element at the address
// after its last (omitted at the end of the address space), as nft writes
// an interval; in dns_to a key is the address.
func VmapElements(name string, es []model.VmapElement) ([]nftables.SetElement, error) {
	k, ok := vmapKey(name)
	if !ok {
		return nil, fmt.Errorf("no verdict map %q in guestnet's table (its maps are %s)", name, vmapNames())
	}
	var out []nftables.SetElement
	for _, e := range es {
		jump := &expr.Verdict{Kind: expr.VerdictJump, Chain: e.Chain}
		if e.Chain == "" {
			return nil, fmt.Errorf("map %s: element %s jumps to no chain", name, e.KeyString())
		}
		switch k {
		case model.MatchIIF, model.MatchOIF:
			if e.Name == "" || len(e.Name) >= len(ifname("")) {
				return nil, fmt.Errorf("map %s: %q is not an interface name (1 to 15 characters)", name, e.Name)
			}
			out = append(out, nftables.SetElement{Key: ifname(e.Name), VerdictData: jump})
		default:
			fam := model.VmapFamily(name)
			if !e.Prefix.IsValid() || model.FamilyOf(e.Prefix.Addr()) != fam || e.Prefix.Addr().Is4In6() {
				return nil, fmt.Errorf("map %s: element %q is not an %s prefix", name, e.KeyString(), fam.AddrType())
			}
			p := e.Prefix.Masked()
			if !VmapInterval(name) {
				if !p.IsSingleIP() {
					return nil, fmt.Errorf("map %s: %s is not one address (the map holds gateway addresses)", name, p)
				}
				out = append(out, nftables.SetElement{Key: p.Addr().AsSlice(), VerdictData: jump})
				continue
			}
			out = append(out, nftables.SetElement{Key: p.Addr().AsSlice(), VerdictData: jump})
			if end := model.Broadcast(p).Next(); end.IsValid() {
				out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
			}
		}
	}
	return out, nil
}

// DecodeVmapElements reads a verdict map's set elements back, sorted as
// nft lists them. ok is false for an element guestnet would not have
// written (another verdict than a jump, a key of the wrong size, an
// interval that is not a prefix): observe reports it as drift.
func DecodeVmapElements(name string, els []nftables.SetElement) ([]model.VmapElement, bool) {
	k, ok := vmapKey(name)
	if !ok {
		return nil, false
	}
	var out []model.VmapElement
	width := model.VmapFamily(name).Len()
	jumpOf := func(e nftables.SetElement) (string, bool) {
		v := e.VerdictData
		if v == nil {
			v = verdictOfData(e.Val)
		}
		if v == nil || v.Kind != expr.VerdictJump || v.Chain == "" {
			return "", false
		}
		return v.Chain, true
	}
	switch {
	case k == model.MatchIIF || k == model.MatchOIF:
		for _, e := range els {
			c, ok := jumpOf(e)
			n := string(bytes.TrimRight(e.Key, "\x00"))
			if !ok || e.IntervalEnd || len(e.Key) != len(ifname("")) || n == "" {
				return nil, false
			}
			out = append(out, model.VmapElement{Name: n, Chain: c})
		}
	case !VmapInterval(name):
		for _, e := range els {
			c, ok := jumpOf(e)
			if !ok || e.IntervalEnd || len(e.Key) != width {
				return nil, false
			}
			a, _ := netip.AddrFromSlice(e.Key)
			out = append(out, model.VmapElement{Prefix: model.HostPrefix(a), Chain: c})
		}
	default:
		// The kernel lists an interval map's starts and ends in its own
		// order (and nft adds an end at 0.0.0.0): sort by address, ends
		// before starts at the same address (one range ends where the
		// next begins), then pair each start with the end after it.
		sorted := slices.Clone(els)
		for _, e := range sorted {
			if len(e.Key) != width {
				return nil, false
			}
		}
		slices.SortFunc(sorted, func(a, b nftables.SetElement) int {
			if c := bytes.Compare(a.Key, b.Key); c != 0 {
				return c
			}
			switch {
			case a.IntervalEnd == b.IntervalEnd:
				return 0
			case a.IntervalEnd:
				return -1
			}
			return 1
		})
		for i := 0; i < len(sorted); i++ {
			e := sorted[i]
			if e.IntervalEnd {
				continue // an end without a start: the 0.0.0.0 (::) nft adds
			}
			c, ok := jumpOf(e)
			if !ok {
				return nil, false
			}
			from, _ := netip.AddrFromSlice(e.Key)
			to := model.Broadcast(netip.PrefixFrom(from, 0))
			if i+1 < len(sorted) {
				if !sorted[i+1].IntervalEnd {
					return nil, false // two starts in a row: not a set of prefixes
				}
				end, _ := netip.AddrFromSlice(sorted[i+1].Key)
				to = end.Prev()
				i++
			}
			p, ok := prefixOf(from, to)
			if !ok {
				return nil, false
			}
			out = append(out, model.VmapElement{Prefix: p, Chain: c})
		}
	}
	model.SortVmapElements(k, out)
	return out, true
}

// verdictOfData reads the verdict of an element as the kernel lists it.
// google/nftables (v0.3.0) does not decode it into VerdictData: it leaves
// the nested NFTA_DATA_VERDICT attributes (NFTA_VERDICT_CODE, a big-endian
// int32, and NFTA_VERDICT_CHAIN) in Val. nil when Val holds no verdict.
func verdictOfData(b []byte) *expr.Verdict {
	if len(b) == 0 {
		return nil
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	var v expr.Verdict
	code := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind, code = expr.VerdictKind(int32(ad.Uint32())), true
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil || !code {
		return nil
	}
	return &v
}
