package observe

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// rtextFilterSkipStats asks the kernel to leave the counters out of a link
// dump (RTEXT_FILTER_SKIP_STATS, Linux 4.6; older kernels ignore the bit).
const rtextFilterSkipStats = 1 << 3

// dumpLinks is `ip link show`: one RTM_GETLINK dump, of which it decodes
// only what model.Link holds. netlink's LinkList makes the same one dump
// but decodes every attribute of every link into its typed Link (bridge
// options, per-family settings, counters): at 1,000 bridges that was most
// of observe's time, and the counters alone most of the bytes the kernel
// sends. The dump runs on a socket opened inside ns.
func dumpLinks(ns *netns.NS) ([]rawLink, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	var out []rawLink
	var perr error
	err := ns.Do(func() error {
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWLINK, func(msg []byte) bool {
			l, err := parseLink(msg)
			if err != nil {
				perr = err
				return false
			}
			out = append(out, l)
			return true
		})
	})
	if err == nil {
		err = perr
	}
	return out, err
}

// rawLink is one link of a dump, with its master as an index.
type rawLink struct {
	model.Link
	master int
}

// parseLink decodes one RTM_NEWLINK message (ifinfomsg and attributes).
// Kind is named as netlink's Link.Type() names it, which guestnet showed
// before: the IFLA_INFO_KIND, "tuntap" for kind tun, "device" for none.
func parseLink(msg []byte) (rawLink, error) {
	var l rawLink
	if len(msg) < unix.SizeofIfInfomsg {
		return l, fmt.Errorf("link message of %d bytes, shorter than its header", len(msg))
	}
	info := nl.DeserializeIfInfomsg(msg)
	l.Index = int(info.Index)
	l.Up = info.Flags&unix.IFF_UP != 0
	l.Kind = "device"
	oper := uint8(netlink.OperUnknown)
	err := eachAttr(msg[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			l.Name = cstring(v)
		case unix.IFLA_IFALIAS:
			l.Alias = cstring(v)
		case unix.IFLA_MASTER:
			l.master = int(u32(v))
		case unix.IFLA_MTU:
			l.MTU = int(u32(v))
		case unix.IFLA_GROUP:
			l.Group = u32(v)
		case unix.IFLA_OPERSTATE:
			if len(v) > 0 {
				oper = v[0]
			}
		case unix.IFLA_ADDRESS:
			if slices.ContainsFunc(v, func(b byte) bool { return b != 0 }) { // as netlink: none if all zero
				l.MAC = net.HardwareAddr(v).String()
			}
		case unix.IFLA_LINKINFO:
			linkInfo(&l, v)
		}
	})
	l.Carrier = oper == uint8(netlink.OperUp) || oper == uint8(netlink.OperUnknown)
	return l, err
}

func kindName(kind string) string {
	switch kind {
	case "":
		return "device"
	case "tun":
		return "tuntap"
	}
	return kind
}

// attrTypeMask clears an attribute type's nested and byte-order flags.
const attrTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

// eachAttr calls f with the type (flags masked off) and value of each
// netlink attribute in b.
func eachAttr(b []byte, f func(typ uint16, v []byte)) error {
	for len(b) >= unix.SizeofRtAttr {
		n := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & attrTypeMask
		if n < unix.SizeofRtAttr || n > len(b) {
			return fmt.Errorf("link attribute %d of length %d in %d bytes", typ, n, len(b))
		}
		f(typ, b[unix.SizeofRtAttr:n])
		b = b[min((n+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(b)):]
	}
	return nil
}

func u32(v []byte) uint32 {
	if len(v) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(v)
}

func cstring(v []byte) string {
	if i := slices.Index(v, 0); i >= 0 {
		v = v[:i]
	}
	return string(v)
}

// sortLinks orders links by name, as model.Host keeps them.
func sortLinks(ls []model.Link) {
	slices.SortFunc(ls, func(a, b model.Link) int { return strings.Compare(a.Name, b.Name) })
}
