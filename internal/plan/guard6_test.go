package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// TestBinds6: each family is bound by the addresses listed of it. IPv6
// addresses go to set bound6 (and make the port strict for IPv6); with no
// IPv4 address listed, IPv4 is bound as by --mac alone (DHCP only on a
// network with DHCP).
func TestBinds6(t *testing.T) {
	a := netip.MustParseAddr
	n := model.Network{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: netip.MustParsePrefix("10.99.0.1/24"),
		IPv6: netip.MustParsePrefix("fd42:99::1/64"), DHCP: &model.DHCP{}}
	g := WantGuard([]model.Network{n}, map[string]state.Net{"default": {Ports: []string{"vnet1", "vnet2"}, Binds: map[string]model.PortBind{
		"vnet1": {IPs: []netip.Addr{a("fd42:99::10")}, MAC: "52:54:00:00:00:01"},
		"vnet2": {IPs: []netip.Addr{a("10.99.0.20"), a("fd42:99::20")}},
	}}})
	var binds []string
	for _, b := range g.Bound {
		binds = append(binds, b.String())
	}
	want := []string{
		`"vnet1" . 52:54:00:00:00:01 . 0.0.0.0`,
		`"vnet1" . 52:54:00:00:00:01 . fd42:99::10`,
		`"vnet2" . 00:00:00:00:00:00-ff:ff:ff:ff:ff:ff . 0.0.0.0`,
		`"vnet2" . 00:00:00:00:00:00-ff:ff:ff:ff:ff:ff . 10.99.0.20`,
		`"vnet2" . 00:00:00:00:00:00-ff:ff:ff:ff:ff:ff . fd42:99::20`,
	}
	if !slices.Equal(binds, want) {
		t.Errorf("bindings:\n%s\nwant\n%s", strings.Join(binds, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(g.Ports6, []string{"vnet1", "vnet2"}) || !slices.Equal(g.Held6, []netip.Addr{a("fd42:99::10"), a("fd42:99::20")}) {
		t.Errorf("ports6 %v, held6 %v", g.Ports6, g.Held6)
	}
	if !slices.Equal(g.Guests6, []string{"vnet1", "vnet2"}) || len(g.Prefixes6) != 4 {
		t.Errorf("guests6 %v, prefixes6 %v", g.Guests6, g.Prefixes6)
	}
	v4, v6 := model.SplitBinds(g.Bound)
	if len(v4) != 3 || len(v6) != 2 {
		t.Errorf("split: %v | %v", v4, v6)
	}
}

// TestAttachIPv6Outside: attach --ip refuses an IPv6 address the port
// could never send from on a first-come network.
func TestAttachIPv6Outside(t *testing.T) {
	n := model.Network{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv6: netip.MustParsePrefix("fd42:99::1/64")}
	for ip, ok := range map[string]bool{"fd42:99::10": true, "fe80::10": true, "fd42:98::10": false, "10.99.0.10": true} {
		err := checkBind6(n, "vnet1", &model.PortBind{IPs: []netip.Addr{netip.MustParseAddr(ip)}})
		if (err == nil) != ok {
			t.Errorf("--ip %s: %v", ip, err)
		}
		if err != nil && !strings.Contains(err.Error(), "fd42:99::/64 or link-local") {
			t.Errorf("--ip %s: the error does not say what is allowed: %v", ip, err)
		}
	}
}
