package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A peer whose address lies in one of this host's networks is a guest's
// address: whichever guest takes it would be accepted as a BGP peer and
// could announce routes (a careless operator, or a typo of 10.10 for
// 10.71). Guests are never peers: the spec is refused, naming the field.
func TestBGPPeerInsideNetwork(t *testing.T) {
	f := filepath.Join(t.TempDir(), "host.yaml")
	os.WriteFile(f, []byte(`bgp:
  asn: 65001
  peers:
    - {address: 10.10.0.2, asn: 65002}
    - {address: 10.71.0.7, asn: 65003}
networks:
  dmz: {mode: routed, bridge: grt0, ipv4: 10.71.0.1/24}
`), 0o644)
	_, err := Load(f)
	want := f + ":5: bgp.peers[1].address: 10.71.0.7 is inside network dmz (10.71.0.0/24): a guest's address; guests are never BGP peers"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}
