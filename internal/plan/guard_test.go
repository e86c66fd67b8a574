package plan_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/state"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func guardNet(name string, mode model.Mode, dhcp *model.DHCP) model.Network {
	return model.Network{Name: name, Mode: mode, Bridge: "gn-" + name, IPv4: pfx("10.99.0.1/24"), DHCP: dhcp}
}

// TestWantGuard: what each kind of binding lets a port send from.
func TestWantGuard(t *testing.T) {
	withDHCP := &model.DHCP{Hosts: []model.StaticHost{{MAC: "52:54:00:00:00:aa", IP: ip("10.99.0.10")}}}
	zero := netip.IPv4Unspecified()
	cases := []struct {
		name string
		net  model.Network
		bind model.PortBind
		want []model.Bind
	}{
		{"addresses and MAC", guardNet("a", model.NAT, nil), model.PortBind{IPs: []netip.Addr{ip("10.99.0.20"), ip("10.99.0.21")}, MAC: "52:54:00:00:00:20"},
			[]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:20", IP: zero}, {Port: "tap0", MAC: "52:54:00:00:00:20", IP: ip("10.99.0.20")}, {Port: "tap0", MAC: "52:54:00:00:00:20", IP: ip("10.99.0.21")}}},
		{"address, any MAC", guardNet("a", model.Routed, nil), model.PortBind{IPs: []netip.Addr{ip("10.99.0.20")}},
			[]model.Bind{{Port: "tap0", IP: zero}, {Port: "tap0", IP: ip("10.99.0.20")}}},
		{"MAC of a static host", guardNet("a", model.NAT, withDHCP), model.PortBind{MAC: "52:54:00:00:00:aa"},
			[]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:aa", IP: zero}, {Port: "tap0", MAC: "52:54:00:00:00:aa", IP: ip("10.99.0.10")}}},
		{"MAC alone with DHCP: DHCP only until a lease", guardNet("a", model.NAT, withDHCP), model.PortBind{MAC: "52:54:00:00:00:bb"},
			[]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:bb", IP: zero}}},
		{"MAC alone without DHCP: any address", guardNet("a", model.Isolated, nil), model.PortBind{MAC: "52:54:00:00:00:bb"},
			[]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:bb"}}},
	}
	for _, c := range cases {
		st := map[string]state.Net{c.net.Name: {Ports: []string{"tap0", "tap1"}, Binds: map[string]model.PortBind{"tap0": c.bind}}}
		g := plan.WantGuard([]model.Network{c.net}, st)
		if !g.On || !slices.Equal(g.Bound, c.want) || !slices.Equal(g.Ports, []string{"tap0"}) {
			t.Errorf("%s: got on=%v ports=%v %v, want %v", c.name, g.On, g.Ports, g.Bound, c.want)
		}
		// The port owns its MAC; a binding to any MAC owns none.
		var macs []string
		var owned []model.PortMAC
		if c.bind.MAC != "" {
			macs, owned = []string{c.bind.MAC}, []model.PortMAC{{Port: "tap0", MAC: c.bind.MAC}}
		}
		if !slices.Equal(g.MACs, macs) || !slices.Equal(g.PortMACs, owned) {
			t.Errorf("%s: MACs %v owned %v, want %v %v", c.name, g.MACs, g.PortMACs, macs, owned)
		}
	}
	// No table for networks without anti-spoofing.
	off := guardNet("b", model.NAT, nil)
	off.AllowSpoofing = true
	for _, n := range []model.Network{off, guardNet("c", model.Open, nil)} {
		st := map[string]state.Net{n.Name: {Ports: []string{"tap0"}, Binds: map[string]model.PortBind{"tap0": {MAC: "52:54:00:00:00:01"}}}}
		if g := plan.WantGuard([]model.Network{n}, st); g.On || len(g.Bound) > 0 {
			t.Errorf("%s (mode %s, allow_spoofing %v): got a guard %+v", n.Name, n.Mode, n.AllowSpoofing, g)
		}
	}
}

// TestGuardElementUpdates: binding a port changes elements only, and a
// tampered table is rewritten whole; each runs on the fake kernel.
func TestGuardElementUpdates(t *testing.T) {
	n := guardNet("a", model.NAT, nil)
	k := &fake.Kernel{Host: baseHost()}
	st := state.State{Networks: map[string]state.Net{"a": {Network: n, Ports: []string{"tap0"}}}}
	run := func(want string) {
		t.Helper()
		acts := plan.GuardFor(st, k.Host)
		var got []string
		for _, a := range acts {
			got = append(got, a.String())
		}
		if strings.Join(got, "\n") != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if err := apply.Run(k, acts); err != nil {
			t.Fatal(err)
		}
		if again := plan.GuardFor(st, k.Host); len(again) != 0 {
			t.Errorf("not converged: %v", again)
		}
	}
	run("nft -f - (create table bridge guestnet: anti-spoofing of bound guest ports, 0 bindings)")
	net := st.Networks["a"]
	net.Binds = map[string]model.PortBind{"tap0": {IPs: []netip.Addr{ip("10.99.0.20")}, MAC: "52:54:00:00:00:20"}}
	st.Networks["a"] = net
	// The port, its two bindings, its MAC, and the MAC's port.
	run("nft add/delete element bridge guestnet ports,bound,macs,port_macs,guests6,prefixes6,ports6,bound6,held6,mac_ports,vxlan_ports,vxlan_gateways,vxlan_macs (6 added, 0 deleted)")
	if want := []model.PortMAC{{Port: "tap0", MAC: "52:54:00:00:00:20"}}; !slices.Equal(k.Host.Guard.PortMACs, want) || !slices.Equal(k.Host.Guard.MACs, []string{"52:54:00:00:00:20"}) {
		t.Errorf("MACs owned: %v %v, want %v", k.Host.Guard.MACs, k.Host.Guard.PortMACs, want)
	}
	k.Host.Guard.Broken = true
	run("nft -f - (create table bridge guestnet: anti-spoofing of bound guest ports, 2 bindings)")
	st.Networks = map[string]state.Net{}
	run("nft delete table bridge guestnet")
}
