package evpn

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// A guest sending from random source MACs: its port announces at most
// model.EVPNMaxMACsPerPort of them, its own MAC (announced before the
// flood) and a leased one among them, and the other ports are not
// touched.
func TestDecideCapsMACsPerPort(t *testing.T) {
	n := testNet(vtepA)
	own, leased := "52:54:00:ff:ff:ff", "52:54:00:ff:ff:fe"
	local := []Guest{
		{VNI: 6000, MAC: mac(1), Port: 7},
		{VNI: 6000, MAC: own, Port: 9},
		{VNI: 6000, MAC: leased, Port: 9, IPs: []netip.Addr{ip(5)}},
	}
	for i := range 5000 {
		local = append(local, Guest{VNI: 6000, MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16, i>>8&0xff, i&0xff), Port: 9})
	}
	in := Input{
		Networks:  []Network{n},
		Local:     local,
		Announced: model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: vtepA, MAC: own, Seq: 2}}},
	}
	d := Decide(in)
	announced := map[string]uint32{}
	for _, r := range d.Announce.MACs {
		if !r.IP.IsValid() {
			announced[r.MAC] = r.Seq
		}
	}
	if got, want := len(announced), model.EVPNMaxMACsPerPort+1; got != want {
		t.Fatalf("announced %d MACs, want %d (the bound of port 9 and port 7's one)", got, want)
	}
	if got, want := len(d.Unannounced), 5002-model.EVPNMaxMACsPerPort; got != want {
		t.Fatalf("%d MACs left out, want %d", got, want)
	}
	for _, m := range []string{mac(1), own, leased} {
		if _, ok := announced[m]; !ok {
			t.Fatalf("%s is not announced", m)
		}
	}
	if announced[own] != 2 {
		t.Fatalf("the port's own MAC is announced with seq %d, want its 2", announced[own])
	}
	// The next pass makes the same choice.
	in.Announced = d.Announce
	if d2 := Decide(in); fmt.Sprint(d2.Announce) != fmt.Sprint(d.Announce) {
		t.Fatal("a second pass announces another set")
	}
	// Below the bound nothing is left out.
	in.Local = local[:model.EVPNMaxMACsPerPort+1]
	if d := Decide(in); len(d.Unannounced) != 0 {
		t.Fatalf("%d MACs left out below the bound", len(d.Unannounced))
	}
}
