package observe

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// linkInfo decodes IFLA_LINKINFO: the kind, and for a VXLAN device its
// settings (IFLA_INFO_DATA) and bridge port flags (IFLA_INFO_SLAVE_DATA of
// slave kind "bridge"), which `ip -d link show` prints from the same dump.
// Only VXLAN devices keep their port flags: they are what plans compare.
func linkInfo(l *rawLink, v []byte) {
	var data, slave []byte
	slaveKind := ""
	eachAttr(v, func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_INFO_KIND:
			l.Kind = kindName(cstring(v))
		case unix.IFLA_INFO_DATA:
			data = v
		case unix.IFLA_INFO_SLAVE_KIND:
			slaveKind = cstring(v)
		case unix.IFLA_INFO_SLAVE_DATA:
			slave = v
		}
	})
	if l.Kind != "vxlan" {
		return
	}
	x := &model.VXLANLink{}
	eachAttr(data, func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_VXLAN_ID:
			x.VNI = u32(v)
		case unix.IFLA_VXLAN_PORT: // network byte order
			if len(v) >= 2 {
				x.Port = int(binary.BigEndian.Uint16(v))
			}
		case unix.IFLA_VXLAN_LOCAL:
			if a, ok := netip.AddrFromSlice(v); ok && !a.IsUnspecified() {
				x.Local = a
			}
		case unix.IFLA_VXLAN_LEARNING:
			x.Learning = len(v) > 0 && v[0] != 0
		}
	})
	if slaveKind == "bridge" {
		eachAttr(slave, func(typ uint16, v []byte) {
			on := len(v) > 0 && v[0] != 0
			switch typ {
			case unix.IFLA_BRPORT_LEARNING:
				x.PortLearning = on
			case unix.IFLA_BRPORT_NEIGH_SUPPRESS:
				x.NeighSuppress = on
			}
		})
	}
	l.VXLAN = x
}
