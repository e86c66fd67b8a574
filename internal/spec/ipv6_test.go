package spec

import (
	"net/netip"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

func TestIPv6Good(t *testing.T) {
	s, err := Load("testdata/good/ipv6.yaml")
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]model.Network{}
	for _, n := range s.Models() {
		by[n.Name] = n
	}
	d := by["default"]
	if d.IPv6 != netip.MustParsePrefix("fd42:99::1/64") || d.Subnet6() != netip.MustParsePrefix("fd42:99::/64") {
		t.Errorf("default ipv6 %v subnet6 %v", d.IPv6, d.Subnet6())
	}
	if d.DHCP6 == nil || d.DHCP6.Lease != time.Hour || len(d.DHCP6.Ranges) != 1 || len(d.DHCP6.Hosts) != 2 ||
		d.DHCP6.Hosts[0].DUID != "00:01:00:01:2c:4f:aa:bb:52:54:00:aa:bb:cc" || d.DHCP6.Hosts[1].MAC != "52:54:00:aa:bb:dd" {
		t.Errorf("dhcp6 %+v", d.DHCP6)
	}
	if d.DHCP6.PerPort != DefaultPerPort {
		t.Errorf("dhcp6 per_port %d, want the default %d", d.DHCP6.PerPort, DefaultPerPort)
	}
	if len(d.Subnets()) != 2 || len(d.Addrs()) != 2 {
		t.Errorf("subnets %v addrs %v", d.Subnets(), d.Addrs())
	}
	ra, ok := d.RA()
	if !ok || !ra.Managed || !ra.Autonomous || ra.RouterLifetime == 0 || len(ra.RDNSS) != 1 || ra.RDNSS[0] != d.IPv6.Addr() || ra.DNSSL[0] != "lab.internal" {
		t.Errorf("default RA %+v", ra)
	}
	if d.DNS.Upstream[0] != netip.MustParseAddr("2001:db8::53") {
		t.Errorf("upstream %v", d.DNS.Upstream)
	}
	dmz := by["dmz"]
	if dmz.IPv4.IsValid() || dmz.Subnet().IsValid() || len(dmz.Subnets()) != 1 {
		t.Errorf("dmz is IPv6-only: %+v", dmz)
	}
	if ra, _ := by["lab"].RA(); ra.RouterLifetime != 0 || !ra.Autonomous || ra.Managed {
		t.Errorf("isolated RA %+v: want SLAAC and router lifetime 0", ra)
	}
}
