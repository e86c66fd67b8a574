package spec

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// The contract example loads, with its defaults filled.
func TestBGPSection(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "host.yaml")
	os.WriteFile(f, []byte(`bgp:
  asn: 65001
  router_id: 10.10.0.1
  listen: [10.10.0.1]
  peers:
    - {address: 10.10.0.2, asn: 65002}
    - {address: 10.10.0.254, asn: 65100, hold: 30s}
networks:
  dmz: {mode: routed, bridge: grt0, ipv4: 10.71.0.1/24}
  quiet: {mode: routed, bridge: grt1, ipv4: 10.72.0.1/24, announce: false}
`), 0o644)
	s, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	b := s.BGP
	if b == nil {
		t.Fatal("no bgp section")
	}
	if b.ASN != 65001 || b.RouterID != netip.MustParseAddr("10.10.0.1") || b.Port != 179 || len(b.Listen) != 1 {
		t.Errorf("bgp = %+v", b.BGP)
	}
	if len(b.Peers) != 2 || b.Peers[0].Hold != 9*time.Second || b.Peers[1].Hold != 30*time.Second || b.Peers[1].ASN != 65100 {
		t.Errorf("peers = %+v", b.Peers)
	}
	if !slices.Equal(b.Import, model.DefaultImport) {
		t.Errorf("import = %v, want the private ranges", b.Import)
	}
	if s.Networks[0].NoAnnounce || !s.Networks[1].NoAnnounce {
		t.Errorf("announce: dmz %v quiet %v", !s.Networks[0].NoAnnounce, !s.Networks[1].NoAnnounce)
	}
	if got := model.Announced(s.Models()); len(got) != 1 || got[0] != netip.MustParsePrefix("10.71.0.0/24") {
		t.Errorf("announced %v, want dmz's subnet only", got)
	}
}

// An explicit empty import installs nothing; two files with a bgp section
// are refused, naming both.
func TestBGPImportEmptyAndTwice(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("bgp:\n  asn: 65001\n  peers: [{address: 10.10.0.2, asn: 65002}]\n  import: []\n"), 0o644)
	s, err := Load(filepath.Join(dir, "a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.BGP.Import == nil || len(s.BGP.Import) != 0 {
		t.Errorf("import = %#v, want an empty list", s.BGP.Import)
	}
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte("bgp:\n  asn: 65003\n  peers: [{address: 10.10.0.2, asn: 65002}]\n"), 0o644)
	_, err = Load(dir)
	want := filepath.Join(dir, "b.yaml") + ":1: bgp: a second bgp section (the first is at " + filepath.Join(dir, "a.yaml") + ":1): a host has one speaker"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

// IPv6 peers, listen addresses and import prefixes load; the default
// import covers the unique local range; an IPv6-only routed network is
// announced by its prefix.
func TestBGPSectionIPv6(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "host.yaml")
	os.WriteFile(f, []byte(`bgp:
  asn: 65001
  router_id: 10.10.0.1
  listen: [10.10.0.1, "fd00:10::1"]
  peers:
    - {address: "fd00:10::2", asn: 65002}
    - {address: 10.10.0.2, asn: 65003}
networks:
  dmz: {mode: routed, bridge: grt0, ipv6: "2001:db8:71::1/64"}
`), 0o644)
	s, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	b := s.BGP
	if len(b.Peers) != 2 || b.Peers[0].Address != netip.MustParseAddr("fd00:10::2") || len(b.Listen) != 2 {
		t.Errorf("bgp = %+v", b.BGP)
	}
	if !slices.Contains(b.Import, netip.MustParsePrefix("fc00::/7")) || !slices.Contains(b.Import, netip.MustParsePrefix("10.0.0.0/8")) {
		t.Errorf("import = %v, want the private ranges of both families", b.Import)
	}
	if got := model.Announced(s.Models()); len(got) != 1 || got[0] != netip.MustParsePrefix("2001:db8:71::/64") {
		t.Errorf("announced %v, want dmz's IPv6 prefix", got)
	}
	os.WriteFile(f, []byte("bgp:\n  asn: 65001\n  peers: [{address: \"fd00:10::2\", asn: 65002}, {address: 10.10.0.2, asn: 65003}]\n  import: [\"2001:db8::/32\", 10.0.0.0/8]\n"), 0o644)
	s, err = Load(f)
	if err != nil {
		t.Fatalf("a mixed section without router_id (an IPv4 peer gives it): %v", err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("10.0.0.0/8")}; !slices.Equal(s.BGP.Import, want) {
		t.Errorf("import = %v, want %v", s.BGP.Import, want)
	}
}
