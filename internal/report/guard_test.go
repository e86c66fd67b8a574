package report

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// TestStatusOtherDrops: frames of a bound port that were neither IPv4 nor
// ARP are listed under that port, text and JSON, with their ether type
// and count; another port's records stay under it.
func TestStatusOtherDrops(t *testing.T) {
	h := host
	h.Links = append(h.Links[:len(h.Links):len(h.Links)], model.Link{Name: "tap1", Master: "grt0"})
	h.Guard = model.Guard{On: true, Dropped: 15,
		DroppedOther: []model.OtherDrop{
			{Port: "tap0", MAC: "52:54:00:00:00:01", EtherType: "ip6", Packets: 12, Ago: 2 * time.Second},
			{Port: "tap0", MAC: "52:54:00:00:00:01", EtherType: "8021q", Packets: 2, Ago: 5 * time.Second},
			{Port: "tap1", MAC: "52:54:00:00:00:01", EtherType: "ip6", Packets: 1},
		}}
	h.Guard.SetDeclared([]model.Bind{{Port: "tap0", MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.99.1.10")}})
	s := MakeStatus(state.State{Networks: map[string]state.Net{"lab": {Network: lab}}}, h)
	text := s.Text()
	for _, want := range []string{
		"DROPPED 12 IPv6 frames (ether type ip6) from MAC 52:54:00:00:00:01 (last 2s ago): a bound port may send only IPv4, IPv6 and ARP",
		"DROPPED 2 VLAN-tagged frames (ether type 8021q) from MAC 52:54:00:00:00:01 (last 5s ago): a bound port may send only untagged IPv4 and ARP",
		"DROPPED 1 IPv6 frame (ether type ip6) from MAC 52:54:00:00:00:01 (last 0s ago): the MAC is bound to port tap0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	var back Status
	b, _ := json.Marshal(s)
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	byPort := map[string][]model.OtherDrop{}
	for _, pg := range back.Networks[0].Guard {
		byPort[pg.Port] = pg.DroppedOther
	}
	if got := byPort["tap0"]; len(got) != 2 || got[0].EtherType != "ip6" || got[0].Packets != 12 || got[1].EtherType != "8021q" {
		t.Errorf("JSON of tap0's other drops: %+v\n%s", got, b)
	}
	if got := byPort["tap1"]; len(got) != 1 || got[0].Port != "tap1" || strings.Join(got[0].MACBoundTo, ",") != "tap0" {
		t.Errorf("JSON of tap1's other drops: %+v", got)
	}
	if !strings.Contains(string(b), `"dropped_other":[{"port":"tap0","mac":"52:54:00:00:00:01","ether_type":"ip6","packets":12`) {
		t.Errorf("JSON does not name the ether type as nft does:\n%s", b)
	}
}

// TestStatusIPv6Unchecked: a port of a first-come network in neither
// guests6 (attach) nor guests6_learned (serve) is flagged, text and
// JSON; ports in either set are first-come and not flagged.
func TestStatusIPv6Unchecked(t *testing.T) {
	h := host
	h.Links = append(h.Links[:len(h.Links):len(h.Links)], model.Link{Name: "vnet7", Master: "grt0"}, model.Link{Name: "vnet8", Master: "grt0"})
	h.Guard = model.Guard{On: true, Guests6: []string{"tap0"}, LearnedGuests6: []string{"vnet8"}}
	s := MakeStatus(state.State{Networks: map[string]state.Net{"lab": {Network: lab}}}, h)
	if !lab.FirstCome() {
		t.Fatalf("the fixture network %+v is not first-come", lab)
	}
	got := map[string]PortGuard{}
	for _, pg := range s.Networks[0].Guard {
		got[pg.Port] = pg
	}
	if !got["vnet7"].IPv6Unchecked || got["vnet7"].FirstCome {
		t.Errorf("vnet7 (in no set): %+v, want IPv6 unchecked", got["vnet7"])
	}
	for _, p := range []string{"tap0", "vnet8"} {
		if got[p].IPv6Unchecked || !got[p].FirstCome {
			t.Errorf("%s: %+v, want first-come and checked", p, got[p])
		}
	}
	if text := s.Text(); !strings.Contains(text, "IPv6 UNCHECKED") || strings.Count(text, "IPv6 UNCHECKED") != 1 {
		t.Errorf("status text should flag vnet7 alone:\n%s", text)
	}
}
