package observe

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// TestParseVXLANLink decodes a VXLAN device's settings (the port in
// network byte order, the local address) and its bridge port flags from
// IFLA_LINKINFO as the kernel lays them out; a device that is no bridge's
// port has no flags, and a bridge's own port flags are not kept.
func TestParseVXLANLink(t *testing.T) {
	data := append(attr(unix.IFLA_VXLAN_ID, le32(6000)), attr(unix.IFLA_VXLAN_LOCAL, []byte{10, 10, 0, 1})...)
	data = append(data, attr(unix.IFLA_VXLAN_LEARNING, []byte{0})...)
	data = append(data, attr(unix.IFLA_VXLAN_PORT, []byte{0x12, 0xb5})...) // 4789
	slave := append(attr(unix.IFLA_BRPORT_LEARNING, []byte{0}), attr(unix.IFLA_BRPORT_NEIGH_SUPPRESS, []byte{1})...)
	msg := func(kind, slaveKind string) []byte {
		info := attr(unix.IFLA_INFO_KIND, []byte(kind+"\x00"))
		info = append(info, attr(unix.IFLA_INFO_DATA|unix.NLA_F_NESTED, data)...)
		if slaveKind != "" {
			info = append(info, attr(unix.IFLA_INFO_SLAVE_KIND, []byte(slaveKind+"\x00"))...)
			info = append(info, attr(unix.IFLA_INFO_SLAVE_DATA|unix.NLA_F_NESTED, slave)...)
		}
		m := netlinkIfinfo(9, unix.IFF_UP)
		m = append(m, attr(unix.IFLA_IFNAME, []byte("gvx6000\x00"))...)
		return append(m, attr(unix.IFLA_LINKINFO|unix.NLA_F_NESTED, info)...)
	}
	for _, c := range []struct {
		kind, slave string
		want        *model.VXLANLink
	}{
		{"vxlan", "bridge", &model.VXLANLink{VNI: 6000, Port: 4789, Local: netip.MustParseAddr("10.10.0.1"), NeighSuppress: true}},
		{"vxlan", "", &model.VXLANLink{VNI: 6000, Port: 4789, Local: netip.MustParseAddr("10.10.0.1")}},
		{"veth", "bridge", nil},
	} {
		l, err := parseLink(msg(c.kind, c.slave))
		if err != nil {
			t.Fatal(err)
		}
		if l.Kind != c.kind || (l.VXLAN == nil) != (c.want == nil) || c.want != nil && *l.VXLAN != *c.want {
			t.Errorf("%s in %q: read %s %+v, want %+v", c.kind, c.slave, l.Kind, l.VXLAN, c.want)
		}
	}
}
