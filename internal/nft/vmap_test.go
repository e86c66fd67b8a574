package nft

import (
	"encoding/hex"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
)

// TestVmapElementsRoundTrip: every verdict map's elements encode as apply
// sends them and decode back as observe reads them; an interval map's
// prefixes become a start and an end, whatever order the kernel lists
// them in, with nft's extra end at 0.0.0.0.
func TestVmapElementsRoundTrip(t *testing.T) {
	rs, err := Render(manyNetworks(12), model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rs.Vmaps {
		if len(v.Elements) == 0 {
			t.Fatalf("map %s has no elements: the test covers nothing", v.Name)
		}
		els, err := VmapElements(v.Name, v.Elements)
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(els) // the kernel's dump order is its own
		if VmapInterval(v.Name) {
			els = append(els, nftables.SetElement{Key: make([]byte, model.VmapFamily(v.Name).Len()), IntervalEnd: true})
		}
		got, ok := DecodeVmapElements(v.Name, els)
		if !ok || !slices.Equal(got, v.Elements) {
			t.Errorf("map %s: %v reads back as %v (ok %v)", v.Name, v.Elements, got, ok)
		}
		s, err := VmapSet(&nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}, v.Name)
		if err != nil || !s.IsMap || s.DataType.Name != "verdict" || s.Interval != VmapInterval(v.Name) || (model.VmapFamily(v.Name) == model.IPv6) != (s.KeyType == nftables.TypeIP6Addr) {
			t.Errorf("map %s: set %+v (%v)", v.Name, s, err)
		}
	}
	// Adjacent prefixes (one ends where the next begins) and a prefix
	// that reaches the end of the address space (no end element).
	es := []model.VmapElement{{Prefix: netip.MustParsePrefix("10.98.0.0/16"), Chain: "nat-a"},
		{Prefix: netip.MustParsePrefix("10.99.0.0/24"), Chain: "nat-b"}, {Prefix: netip.MustParsePrefix("255.0.0.0/8"), Chain: "nat-c"}}
	els, err := VmapElements(model.VmapNATFrom, es)
	if err != nil || len(els) != 5 {
		t.Fatalf("%d elements (%v), want 5", len(els), err)
	}
	if got, ok := DecodeVmapElements(model.VmapNATFrom, els); !ok || !slices.Equal(got, es) {
		t.Errorf("%v reads back as %v (ok %v)", es, got, ok)
	}
	// The same for IPv6 prefixes, up to the end of the address space.
	es6 := []model.VmapElement{{Prefix: netip.MustParsePrefix("fd42:1::/64"), Chain: "nat-a"},
		{Prefix: netip.MustParsePrefix("fd42:1:0:1::/64"), Chain: "nat-b"}, {Prefix: netip.MustParsePrefix("ff00::/8"), Chain: "nat-c"}}
	els, err = VmapElements(model.VmapNATFrom6, es6)
	if err != nil || len(els) != 5 || len(els[0].Key) != 16 {
		t.Fatalf("%d elements (%v), want 5 of 16 bytes", len(els), err)
	}
	if got, ok := DecodeVmapElements(model.VmapNATFrom6, els); !ok || !slices.Equal(got, es6) {
		t.Errorf("%v reads back as %v (ok %v)", es6, got, ok)
	}
	if _, err := VmapElements(model.VmapNATFrom6, es); err == nil {
		t.Error("IPv4 prefixes in nat_from6: want an error")
	}
	if _, err := VmapElements(model.VmapNATFrom, es6); err == nil {
		t.Error("IPv6 prefixes in nat_from: want an error")
	}
	// As google/nftables reads an element from the kernel: the verdict
	// left as the nested attributes in Val (bytes as the kernel sent them
	// for "gb2" : jump to-n02).
	val, _ := hex.DecodeString("08000100fffffffd0b000200746f2d6e30320000")
	if got, ok := DecodeVmapElements(model.VmapForwardTo, []nftables.SetElement{{Key: ifname("gb2"), Val: val}}); !ok ||
		!slices.Equal(got, []model.VmapElement{{Name: "gb2", Chain: "to-n02"}}) {
		t.Errorf("an element as the kernel lists it reads back as %v (ok %v)", got, ok)
	}
	// What guestnet never writes is not read as its own.
	jump := &expr.Verdict{Kind: expr.VerdictJump, Chain: "to-a"}
	for name, bad := range map[string][]nftables.SetElement{
		model.VmapForwardTo: {{Key: ifname("gb0"), VerdictData: &expr.Verdict{Kind: expr.VerdictAccept}}},
		model.VmapInputFrom: {{Key: []byte("gb0"), VerdictData: jump}},
		model.VmapDNSTo:     {{Key: []byte{10, 0, 0, 1}}},
		model.VmapDNSTo6:    {{Key: []byte{10, 0, 0, 1}, VerdictData: jump}}, // an IPv4 key in the IPv6 map
		model.VmapNATFrom:   {{Key: []byte{10, 0, 0, 1}, VerdictData: jump}, {Key: []byte{10, 0, 0, 4}, IntervalEnd: true}},
		"other":             {{Key: ifname("gb0"), VerdictData: jump}},
	} {
		if got, ok := DecodeVmapElements(name, bad); ok {
			t.Errorf("map %s: %v read back as guestnet's %v", name, bad, got)
		}
	}
	if _, err := VmapElements(model.VmapDNSTo, []model.VmapElement{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Chain: "x"}}); err == nil {
		t.Error("a prefix in dns_to (single addresses): want an error")
	}
	if _, err := VmapSet(nil, "forwards"); err == nil {
		t.Error("VmapSet of a map that is no verdict map: want an error")
	}
}

// TestDispatchRuleCodec: each dispatch verdict encodes as nft writes it
// (the key's load, an nfproto check before an address, a lookup into the
// verdict register) and decodes back; the same lookup from another load
// is not guestnet's.
func TestDispatchRuleCodec(t *testing.T) {
	for _, v := range model.Vmaps {
		r := model.Rule{Verdict: v.Dispatch}
		exprs, err := Encode(r, true)
		if err != nil {
			t.Fatal(err)
		}
		l, ok := exprs[len(exprs)-1].(*expr.Lookup)
		if !ok || l.SetName != v.Name || !l.IsDestRegSet || l.DestRegister != 0 {
			t.Errorf("%s: last expression %#v, want a lookup in %s into the verdict register", r, exprs[len(exprs)-1], v.Name)
		}
		if got, ok := Decode(exprs, ""); !ok || got.String() != r.String() {
			t.Errorf("%s decodes to %s (ok %v)", r, got, ok)
		}
		if _, err := Encode(r, false); err == nil {
			t.Errorf("%s encoded for table ip filter", r)
		}
	}
	exprs, _ := Encode(model.Rule{Verdict: model.DispatchForwardTo}, true)
	exprs[0] = &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1} // iifname looked up in forward_to (keyed on oifname)
	if got, ok := Decode(exprs, ""); ok {
		t.Errorf("a forward_to lookup keyed on iifname decoded as %s", got)
	}
}
