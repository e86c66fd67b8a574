package engine

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/state"
)

// v6Specs are the IPv6 configurations of the host side: a routed
// IPv6-only network, a dual-stack nat one, an isolated one with ipv6.
var v6Specs = &specFiles{texts: map[string]string{
	"v6": "  lab6: {mode: routed, bridge: grt6, ipv6: 2001:db8:71::1/64}\n" +
		"  dual: {mode: nat, bridge: gdual0, ipv4: 10.99.3.1/24, ipv6: fd42:3::1/64}\n" +
		"  iso6: {mode: isolated, bridge: giso6, ipv6: fd42:9::1/64}\n",
	"iso6":  "  iso6: {mode: isolated, bridge: giso6, ipv6: fd42:9::1/64}\n",
	"empty": "",
}}

// raHost is the fake host with eth0 learning its IPv6 default route from
// router advertisements (accept_ra 1), a static IPv6 address on eth1, and
// eth0's link-local route, as observe reads them.
func raHost() model.Host {
	h := fake.BaseHost()
	for i := range h.Links {
		if h.Links[i].Name == "eth1" {
			h.Links[i].Addrs = append(h.Links[i].Addrs, pfx("fd10:5::10/64"))
		}
	}
	h.Routes = append(h.Routes,
		model.Route{Dst: pfx("::/0"), Gw: netip.MustParseAddr("fe80::1"), Dev: "eth0", Proto: model.ProtoRA, Metric: 1024},
		model.Route{Dst: pfx("2001:db8:1::/64"), Dev: "eth0", Proto: model.ProtoRA, Metric: 256},
		model.Route{Dst: pfx("fe80::/64"), Dev: "eth0", Proto: model.ProtoKernel, Metric: 256},
		model.Route{Dst: pfx("fe80::/64"), Dev: "eth1", Proto: model.ProtoKernel, Metric: 256},
		model.Route{Dst: pfx("fd10:5::/64"), Dev: "eth1", Proto: model.ProtoKernel, Metric: 256},
	)
	h.RAUplinks = []model.RAUplink{{Name: "eth0", AcceptRA: 1}}
	fake.Canonical(&h)
	return h
}

func v6Rig(t *testing.T, h model.Host) *rig {
	k := &fake.Kernel{Host: h}
	return &rig{t: t, k: k, e: New(k, filepath.Join(stateDir(t), "state.json"))}
}

func actionLines(p plan.Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, a.String())
	}
	return out
}

// inOrder checks that each of want is a line of got, in that order.
func inOrder(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	at := -1
	for _, w := range want {
		i := slices.Index(got, w)
		if i < 0 {
			t.Errorf("%s: no %q in the plan:\n%s", what, w, strings.Join(got, "\n"))
			return
		}
		if i < at {
			t.Errorf("%s: %q comes before the step it must follow:\n%s", what, w, strings.Join(got, "\n"))
		}
		at = i
	}
}

func converge6(t *testing.T, r *rig, name string) plan.Plan {
	t.Helper()
	p, err := r.e.Converge(context.Background(), v6Specs.load(t, name))
	if err != nil {
		t.Fatalf("converge %s: %v", name, err)
	}
	again, err := r.e.Plan(context.Background(), v6Specs.load(t, name))
	if err != nil || len(again.Actions) != 0 {
		t.Fatalf("converge %s is not complete: the next plan has %v (%v)", name, actionLines(again), err)
	}
	return p
}

func readState(t *testing.T, r *rig) state.State {
	t.Helper()
	st, err := r.e.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIPv6HostSide(t *testing.T) {
	r := v6Rig(t, raHost())
	p := converge6(t, r, "v6")
	inOrder(t, "apply v6", actionLines(p),
		"ip addr add 10.99.3.1/24 brd 10.99.3.255 dev gdual0",
		"ip addr add fd42:3::1/64 dev gdual0 nodad",
		"ip addr add fd42:9::1/64 dev giso6 nodad",
		"ip addr add 2001:db8:71::1/64 dev grt6 nodad",
		"sysctl -w net.ipv4.ip_forward=1",
		"sysctl -w net.ipv6.conf.eth0.accept_ra=2",
		"sysctl -w net.ipv6.conf.all.forwarding=1")
	for _, a := range p.Actions {
		if a.Key == "net.ipv6.conf.eth0.accept_ra" && !strings.HasPrefix(a.Note(), "eth0 learns its default route from router advertisements") {
			t.Errorf("the accept_ra action says why as %q", a.Note())
		}
	}
	h := r.k.Host
	if !h.IP6Forward || !h.IPForward {
		t.Errorf("forwarding after apply: ipv4 %v ipv6 %v, want both on", h.IPForward, h.IP6Forward)
	}
	if want := []model.RAUplink{{Name: "eth0", AcceptRA: 2}}; !reflect.DeepEqual(h.RAUplinks, want) {
		t.Errorf("RA uplinks after apply: %+v, want %+v", h.RAUplinks, want)
	}
	if br, _ := h.Link("grt6"); !reflect.DeepEqual(br.Addrs, []netip.Prefix{pfx("2001:db8:71::1/64")}) {
		t.Errorf("grt6 holds %v", br.Addrs)
	}
	if br, _ := h.Link("gdual0"); !reflect.DeepEqual(br.Addrs, []netip.Prefix{pfx("10.99.3.1/24"), pfx("fd42:3::1/64")}) {
		t.Errorf("gdual0 holds %v", br.Addrs)
	}
	st := readState(t, r)
	if st.Forwarding6Was != "0" || !reflect.DeepEqual(st.AcceptRAWas, map[string]string{"eth0": "1"}) {
		t.Errorf("state after apply: forwarding6_was %q accept_ra_was %v", st.Forwarding6Was, st.AcceptRAWas)
	}

	// Drift: someone deletes the IPv6 address of grt6 and puts eth0 back
	// to accept_ra 1. The next plan repairs exactly that.
	for _, a := range []plan.Action{
		{Op: plan.OpAddrDel, Link: "grt6", Addr: pfx("2001:db8:71::1/64")},
		{Op: plan.OpSysctl, Key: "net.ipv6.conf.eth0.accept_ra", Value: "1"},
	} {
		if err := r.k.Do(a); err != nil {
			t.Fatal(err)
		}
	}
	if slices.ContainsFunc(r.k.Host.Routes, func(x model.Route) bool { return x.Dev == "grt6" }) {
		t.Fatal("the fake kept grt6's connected IPv6 route after its address went")
	}
	rp, err := r.e.Plan(context.Background(), v6Specs.load(t, "v6"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actionLines(rp), []string{"ip addr add 2001:db8:71::1/64 dev grt6 nodad", "sysctl -w net.ipv6.conf.eth0.accept_ra=2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("repair plan:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	converge6(t, r, "v6")

	// Only an isolated network left: no network needs IPv6 forwarding,
	// so it goes off again, and eth0 gets its accept_ra back.
	p = converge6(t, r, "iso6")
	inOrder(t, "to iso6", actionLines(p),
		"sysctl -w net.ipv4.ip_forward=0",
		"sysctl -w net.ipv6.conf.all.forwarding=0",
		"sysctl -w net.ipv6.conf.eth0.accept_ra=1")
	if r.k.Host.IP6Forward || r.k.Host.RAUplinks[0].AcceptRA != 1 {
		t.Errorf("after iso6: ipv6 forwarding %v, eth0 accept_ra %d; want off, 1", r.k.Host.IP6Forward, r.k.Host.RAUplinks[0].AcceptRA)
	}
	if st := readState(t, r); st.Forwarding6Was != "" || st.AcceptRAWas != nil {
		t.Errorf("state after iso6 keeps %q %v", st.Forwarding6Was, st.AcceptRAWas)
	}
	if br, _ := r.k.Host.Link("giso6"); !reflect.DeepEqual(br.Addrs, []netip.Prefix{pfx("fd42:9::1/64")}) {
		t.Errorf("giso6 holds %v", br.Addrs)
	}

	// Destroy: the host is as it began.
	if _, _, err := r.e.Destroy(context.Background(), []string{"iso6"}); err != nil {
		t.Fatal(err)
	}
	if got, want := hostText(r.k.Host), hostText(raHost()); got != want {
		t.Errorf("after destroy:\n%s\nwant\n%s", got, want)
	}
}

// TestIPv6ForwardingNotOurs: forwarding already on (another tool's) stays
// on after destroy; accept_ra is still raised and put back.
func TestIPv6ForwardingNotOurs(t *testing.T) {
	h := raHost()
	h.IP6Forward = true
	r := v6Rig(t, h)
	p := converge6(t, r, "v6")
	if slices.Contains(actionLines(p), "sysctl -w net.ipv6.conf.all.forwarding=1") {
		t.Error("plan turns on IPv6 forwarding that is on")
	}
	if st := readState(t, r); st.Forwarding6Was != "" || st.AcceptRAWas["eth0"] != "1" {
		t.Errorf("state: forwarding6_was %q accept_ra_was %v", st.Forwarding6Was, st.AcceptRAWas)
	}
	p = converge6(t, r, "empty")
	if got := actionLines(p); slices.Contains(got, "sysctl -w net.ipv6.conf.all.forwarding=0") || !slices.Contains(got, "sysctl -w net.ipv6.conf.eth0.accept_ra=1") {
		t.Errorf("destroy plan:\n%s", strings.Join(got, "\n"))
	}
	want := raHost() // afresh: the fake shares h's slices
	want.IP6Forward = true
	if got, want := hostText(r.k.Host), hostText(want); got != want {
		t.Errorf("after destroy:\n%s\nwant\n%s", got, want)
	}
}

// TestIPv6FailedApplyUndone fails each write of an IPv6 apply and of its
// destroy in turn: each time host and state are as they were.
func TestIPv6FailedApplyUndone(t *testing.T) {
	for _, tr := range [][2]string{{"empty", "v6"}, {"v6", "empty"}, {"v6", "iso6"}} {
		r := v6Rig(t, raHost())
		if tr[0] != "empty" {
			converge6(t, r, tr[0])
		}
		before := hostText(r.k.Host)
		stBefore, _ := os.ReadFile(r.e.StatePath)
		steps := -1
		for n := 1; steps < 0 || n <= steps; n++ {
			r.e.Kernel = &FailAt{Kernel: r.k, N: n}
			_, err := r.e.Converge(context.Background(), v6Specs.load(t, tr[1]))
			var se *apply.StepError
			if !errors.As(err, &se) || se.Step != n || !errors.Is(err, ErrInjected) || se.Rollback != nil {
				t.Fatalf("%v: failure at step %d: got %v", tr, n, err)
			}
			steps = se.Steps
			if after := hostText(r.k.Host); after != before {
				t.Fatalf("%v: failure at step %d (%s) left\n%s\nwant\n%s", tr, n, se.Action, after, before)
			}
			if st, _ := os.ReadFile(r.e.StatePath); string(st) != string(stBefore) {
				t.Fatalf("%v: failure at step %d changed the state:\n%s\nwant\n%s", tr, n, st, stBefore)
			}
		}
		r.e.Kernel = r.k
		t.Logf("%s>%s: a failure at each of %d steps left host and state as they were", tr[0], tr[1], steps)
	}
}

// TestIPv6CheckHost: the host's link-local routes (fe80::/64 on every
// link) and its RA-learned default route do not count as overlaps of a
// guest prefix (TestIPv6HostSide applies beside them); a host IPv6 route
// that covers the prefix does.
func TestIPv6CheckHost(t *testing.T) {
	files := &specFiles{texts: map[string]string{
		"clash": "  clash: {mode: routed, bridge: gclash0, ipv6: fd10:5::1/64}\n",
		"ra":    "  ra: {mode: routed, bridge: gra0, ipv6: 2001:db8:1::1/64}\n",
	}}
	r := v6Rig(t, raHost())
	for name, want := range map[string]string{
		"clash": "subnet fd10:5::/64 overlaps the host's route fd10:5::/64 dev eth1",
		"ra":    "subnet 2001:db8:1::/64 overlaps the host's route 2001:db8:1::/64 dev eth0",
	} {
		_, err := r.e.Plan(context.Background(), files.load(t, name))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, want)
		}
	}
}

// TestIPv6OnlyNoIPForward: an IPv6-only routed network turns IPv6
// forwarding on, not ip_forward.
func TestIPv6OnlyNoIPForward(t *testing.T) {
	files := &specFiles{texts: map[string]string{"only6": "  lab6: {mode: routed, bridge: grt6, ipv6: 2001:db8:71::1/64}\n"}}
	r := v6Rig(t, raHost())
	p, err := r.e.Plan(context.Background(), files.load(t, "only6"))
	if err != nil {
		t.Fatal(err)
	}
	got := actionLines(p)
	if slices.Contains(got, "sysctl -w net.ipv4.ip_forward=1") || !slices.Contains(got, "sysctl -w net.ipv6.conf.all.forwarding=1") {
		t.Errorf("plan of an IPv6-only routed network:\n%s", strings.Join(got, "\n"))
	}
}

// TestIPv6BridgeModeMovesStaticAddress: a bridge-mode network moves the
// NIC's static IPv6 address (and a person's IPv6 route) to the bridge
// with its IPv4 ones, leaves the kernel's RA-learned routes to the kernel,
// and destroy puts everything back.
func TestIPv6BridgeModeMovesStaticAddress(t *testing.T) {
	files := &specFiles{texts: map[string]string{"lan": "  lan: {mode: bridge, bridge: br0, uplink: eth1}\n"}}
	mk := func() model.Host {
		h := raHost()
		h.Routes = append(h.Routes,
			model.Route{Dst: pfx("fd10:6::/64"), Gw: netip.MustParseAddr("fd10:5::1"), Dev: "eth1", Proto: 4, Metric: 1024},
			model.Route{Dst: pfx("2001:db8:2::/64"), Dev: "eth1", Proto: model.ProtoRA, Metric: 256})
		fake.Canonical(&h)
		return h
	}
	r := v6Rig(t, mk())
	p, err := r.e.Converge(context.Background(), files.load(t, "lan"))
	if err != nil {
		t.Fatal(err)
	}
	got := actionLines(p)
	inOrder(t, "bridge mode", got,
		"ip -6 route del fd10:6::/64 via fd10:5::1 dev eth1 proto 4 metric 1024",
		"ip addr del fd10:5::10/64 dev eth1",
		"ip link set eth1 master br0",
		"ip addr add fd10:5::10/64 dev br0 nodad",
		"ip -6 route add fd10:6::/64 via fd10:5::1 dev br0 proto 157 metric 1024")
	for _, l := range got {
		if strings.Contains(l, "2001:db8:2::/64") || strings.Contains(l, "fe80") {
			t.Errorf("bridge mode touches the kernel's route: %s", l)
		}
	}
	if br, _ := r.k.Host.Link("br0"); !slices.Contains(br.Addrs, pfx("fd10:5::10/64")) {
		t.Errorf("br0 holds %v", br.Addrs)
	}
	if _, _, err := r.e.Destroy(context.Background(), []string{"lan"}); err != nil {
		t.Fatal(err)
	}
	// The kernel's routes of eth1 (RA-learned, link-local), which the fake
	// drops with eth1's last address, are the kernel's to make again;
	// everything guestnet moved is back.
	kernels := func(x model.Route) bool {
		return x.Dev == "eth1" && (x.Proto == model.ProtoRA || x.Dst == pfx("fe80::/64"))
	}
	want := mk()
	want.Routes = slices.DeleteFunc(want.Routes, kernels)
	got2 := r.k.Host
	got2.Routes = slices.DeleteFunc(slices.Clone(got2.Routes), kernels)
	if a, b := hostText(got2), hostText(want); a != b {
		t.Errorf("after destroy:\n%s\nwant\n%s", a, b)
	}
}

// TestIPv6AcceptRAOfGoneLink: an interface guestnet raised that is gone
// has nothing to put back, and the state forgets it.
func TestIPv6AcceptRAOfGoneLink(t *testing.T) {
	st := state.State{Forwarding6Was: "0", AcceptRAWas: map[string]string{"gone0": "1"}}
	for _, name := range []string{"v6", "empty"} {
		p, err := plan.Diff(v6Specs.load(t, name).Models(), st, raHost())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range p.Actions {
			if a.Link == "gone0" {
				t.Errorf("%s: plan writes to a gone interface: %s", name, a)
			}
		}
		if _, ok := p.State.AcceptRAWas["gone0"]; ok {
			t.Errorf("%s: state keeps gone0: %v", name, p.State.AcceptRAWas)
		}
	}
}
