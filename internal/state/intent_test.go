package state

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestIntent: the intent names everything of both sides, takes the
// target's definitions, keeps ForwardingWas "0" from either side and drops
// the ruleset mark; neither side is changed.
func TestIntent(t *testing.T) {
	up := &Uplink{Name: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("172.16.5.10/24")}}
	f1 := Float{Link: "eth0", Addr: netip.MustParsePrefix("198.51.100.10/32")}
	f2 := Float{Link: "eth0", Addr: netip.MustParsePrefix("198.51.100.11/32")}
	bind := model.PortBind{MAC: "52:54:00:00:00:01"}
	old := State{
		Networks: map[string]Net{
			"gone": {Network: model.Network{Name: "gone", Bridge: "g0"}, Floats: []Float{f1}},
			"lan":  {Network: model.Network{Name: "lan", Bridge: "br0", MTU: 1500}, Uplink: up, Ports: []string{"tap0"}, Binds: map[string]model.PortBind{"tap0": bind}},
		},
		ForwardingWas: "0",
		Nft:           &NftMark{Gen: 3, Sum: "x"},
	}
	target := State{
		Networks: map[string]Net{
			"lan": {Network: model.Network{Name: "lan", Bridge: "br0", MTU: 9000}, Floats: []Float{f2}},
			"new": {Network: model.Network{Name: "new", Bridge: "n0"}},
		},
		Nft: &NftMark{Gen: 4, Sum: "y"},
	}
	oldCopy, targetCopy := old.Clone(), target.Clone()
	in := Intent(old, target)
	want := State{
		Networks: map[string]Net{
			"gone": old.Networks["gone"],
			"lan": {Network: model.Network{Name: "lan", Bridge: "br0", MTU: 9000}, Uplink: up, Ports: []string{"tap0"},
				Binds: map[string]model.PortBind{"tap0": bind}, Floats: []Float{f2}},
			"new": target.Networks["new"],
		},
		ForwardingWas: "0",
	}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("intent:\n%+v\nwant\n%+v", in, want)
	}
	if !reflect.DeepEqual(old, oldCopy) || !reflect.DeepEqual(target, targetCopy) {
		t.Error("Intent changed its arguments")
	}
	in.Networks["lan"].Ports[0] = "changed"
	if old.Networks["lan"].Ports[0] != "tap0" {
		t.Error("the intent shares its ports with old")
	}
	if got := Intent(State{}, State{ForwardingWas: "0"}); got.ForwardingWas != "0" || got.Networks != nil {
		t.Errorf("turning forwarding on: %+v", got)
	}
}

// TestIntentIPv6Sysctls: Forwarding6Was "0" from either side, and every
// interface either side raised, with the old side's value (the original).
func TestIntentIPv6Sysctls(t *testing.T) {
	old := State{Forwarding6Was: "0", AcceptRAWas: map[string]string{"eth0": "1"}}
	target := State{AcceptRAWas: map[string]string{"eth0": "2", "eth1": "1"}}
	in := Intent(old, target)
	if in.Forwarding6Was != "0" || !reflect.DeepEqual(in.AcceptRAWas, map[string]string{"eth0": "1", "eth1": "1"}) {
		t.Errorf("intent: forwarding6_was %q accept_ra_was %v", in.Forwarding6Was, in.AcceptRAWas)
	}
	if in := Intent(State{}, State{Forwarding6Was: "0"}); in.Forwarding6Was != "0" || in.AcceptRAWas != nil {
		t.Errorf("intent of a first apply: %+v", in)
	}
	c := old.Clone()
	c.AcceptRAWas["eth9"] = "1"
	if _, ok := old.AcceptRAWas["eth9"]; ok {
		t.Error("Clone shares AcceptRAWas")
	}
}
