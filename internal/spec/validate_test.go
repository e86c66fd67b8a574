package spec

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// everyPair is Validate's cross-network check as it was written first:
// every network against every earlier one. TestValidateMatchesEveryPair
// holds the indexed Validate to it.
func everyPair(nets []Network) error {
	var errs []error
	for i := range nets {
		for j := range i {
			if err := pairError(&nets[i], &nets[j]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// TestValidateMatchesEveryPair draws specs whose names, bridges, uplinks
// and subnets collide often (few names, nested and equal subnets of many
// lengths, bridge-mode networks that may overlap) and checks that Validate
// reports exactly the errors, in the same order, that comparing every pair
// does.
func TestValidateMatchesEveryPair(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 1))
	modes := []model.Mode{model.NAT, model.Routed, model.Isolated, model.Bridge, model.Open}
	bases := []string{"10.0.0.0", "10.0.4.0", "10.1.0.0", "172.16.0.0", "10.0.5.128"}
	for round := range 2000 {
		nets := make([]Network, 1+r.IntN(12))
		for i := range nets {
			n := &nets[i]
			n.File, n.Line = "spec.yaml", i+1
			n.Name = fmt.Sprintf("n%d", r.IntN(len(nets)+2))
			n.Mode = modes[r.IntN(len(modes))]
			n.Bridge = fmt.Sprintf("if%d", r.IntN(2*len(nets)+2))
			if r.IntN(3) == 0 {
				n.Uplink = fmt.Sprintf("if%d", r.IntN(2*len(nets)+2))
			}
			if r.IntN(5) > 0 {
				base := netip.MustParseAddr(bases[r.IntN(len(bases))])
				p := netip.PrefixFrom(base, 8+r.IntN(23)).Masked()
				n.IPv4 = netip.PrefixFrom(p.Addr().Next(), p.Bits())
			}
		}
		want, got := everyPair(nets), (&Spec{Networks: nets}).Validate()
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Fatalf("round %d: %+v\nValidate: %v\nevery pair: %v", round, nets, got, want)
		}
	}
}

// TestValidateFindsConflicts pins the conflicts one by one, so that the
// comparison above cannot pass by both sides missing one.
func TestValidateFindsConflicts(t *testing.T) {
	nat := func(name, br, cidr string) Network {
		n := Network{File: "f.yaml", Line: 1}
		n.Name, n.Bridge, n.Mode = name, br, model.NAT
		if cidr != "" {
			n.IPv4 = netip.MustParsePrefix(cidr)
		}
		return n
	}
	up := func(n Network, uplink string) Network {
		n.Mode, n.Uplink, n.IPv4 = model.Bridge, uplink, netip.Prefix{}
		return n
	}
	for _, c := range []struct {
		name string
		nets []Network
		want string
	}{
		{"same name", []Network{nat("a", "b1", ""), nat("a", "b2", "")}, "networks.a: declared twice"},
		{"same bridge", []Network{nat("a", "b1", ""), nat("b", "b1", "")}, `networks.b.bridge: "b1" is also the bridge`},
		{"same uplink", []Network{up(nat("a", "b1", ""), "eth0"), up(nat("b", "b2", ""), "eth0")}, `networks.b.uplink: "eth0" is also the uplink`},
		{"uplink is a bridge", []Network{nat("a", "eth0", ""), up(nat("b", "b2", ""), "eth0")}, `networks.b.uplink: "eth0" is the bridge of network a`},
		{"bridge is an uplink", []Network{up(nat("a", "b1", ""), "eth0"), nat("b", "eth0", "")}, `networks.b.bridge: "eth0" is the uplink of network a`},
		{"wider after", []Network{nat("a", "b1", "10.0.5.1/24"), nat("b", "b2", "10.0.0.1/16")}, "networks.b.ipv4: subnet 10.0.0.0/16 overlaps 10.0.5.0/24"},
		{"narrower after", []Network{nat("a", "b1", "10.0.0.1/16"), nat("b", "b2", "10.0.5.1/24")}, "networks.b.ipv4: subnet 10.0.5.0/24 overlaps 10.0.0.0/16"},
	} {
		err := (&Spec{Networks: c.nets}).Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	ok := []Network{nat("a", "b1", "10.0.0.1/24"), nat("b", "b2", "10.0.1.1/24"), nat("c", "b3", "10.1.0.1/16")}
	if err := (&Spec{Networks: ok}).Validate(); err != nil {
		t.Errorf("disjoint networks: %v", err)
	}
}

// TestForwardTwice: a host port forwarded twice in one network is an
// error naming both forwards; the same port over another protocol is not.
func TestForwardTwice(t *testing.T) {
	dir := t.TempDir()
	write := func(fw string) error {
		p := dir + "/spec.yaml"
		text := "networks:\n  a: {mode: nat, bridge: b1, ipv4: 10.0.0.1/24, forwards: [" + fw + "]}\n"
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		return err
	}
	err := write(`{proto: tcp, port: 80, to: "10.0.0.10"}, {proto: udp, port: 80, to: "10.0.0.10"}, {proto: tcp, port: 80, to: "10.0.0.11"}`)
	if err == nil || !strings.Contains(err.Error(), "networks.a.forwards[2]: tcp 80 is already forwarded by forwards[0]") {
		t.Errorf("tcp 80 twice: %v", err)
	}
	if err := write(`{proto: tcp, port: 80, to: "10.0.0.10"}, {proto: udp, port: 80, to: "10.0.0.10"}`); err != nil {
		t.Errorf("tcp and udp 80: %v", err)
	}
}

// BenchmarkLoadThousand is spec.Load of 1,000 NAT networks with 10,000
// forwards, as bench/apply's no-op applies it: YAML decoding, each
// network's checks and the cross-network validation.
func BenchmarkLoadThousand(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("networks:\n")
	port := 10000
	for i := range 1000 {
		fmt.Fprintf(&sb, "  n%d: {mode: nat, bridge: gn%d, ipv4: 10.%d.%d.1/24, forwards: [", i, i, 100+i/256, i%256)
		for j := range 10 {
			if j > 0 {
				sb.WriteString(", ")
			}
			fmt.Fprintf(&sb, "{proto: tcp, port: %d, to: \"10.%d.%d.10:22\"}", port, 100+i/256, i%256)
			port++
		}
		sb.WriteString("]}\n")
	}
	p := b.TempDir() + "/spec.yaml"
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if s, err := Load(p); err != nil || len(s.Networks) != 1000 {
			b.Fatal(err)
		}
	}
}
