package state

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	p := Path(dir, "lab1")
	if p != filepath.Join(dir, "netns", "lab1", "state.json") {
		t.Errorf("path %s", p)
	}
	empty, err := Load(p)
	if err != nil || len(empty.Networks) != 0 {
		t.Fatalf("missing file: %+v %v", empty, err)
	}
	s := State{
		Networks: map[string]Net{"lan": {
			Network: model.Network{Name: "lan", Mode: model.Bridge, Bridge: "br0", Uplink: "eth0"},
			Uplink: &Uplink{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("172.16.5.10/24")},
				Brd:    map[netip.Prefix]netip.Addr{netip.MustParsePrefix("172.16.5.10/24"): netip.MustParseAddr("172.16.5.255")},
				Routes: []model.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("172.16.5.1"), Dev: "eth0", Proto: 3}}},
		}},
		ForwardingWas: "0",
		Nft:           &NftMark{Gen: 7, Sum: "abc"},
	}
	if err := Save(p, s); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v (%v)", got, s, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(p)); len(left) != 1 {
		t.Errorf("files beside the state (temp files left?): %v", left)
	}
	os.WriteFile(p, []byte("{not json"), 0o644)
	if _, err := Load(p); err == nil {
		t.Error("a corrupt state file loaded")
	}
}

// TestLoadsIndentedState: Save writes compact JSON now; a state file an
// earlier guestnet wrote indented must still load as the same state.
func TestLoadsIndentedState(t *testing.T) {
	dir := t.TempDir()
	s := State{ForwardingWas: "0", Nft: &NftMark{Gen: 7, Sum: "abc"}, Networks: map[string]Net{
		"lab": {Network: model.Network{Name: "lab", Mode: model.NAT, Bridge: "gn0", IPv4: netip.MustParsePrefix("10.0.0.1/24")},
			Ports: []string{"tap0"}},
	}}
	compact := filepath.Join(dir, "compact.json")
	if err := Save(compact, s); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(compact)
	if n := len(data); n == 0 || data[n-1] != '\n' || bytes.IndexByte(data[:n-1], '\n') >= 0 {
		t.Errorf("saved state is not one line of JSON: %q", data)
	}
	indented := filepath.Join(dir, "indented.json")
	old, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(indented, append(old, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{compact, indented} {
		got, err := Load(p)
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Errorf("%s: loaded %+v, %v\nwant %+v", filepath.Base(p), got, err, s)
		}
	}
}
