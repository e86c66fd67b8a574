package ra

import (
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/guestnet/guestnet/internal/model"
)

var mac = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01}

// TestBuildBytes pins the RA of a routed /64 with DHCPv6, DNS and an MTU
// byte for byte (RFC 4861 §4.2, §4.6; RFC 8106 §5), so that a change of the
// library or of Build shows.
func TestBuildBytes(t *testing.T) {
	n := model.Network{Name: "lab", Mode: model.Routed, Bridge: "gn-lab", MTU: 1400,
		IPv6: netip.MustParsePrefix("fd42:1::1/64"), DHCP6: &model.DHCP6{}, DNS: &model.DNS{Domain: "lab"}}
	r, ok := n.RA()
	if !ok {
		t.Fatal("no RA for a network with ipv6")
	}
	b, err := ndp.MarshalMessage(Build(r, mac, false))
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"8600" + "0000" + // type 134, code 0, checksum (the kernel fills it)
		"40" + "c0" + "0708" + // hop limit 64, M and O, router lifetime 1800 s
		"00000000" + "00000000" + // reachable time, retrans timer: unspecified
		"0101" + "02005e005301" + // source link-layer address
		"0501" + "0000" + "00000578" + // MTU 1400
		"0304" + "40" + "c0" + "00015180" + "00003840" + "00000000" + // prefix /64, L and A, valid 1 day, preferred 4 h
		"fd420001000000000000000000000000" +
		"1903" + "0000" + "00000708" + "fd420001000000000000000000000001" + // RDNSS, 1800 s, the gateway
		"1f02" + "0000" + "00000708" + "036c616200000000" // DNSSL, 1800 s, "lab"
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("RA bytes:\n got %s\nwant %s", got, want)
	}
}

func TestBuildIsolatedAndFinal(t *testing.T) {
	n := model.Network{Name: "iso", Mode: model.Isolated, Bridge: "gn-iso",
		IPv6: netip.MustParsePrefix("fd42:2::1/80")}
	r, _ := n.RA()
	m := Build(r, mac, false)
	if m.RouterLifetime != 0 || m.ManagedConfiguration || m.OtherConfiguration {
		t.Errorf("isolated RA: router lifetime %v, M %v, O %v; want 0, no flags", m.RouterLifetime, m.ManagedConfiguration, m.OtherConfiguration)
	}
	var pi *ndp.PrefixInformation
	for _, o := range m.Options {
		if p, ok := o.(*ndp.PrefixInformation); ok {
			pi = p
		}
		if _, ok := o.(*ndp.MTU); ok {
			t.Error("an MTU option without an mtu")
		}
	}
	if pi == nil || pi.AutonomousAddressConfiguration || !pi.OnLink || pi.PrefixLength != 80 {
		t.Errorf("prefix of a /80: %+v; want on-link, not autonomous", pi)
	}

	n = model.Network{Name: "lab", Mode: model.NAT, Bridge: "gn-lab", IPv6: netip.MustParsePrefix("fd42:1::1/64"), DNS: &model.DNS{Domain: "lab"}}
	r, _ = n.RA()
	f := Build(r, mac, true)
	if f.RouterLifetime != 0 {
		t.Errorf("final RA: router lifetime %v, want 0", f.RouterLifetime)
	}
	for _, o := range f.Options {
		switch o := o.(type) {
		case *ndp.RecursiveDNSServer:
			if o.Lifetime != 0 {
				t.Errorf("final RA: RDNSS lifetime %v, want 0", o.Lifetime)
			}
		case *ndp.PrefixInformation:
			if o.ValidLifetime != model.PrefixValid {
				t.Errorf("final RA: prefix valid %v, want it kept (%v)", o.ValidLifetime, model.PrefixValid)
			}
		}
	}
	if Build(r, mac, false).RouterLifetime != 30*time.Minute {
		t.Errorf("nat RA: router lifetime %v, want 30m", Build(r, mac, false).RouterLifetime)
	}
}
