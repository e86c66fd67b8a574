package observe

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// TestParseLink decodes a message built the way the kernel lays one out,
// with an attribute whose nested flag is set and a zero MAC.
func TestParseLink(t *testing.T) {
	req := []byte{}
	msg := netlinkIfinfo(7, unix.IFF_UP)
	req = append(req, msg...)
	for _, a := range []*struct {
		typ uint16
		v   []byte
	}{
		{unix.IFLA_IFNAME, []byte("gn0\x00")},
		{unix.IFLA_IFALIAS, []byte("guestnet:lab\x00")},
		{unix.IFLA_MASTER, le32(3)},
		{unix.IFLA_MTU, le32(1400)},
		{unix.IFLA_GROUP, le32(9)},
		{unix.IFLA_OPERSTATE, []byte{2}}, // down
		{unix.IFLA_ADDRESS, []byte{0, 0, 0, 0, 0, 0}},
		{unix.IFLA_LINKINFO | unix.NLA_F_NESTED, attr(unix.IFLA_INFO_KIND, []byte("tun\x00"))},
	} {
		req = append(req, attr(a.typ, a.v)...)
	}
	l, err := parseLink(req)
	if err != nil {
		t.Fatal(err)
	}
	want := model.Link{Name: "gn0", Index: 7, Kind: "tuntap", Alias: "guestnet:lab", Up: true, MTU: 1400, Group: 9}
	if fmt.Sprint(l.Link) != fmt.Sprint(want) || l.master != 3 {
		t.Errorf("got %+v master %d\nwant %+v master 3", l.Link, l.master, want)
	}
	if _, err := parseLink(append(msg, 0xff, 0x00, 0x03, 0x00)); err == nil {
		t.Error("an attribute longer than the message decoded without error")
	}
}

func netlinkIfinfo(index int32, flags uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	le := func(off int, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	le(4, uint32(index))
	le(8, flags)
	return b
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

func attr(typ uint16, v []byte) []byte {
	n := unix.SizeofRtAttr + len(v)
	b := []byte{byte(n), byte(n >> 8), byte(typ), byte(typ >> 8)}
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// TestDumpLinksAsNetlink makes links of every kind guestnet meets (a
// bridge with an alias and a port, veths, a tap) in a
// fresh namespace and checks that the one-dump reader sees each exactly as
// netlink's LinkList did, which observe used before.
func TestDumpLinksAsNetlink(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
			t.Fatal("needs root (a network namespace), and GUESTNET_E2E_REQUIRED=1")
		}
		t.Skip("SKIPPED: needs root to make a network namespace")
	}
	name := fmt.Sprintf("gn-obstest-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, cmd := range []string{
		"link add gnbr0 type bridge", "link set gnbr0 alias guestnet:lab", "link set gnbr0 mtu 1400 up",
		"link add v0 type veth peer name v1", "link set v0 master gnbr0", "link set v0 group 7 up",
		"tuntap add tap0 mode tap", "link set v1 up",
	} {
		ip(append([]string{"-n", name}, strings.Fields(cmd)...)...)
	}
	ns, err := netns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	got, err := readLinks(ns, h)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	want := map[string]model.Link{}
	for _, l := range ls {
		at := l.Attrs()
		ml := model.Link{Name: at.Name, Index: at.Index, Kind: l.Type(), Alias: at.Alias, Master: names[at.MasterIndex],
			Up: at.Flags&unix.IFF_UP != 0, Carrier: at.OperState == netlink.OperUp || at.OperState == netlink.OperUnknown,
			Group: at.Group, MTU: at.MTU}
		if len(at.HardwareAddr) > 0 {
			ml.MAC = at.HardwareAddr.String()
		}
		want[ml.Name] = ml
	}
	if len(got) != len(ls) || len(got) < 5 {
		t.Fatalf("read %d links, LinkList %d (want lo, gnbr0, v0, v1, tap0)", len(got), len(ls))
	}
	for _, l := range got {
		l.Addrs, l.Brd = nil, nil
		if fmt.Sprintf("%+v", l) != fmt.Sprintf("%+v", want[l.Name]) {
			t.Errorf("%s:\n got %+v\nwant %+v", l.Name, l, want[l.Name])
		}
	}
	for _, l := range got {
		if l.Name == "v0" && (l.Master != "gnbr0" || l.Group != 7) || l.Name == "gnbr0" && (l.Kind != "bridge" || l.Alias != "guestnet:lab" || l.MTU != 1400) || l.Name == "tap0" && l.Kind != "tuntap" {
			t.Errorf("%s read as %+v", l.Name, l)
		}
	}
}
