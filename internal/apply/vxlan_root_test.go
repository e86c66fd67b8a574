package apply_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/state"
)

// TestVXLANDeviceInKernel makes a stretched network's bridge and VXLAN
// device with the production writer in a fresh namespace, reads them back
// with observe, then deletes the device and runs the delete's inverse
// (what a rollback does): the device comes back whole, as it was. iproute2
// checks the same device independently.
func TestVXLANDeviceInKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
			t.Fatal("needs root (a network namespace), and GUESTNET_E2E_REQUIRED=1")
		}
		t.Skip("SKIPPED: needs root to make a network namespace")
	}
	name := fmt.Sprintf("gn-vxtest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	k := apply.NewLinux(ns, nl)
	n := model.Network{Name: "wide", Mode: model.Isolated, Bridge: "gst0", MTU: 1450,
		VXLAN: &model.VXLAN{VNI: 6000, Port: 4789, Local: netip.MustParseAddr("10.10.0.1")}}
	acts := mustDiff(t, []model.Network{n}, readHost(t, ns, nl)) // the firewall is not this test's
	if err := apply.Run(k, acts); err != nil {
		t.Fatal(err)
	}
	h := readHost(t, ns, nl)
	l, _ := h.Link("gvx6000")
	want := plan.WantVXLAN(n)
	if l.Kind != "vxlan" || l.VXLAN == nil || *l.VXLAN != want || l.Master != "gst0" || !l.Up || l.MTU != 1450 || l.Owner() != "wide" {
		t.Fatalf("gvx6000 read back as %+v (vxlan %+v), want %+v in gst0, up, mtu 1450, owned", l, l.VXLAN, want)
	}
	ipSays(t, name, "-d link show gvx6000", "mtu 1450", "master gst0", "vxlan id 6000 local 10.10.0.1", "dstport 4789 nolearning", "alias guestnet:wide")
	bridgeSays(t, name, "-d link show dev gvx6000", "learning off", "neigh_suppress on")
	if again, _ := plan.Diff([]model.Network{n}, stateNone(), h); len(nonNft(again.Actions)) != 0 {
		t.Fatalf("not stable: %v", nonNft(again.Actions))
	}

	del := plan.Action{}
	for _, a := range mustDiff(t, nil, h) {
		if a.Op == plan.OpLinkDel && a.Link == "gvx6000" {
			del = a
		}
	}
	if del.VXLAN == nil {
		t.Fatal("removing the network deletes no gvx6000")
	}
	if err := k.Do(del); err != nil {
		t.Fatal(err)
	}
	if _, ok := readHost(t, ns, nl).Link("gvx6000"); ok {
		t.Fatal("gvx6000 not deleted")
	}
	if err := k.Do(del.Inverse()); err != nil {
		t.Fatalf("%s: %v", del.Inverse(), err)
	}
	back, _ := readHost(t, ns, nl).Link("gvx6000")
	text := func(l model.Link) string {
		x := l.VXLAN
		l.Index, l.VXLAN = 0, nil // a new ifindex; the settings by value
		return fmt.Sprintf("%+v %+v", l, x)
	}
	if text(back) != text(l) {
		t.Fatalf("undone delete made\n%s\nwant\n%s", text(back), text(l))
	}
	t.Logf("made, read back, deleted and made again whole: %s", del.Inverse())
}

func stateNone() state.State { return state.State{} }

func readHost(t *testing.T, ns *netns.NS, nl *netlink.Handle) model.Host {
	t.Helper()
	h, err := observe.Host(ns, nl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// nonNft drops the firewall's actions.
func nonNft(acts []plan.Action) []plan.Action {
	var out []plan.Action
	for _, a := range acts {
		if !a.IsNft() && a.Op != plan.OpGuard {
			out = append(out, a)
		}
	}
	return out
}

func mustDiff(t *testing.T, want []model.Network, h model.Host) []plan.Action {
	t.Helper()
	p, err := plan.Diff(want, stateNone(), h)
	if err != nil {
		t.Fatal(err)
	}
	return nonNft(p.Actions)
}

// ipSays runs a read-only ip command in the namespace and checks its
// output holds each of want.
func ipSays(t *testing.T, ns, args string, want ...string) { says(t, "ip", ns, args, want...) }

func bridgeSays(t *testing.T, ns, args string, want ...string) {
	says(t, "bridge", ns, args, want...)
}

func says(t *testing.T, cmd, ns, args string, want ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, cmd}, strings.Fields(args)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", cmd, args, err, out)
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("%s %s: no %q in\n%s", cmd, args, w, out)
		}
	}
}
