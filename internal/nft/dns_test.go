package nft

import (
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// TestDNSOnlyFromBridge: for every network with dns: (all modes with a
// gateway address, guest_to_host: all included), its gateway's UDP and TCP
// 53 is dropped unless it arrives on its bridge or lo: the input chain
// first sends UDP and TCP 53 by destination through dns_to (before its
// dispatch to any network's accepts), and dns_to sends the gateway to the
// network's chain of one drop. Each rule survives the trip to expressions
// and back (observe reads what apply wrote).
func TestDNSOnlyFromBridge(t *testing.T) {
	s, err := spec.Load("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Render(s.Models(), model.Host{})
	if err != nil {
		t.Fatal(err)
	}
	input, _ := rs.Chain("input")
	var got []string
	for _, r := range input.Rules {
		got = append(got, r.String())
	}
	want := []string{"udp dport 53 ip daddr vmap @dns_to", "tcp dport 53 ip daddr vmap @dns_to",
		"udp dport 53 ip6 daddr vmap @dns_to6", "tcp dport 53 ip6 daddr vmap @dns_to6", "iifname vmap @input_from"}
	if !slices.Equal(got, want) {
		t.Errorf("input chain:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	dnsTo, _ := rs.Vmap(model.VmapDNSTo)
	dnsTo6, _ := rs.Vmap(model.VmapDNSTo6)
	if len(dnsTo6.Elements) == 0 {
		t.Fatal("dns_to6 is empty: testdata/dns.yaml has no network with ipv6 and dns")
	}
	var rules []model.Rule
	for _, n := range s.Models() {
		missing := false
		for _, a := range n.Addrs() {
			m, name := dnsTo, model.VmapDNSTo
			if a.Addr().Is6() {
				m, name = dnsTo6, model.VmapDNSTo6
			}
			i := slices.IndexFunc(m.Elements, func(e model.VmapElement) bool { return e.Prefix == model.HostPrefix(a.Addr()) })
			if n.DNS == nil {
				if i >= 0 {
					t.Errorf("network %s has no dns: but %s holds %s", n.Name, name, a.Addr())
				}
				continue
			}
			if i < 0 || m.Elements[i].Chain != model.ChainDNS(n.Name) {
				t.Errorf("network %s: %s has no element %s : jump %s (%v)", n.Name, name, a.Addr(), model.ChainDNS(n.Name), m.Elements)
				missing = true
			}
		}
		if n.DNS == nil || missing {
			continue
		}
		c, _ := rs.Chain(model.ChainDNS(n.Name))
		want := `iifname != "` + n.Bridge + `" iifname != "lo" drop comment "` + n.Name + `"`
		if len(c.Rules) != 1 || c.Rules[0].String() != want {
			t.Errorf("network %s (mode %s, guest_to_host %q): chain %s holds %v, want %q", n.Name, n.Mode, n.GuestToHost, c.Name, c.Rules, want)
		}
		rules = append(rules, c.Rules...)
	}
	for _, r := range append(rules, input.Rules...) {
		exprs, err := Encode(r, true)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := Decode(exprs, r.Network); !ok || got.String() != r.String() {
			t.Errorf("round trip of %s: got %s (ok=%v)", r, got, ok)
		}
	}
}
