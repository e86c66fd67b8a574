package spec

import (
	"net/netip"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
)

// TestStretchFile loads a spec shared by the hosts of a cluster: VNI,
// port, MTU and the leases section get their defaults, and EVPN is on.
func TestStretchFile(t *testing.T) {
	s, err := Load("testdata/good/stretch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]model.Network{}
	for _, n := range s.Models() {
		byName[n.Name] = n
	}
	st := byName["stretch"]
	if !st.Stretched() || st.VXLAN.VNI != 6000 || st.VXLAN.Port != model.VXLANPort || st.VXLAN.Local.IsValid() {
		t.Errorf("stretch.vxlan = %+v", st.VXLAN)
	}
	if st.MTU != model.StretchMTU || st.DHCP.MTU != model.StretchMTU {
		t.Errorf("stretch: mtu %d, dhcp mtu %d, want %d (VXLAN's overhead off a 1500 underlay)", st.MTU, st.DHCP.MTU, model.StretchMTU)
	}
	lab := byName["lab"]
	if lab.VXLAN.Port != 4790 || lab.VXLAN.Local != netip.MustParseAddr("10.10.0.1") || lab.MTU != 1400 {
		t.Errorf("lab: %+v mtu %d", lab.VXLAN, lab.MTU)
	}
	if byName["local"].Stretched() || byName["local"].MTU != 0 {
		t.Errorf("local network got stretched settings: %+v", byName["local"])
	}
	if s.Leases == nil || len(s.Leases.Etcd) != 3 || s.Leases.Prefix != model.LeasePrefix || s.Leases.Block != model.LeaseBlockSize {
		t.Errorf("leases = %+v", s.Leases)
	}
	if !s.BGP.EVPN {
		t.Error("bgp.EVPN off with stretched networks")
	}
	if model.VXLANName(6000) != "gvx6000" || len(model.VXLANName(model.MaxVNI)) > 15 {
		t.Errorf("VXLANName: %q, %q", model.VXLANName(6000), model.VXLANName(model.MaxVNI))
	}
}
