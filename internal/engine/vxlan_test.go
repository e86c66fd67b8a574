package engine

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// checkVXLAN checks a stretched network's VXLAN device on the host: its
// settings, a port of the network's bridge with learning off and
// neigh_suppress on, the network's MTU on it and on the bridge, up, owned.
func checkVXLAN(t *testing.T, what string, n model.Network, h model.Host) {
	t.Helper()
	name := model.VXLANName(n.VXLAN.VNI)
	l, ok := h.Link(name)
	want := plan.WantVXLAN(n)
	if !ok || l.Kind != "vxlan" || l.VXLAN == nil || *l.VXLAN != want {
		t.Fatalf("%s: %s is %+v (vxlan %+v), want %+v", what, name, l, l.VXLAN, want)
	}
	br, _ := h.Link(n.Bridge)
	if l.Master != n.Bridge || !l.Up || l.Owner() != n.Name || l.MTU != n.MTU || br.MTU != n.MTU {
		t.Fatalf("%s: %s: master %q up %v owner %q mtu %d (bridge %d), want %s, up, %s, %d", what, name, l.Master, l.Up, l.Owner(), l.MTU, br.MTU, n.Bridge, n.Name, n.MTU)
	}
}

// TestVXLANPlanText: the first apply of a stretched network makes its
// bridge, then the VXLAN device with the network's settings, into the
// bridge, its port flags, up; each printed as its command line.
func TestVXLANPlanText(t *testing.T) {
	r := newRig(t)
	got := actionLines(r.plan("stretch"))
	inOrder(t, "apply stretch", got,
		"ip link add gst0 type bridge mtu 1450 address "+model.BridgeMAC("wide")+" group 26485 && ip link set gst0 alias guestnet:wide && sysctl -w net.ipv6.conf.gst0.accept_ra=0",
		"ip link set gst0 up",
		"ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4789 local 10.10.0.1 nolearning && ip link set gvx6000 alias guestnet:wide addrgenmode none",
		"ip link set gvx6000 master gst0",
		"bridge link set dev gvx6000 learning off neigh_suppress on",
		"ip link set gvx6000 up",
		"ip link add gvx6001 mtu 1400 type vxlan id 6001 dstport 4790 nolearning && ip link set gvx6001 alias guestnet:wide2 addrgenmode none",
	)
	r.apply("stretch")
	got = actionLines(r.plan("stretch-moved"))
	inOrder(t, "move", got,
		"ip link del gvx6000",
		"ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4790 local 10.10.0.2 nolearning && ip link set gvx6000 alias guestnet:wide addrgenmode none",
		"ip link set gvx6000 master gst0",
		"bridge link set dev gvx6000 learning off neigh_suppress on",
		"ip link set gvx6000 up",
		"ip link set gst1 mtu 1300",
		"ip link add gvx6002 mtu 1300 type vxlan id 6002 dstport 4790 nolearning && ip link set gvx6002 alias guestnet:wide2 addrgenmode none",
		"ip link del gvx6001", // after the new one: adds before deletes
		"ip link del gvx6003", // wide3 is no longer stretched
	)
	for _, a := range r.plan("").Actions {
		if a.Op == plan.OpLinkDel && a.VXLAN != nil {
			if inv := a.Inverse(); inv.Op != plan.OpVXLANAdd || !strings.Contains(inv.String(), "master gst") || !strings.HasSuffix(inv.String(), "neigh_suppress on && ip link set "+a.Link+" up") {
				t.Errorf("the undo of %q is %q: it must make the device again whole", a, inv)
			}
		}
	}
}

// TestVXLANDrift: each way someone can change a VXLAN device behind
// guestnet's back is put right by the next apply, with the least write
// for it, and the device deleted is made again.
func TestVXLANDrift(t *testing.T) {
	ctx := context.Background()
	set := func(f func(l *model.Link)) func(r *rig) {
		return func(r *rig) {
			h := &r.k.Host
			for i := range h.Links {
				if h.Links[i].Name == "gvx6000" {
					x := *h.Links[i].VXLAN
					h.Links[i].VXLAN = &x
					f(&h.Links[i])
				}
			}
		}
	}
	for _, c := range []struct {
		name   string
		change func(r *rig)
		want   []string
	}{
		{"deleted", func(r *rig) {
			if err := r.k.Do(plan.Action{Op: plan.OpLinkDel, Link: "gvx6000"}); err != nil {
				t.Fatal(err)
			}
		}, []string{"ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4789 local 10.10.0.1 nolearning && ip link set gvx6000 alias guestnet:wide addrgenmode none",
			"ip link set gvx6000 master gst0", "bridge link set dev gvx6000 learning off neigh_suppress on", "ip link set gvx6000 up"}},
		{"port learning on", set(func(l *model.Link) { l.VXLAN.PortLearning = true }), []string{"bridge link set dev gvx6000 learning off neigh_suppress on"}},
		{"neigh_suppress off", set(func(l *model.Link) { l.VXLAN.NeighSuppress = false }), []string{"bridge link set dev gvx6000 learning off neigh_suppress on"}},
		{"mtu", set(func(l *model.Link) { l.MTU = 1500 }), []string{"ip link set gvx6000 mtu 1450"}},
		{"nomaster", set(func(l *model.Link) { l.Master, l.VXLAN.PortLearning, l.VXLAN.NeighSuppress = "", false, false }),
			[]string{"ip link set gvx6000 master gst0", "bridge link set dev gvx6000 learning off neigh_suppress on"}},
		{"down", set(func(l *model.Link) { l.Up = false }), []string{"ip link set gvx6000 up"}},
		{"learning", set(func(l *model.Link) { l.VXLAN.Learning = true }), []string{"ip link del gvx6000", "ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4789 local 10.10.0.1 nolearning && ip link set gvx6000 alias guestnet:wide addrgenmode none"}},
		{"local", set(func(l *model.Link) { l.VXLAN.Local = model.VXLANLink{}.Local }), []string{"ip link del gvx6000", "ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4789 local 10.10.0.1 nolearning && ip link set gvx6000 alias guestnet:wide addrgenmode none"}},
	} {
		r := newRig(t)
		r.apply("stretch")
		c.change(r)
		p, err := r.e.Converge(ctx, crashSpecs.load(t, "stretch"))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := actionLines(p)
		inOrder(t, c.name, got, c.want...)
		if c.name != "deleted" && c.name != "learning" && c.name != "local" && len(got) != len(c.want) {
			t.Errorf("%s: repaired with %d writes, want %d:\n%s", c.name, len(got), len(c.want), strings.Join(got, "\n"))
		}
		for _, n := range crashSpecs.load(t, "stretch").Networks {
			checkVXLAN(t, c.name, n.Network, r.k.Host)
		}
	}
}

// TestForeignVXLAN: a VXLAN device guestnet does not own, with the
// device's name or with the same VNI and port, stops the apply before any
// write, and the error names it; one on another port is left alone.
func TestForeignVXLAN(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		link model.Link
		want string // in the error; "" for none
	}{
		{model.Link{Name: "gvx6000", Kind: "vxlan", MTU: 1500, VXLAN: &model.VXLANLink{VNI: 6000, Port: 4789}}, "gvx6000 (this network's VXLAN device) already exists and guestnet did not create it"},
		{model.Link{Name: "gvx6000", Kind: "bridge", MTU: 1500, Alias: "guestnet:other"}, "the VXLAN device gvx6000 belongs to guestnet network other"},
		{model.Link{Name: "vxfoo", Kind: "vxlan", MTU: 1500, VXLAN: &model.VXLANLink{VNI: 6000, Port: 4789}}, "VXLAN device vxfoo already has VNI 6000 on port 4789 (guestnet did not create it)"},
		{model.Link{Name: "vxfoo", Kind: "vxlan", MTU: 1500, VXLAN: &model.VXLANLink{VNI: 6000, Port: 8472}}, ""},
	} {
		r := newRig(t)
		c.link.Index = 9
		r.k.Host.Links = append(r.k.Host.Links, c.link)
		fake.Canonical(&r.k.Host)
		slices.SortFunc(r.k.Host.Links, func(a, b model.Link) int { return strings.Compare(a.Name, b.Name) })
		before := hostText(r.k.Host)
		_, err := r.e.Converge(ctx, crashSpecs.load(t, "stretch"))
		if c.want == "" {
			if err != nil {
				t.Errorf("%s on port %d: %v", c.link.Name, c.link.VXLAN.Port, err)
			}
			if l, _ := r.k.Host.Link("vxfoo"); l.Alias != "" || l.Master != "" {
				t.Errorf("the foreign device was touched: %+v", l)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.link.Name, err, c.want)
		}
		if after := hostText(r.k.Host); after != before || r.e.Writes() != 0 {
			t.Errorf("%s: the refused apply wrote %d times", c.link.Name, r.e.Writes())
		}
	}
}

// TestHalfMadeVXLAN: a kill -9 between the two writes of a VXLAN device
// (link, then alias) leaves a device without guestnet's alias; the state
// names its network, so apply makes it whole and destroy removes it.
func TestHalfMadeVXLAN(t *testing.T) {
	for _, then := range []string{"reapply", "destroy"} {
		r := newRig(t)
		p := r.plan("stretch")
		r.e.Kernel = killAfter(r.k, 0)
		crashed(t, "before the first write", func() error { return r.e.commit(p, nil) })
		r.e.Kernel = r.k
		x := model.VXLANLink{VNI: 6000, Port: 4789}
		if err := r.k.Do(plan.Action{Op: plan.OpVXLANAdd, Link: "gvx6000", VXLAN: &x}); err != nil { // no alias
			t.Fatal(err)
		}
		if then == "reapply" {
			r.apply("stretch")
			if l, _ := r.k.Host.Link("gvx6000"); l.Owner() != "wide" || l.Master != "gst0" {
				t.Fatalf("gvx6000 not made whole: %+v", l)
			}
		}
		r.apply("")
		r.clean("half-made vxlan device, then " + then)
	}
}
