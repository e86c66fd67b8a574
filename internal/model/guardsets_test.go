package model

import (
	"net/netip"
	"slices"
	"testing"
)

// TestElemsOf: bindings make their ports, MACs and port . MAC pairs; a
// binding to any MAC owns none; a diff touches only what changed.
func TestElemsOf(t *testing.T) {
	ip := netip.MustParseAddr
	binds := []Bind{
		{Port: "tap2", MAC: "52:54:00:00:00:02", IP: ip("10.0.0.2")},
		{Port: "tap1", MAC: "52:54:00:00:00:01", IP: ip("10.0.0.1")},
		{Port: "tap1", MAC: "52:54:00:00:00:01", IP: netip.IPv4Unspecified()},
		{Port: "tap3", IP: ip("10.0.0.3")}, // any MAC
	}
	e := ElemsOf(binds)
	if want := []string{"tap1", "tap2", "tap3"}; !slices.Equal(e.Ports, want) {
		t.Errorf("ports %v, want %v", e.Ports, want)
	}
	if want := []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}; !slices.Equal(e.MACs, want) {
		t.Errorf("MACs %v, want %v", e.MACs, want)
	}
	if want := []PortMAC{{"tap1", "52:54:00:00:00:01"}, {"tap2", "52:54:00:00:00:02"}}; !slices.Equal(e.PortMACs, want) {
		t.Errorf("port MACs %v, want %v", e.PortMACs, want)
	}
	if e.Len() != 3+4+2+2+2 { // and the ports of the MACs (set mac_ports)
		t.Errorf("Len %d", e.Len())
	}
	add, del := DiffElems(e, ElemsOf(binds[1:3])) // tap2 and tap3 go
	if add.Len() != 0 || !slices.Equal(del.Ports, []string{"tap2", "tap3"}) || !slices.Equal(del.MACs, []string{"52:54:00:00:00:02"}) ||
		!slices.Equal(del.PortMACs, []PortMAC{{"tap2", "52:54:00:00:00:02"}}) || len(del.Binds) != 2 {
		t.Errorf("diff: add %+v del %+v", add, del)
	}
}

// TestSpoofedNamesTheMACsOwner: a drop of a MAC bound to another port says
// whose it is; a drop of the port's own MAC (a wrong address) does not.
func TestSpoofedNamesTheMACsOwner(t *testing.T) {
	ip := netip.MustParseAddr
	g := Guard{
		PortMACs:        []PortMAC{{"vgv", "02:00:00:00:00:01"}},
		LearnedPortMACs: []PortMAC{{"vga", "02:00:00:00:00:02"}},
		Spoofed: []Spoofed{
			{Bind: Bind{Port: "vga", MAC: "02:00:00:00:00:01", IP: ip("0.0.0.0")}, Packets: 2},
			{Bind: Bind{Port: "vga", MAC: "02:00:00:00:00:02", IP: ip("10.0.0.9")}, Packets: 1},
		},
	}
	got := g.SpoofedBy("vga")
	if len(got) != 2 || !slices.Equal(got[0].MACBoundTo, []string{"vgv"}) || len(got[1].MACBoundTo) != 0 {
		t.Fatalf("SpoofedBy: %+v", got)
	}
	if want := "2 frames from MAC 02:00:00:00:00:01, address 0.0.0.0 (DHCP or an ARP probe) (last 0s ago); the MAC is bound to port vgv"; got[0].Summary() != want {
		t.Errorf("summary %q, want %q", got[0].Summary(), want)
	}
}
