package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// vxlanSpec is one file for both hosts (issue 16's shared spec): no
// router_id and no vxlan.local, so each host's VXLAN device leaves its
// source address to the kernel's route lookup. The bgp section is what a
// stretched network needs; serve (and so BGP) does not run here.
const vxlanSpec = `bgp:
  asn: 65000
  peers: [{address: 10.10.0.1, asn: 65000}, {address: 10.10.0.2, asn: 65000}]
networks:
  stretch:
    mode: nat
    bridge: gst0
    ipv4: 10.60.0.1/24
    vxlan: {vni: 6000}
`

// TestVXLANHost: two hosts on a LAN (a veth pair, 10.10.0.1 and .2) apply
// the same stretched spec; each gets gvx6000 in gst0 as the spec says
// (checked with iproute2's own reading). A guest on each host cannot
// reach the other until the flood entries are added by hand (what EVPN
// type-3 routes will install), then they ping each other across the
// VXLAN. A deleted device and a port flag set back are put right by the
// next apply.
func TestVXLANHost(t *testing.T) {
	l := newLab(t)
	h1, h2 := l.NS("h1"), l.NS("h2")
	l.Veth(h1, "lan0", "10.10.0.1/24", h2, "lan0", "10.10.0.2/24")
	spec := l.Spec(vxlanSpec)

	plan, errs, code := l.Run(h1, "plan", spec)
	if code != 2 { // 2: there are changes to make
		t.Fatalf("guestnet plan: exit %d, want 2\n%s%s", code, plan, errs)
	}
	for _, w := range []string{
		"ip link add gvx6000 mtu 1450 type vxlan id 6000 dstport 4789 nolearning && ip link set gvx6000 alias guestnet:stretch addrgenmode none",
		"ip link set gvx6000 master gst0",
		"bridge link set dev gvx6000 learning off neigh_suppress on",
		"ip link set gvx6000 up",
	} {
		if !strings.Contains(plan, w) {
			t.Errorf("guestnet plan has no %q:\n%s", w, plan)
		}
	}
	// A VXLAN device guestnet did not make, with the same VNI and port:
	// apply stops before any write and names it.
	l.must("ip", "-n", h2, "link", "add", "vxother", "type", "vxlan", "id", "6000", "dstport", "4789")
	out, errs, code := l.Run(h2, "apply", spec)
	if code == 0 || !strings.Contains(errs, "VXLAN device vxother already has VNI 6000 on port 4789 (guestnet did not create it)") {
		t.Fatalf("apply beside a foreign device with VNI 6000: exit %d\n%s%s", code, out, errs)
	}
	if links := l.must("ip", "-n", h2, "link", "show"); strings.Contains(links, "gst0") || strings.Contains(links, "gvx6000") {
		t.Fatalf("the refused apply made links:\n%s", links)
	}
	t.Logf("refused: %s", strings.TrimSpace(errs))
	l.must("ip", "-n", h2, "link", "del", "vxother")

	for _, h := range []string{h1, h2} {
		l.Guestnet(h, "apply", spec)
		checkVXLANDevice(t, l, h)
	}
	g1 := l.Guest(h1, "stretch", "g1", "vg1", "10.60.0.11/24", "10.60.0.1")
	g2 := l.Guest(h2, "stretch", "g2", "vg2", "10.60.0.12/24", "10.60.0.1")
	for _, g := range []string{g1, g2} {
		l.must("ip", "-n", g, "link", "set", "eth0", "mtu", "1450")
	}
	if l.Ping(g1, "10.60.0.12") || l.Ping(g1, "10.60.0.12") {
		t.Fatal("g1 reached g2 before any flood entry: the test would prove nothing")
	}

	flood := func() {
		l.In(h1, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "gvx6000", "dst", "10.10.0.2")
		l.In(h2, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "gvx6000", "dst", "10.10.0.1")
	}
	flood()
	tx0 := vxlanTX(t, l, h1)
	took := waitUntil(t, "g1 pings g2 across the VXLAN", 10*time.Second, func() bool { return l.Ping(g1, "10.60.0.12") })
	if !l.Ping(g2, "10.60.0.11") {
		t.Fatal("g2 does not reach g1")
	}
	tx := vxlanTX(t, l, h1) - tx0
	if tx == 0 {
		t.Fatal("the pings did not go out through gvx6000 on h1")
	}
	t.Logf("guests on two hosts ping each other after %v, %d packets sent through gvx6000 on h1", took.Round(time.Millisecond), tx)
	// h1's bridge did not learn g2's MAC on the VXLAN port (learning
	// off), nor the device from the packets it received (nolearning):
	// remote MACs are EVPN's to install.
	if mac := macOf(t, l, g2, "eth0"); strings.Contains(l.In(h1, "bridge", "fdb", "show", "dev", "gvx6000"), mac) {
		t.Errorf("h1 learned g2's MAC %s on gvx6000:\n%s", mac, l.In(h1, "bridge", "fdb", "show", "dev", "gvx6000"))
	}

	// Drift: the device deleted on h1, a port flag set back on h2.
	l.must("ip", "-n", h1, "link", "del", "gvx6000")
	l.In(h2, "bridge", "link", "set", "dev", "gvx6000", "learning", "on", "neigh_suppress", "off")
	if l.Ping(g1, "10.60.0.12") {
		t.Fatal("g1 reaches g2 with h1's VXLAN device deleted")
	}
	for _, h := range []string{h1, h2} {
		out := l.Guestnet(h, "apply", spec)
		checkVXLANDevice(t, l, h)
		t.Logf("%s repaired:\n%s", h, strings.TrimSpace(out))
	}
	l.In(h1, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "gvx6000", "dst", "10.10.0.2")
	waitUntil(t, "g1 pings g2 again after the repair", 10*time.Second, func() bool { return l.Ping(g1, "10.60.0.12") })

	// serve repairs the same drift as it happens.
	l.Serve_(h1, spec)
	for _, c := range []struct {
		name string
		cmd  []string
	}{
		{"ip link del gvx6000", []string{"ip", "link", "del", "gvx6000"}},
		{"bridge link set dev gvx6000 learning on neigh_suppress off", []string{"bridge", "link", "set", "dev", "gvx6000", "learning", "on", "neigh_suppress", "off"}},
		{"ip link set gvx6000 type vxlan learning", []string{"ip", "link", "set", "gvx6000", "type", "vxlan", "learning"}},
	} {
		l.In(h1, c.cmd...)
		took := waitUntil(t, "serve repairs "+c.name, 10*time.Second, func() bool {
			port, _, _ := runIn(h1, "bridge", "-d", "link", "show", "dev", "gvx6000")
			link, _, _ := runIn(h1, "ip", "-d", "link", "show", "gvx6000")
			return strings.Contains(port, "learning off") && strings.Contains(port, "neigh_suppress on") && strings.Contains(link, "nolearning")
		})
		checkVXLANDevice(t, l, h1)
		t.Logf("serve repaired %q in %v", c.name, took.Round(time.Millisecond))
	}

	// Destroy takes the device with its network.
	for _, h := range []string{h1, h2} {
		l.Guestnet(h, "destroy", "stretch")
		if out, _, code := l.Run(h, "plan", spec); code != 2 || !strings.Contains(out, "ip link add gvx6000") {
			t.Errorf("%s: after destroy, plan does not make gvx6000 again (exit %d):\n%s", h, code, out)
		}
		if links := l.must("ip", "-n", h, "link", "show"); strings.Contains(links, "gvx6000") {
			t.Errorf("%s: gvx6000 left after destroy:\n%s", h, links)
		}
	}
}

// checkVXLANDevice reads gvx6000 on host ns with iproute2 (read only).
func checkVXLANDevice(t *testing.T, l *Lab, ns string) {
	t.Helper()
	link := l.In(ns, "ip", "-d", "link", "show", "gvx6000")
	for _, w := range []string{"mtu 1450", "master gst0", ",UP,", "vxlan id 6000 ", "dstport 4789 ", "nolearning", "addrgenmode none", "alias guestnet:stretch"} {
		if !strings.Contains(link, w) {
			t.Errorf("%s: ip -d link show gvx6000 has no %q:\n%s", ns, w, link)
		}
	}
	if strings.Contains(link, " local ") {
		t.Errorf("%s: gvx6000 has a local address, but the spec leaves it to the kernel:\n%s", ns, link)
	}
	port := l.In(ns, "bridge", "-d", "link", "show", "dev", "gvx6000")
	for _, w := range []string{"master gst0", "learning off", "neigh_suppress on"} {
		if !strings.Contains(port, w) {
			t.Errorf("%s: bridge -d link show dev gvx6000 has no %q:\n%s", ns, w, port)
		}
	}
	if br := l.In(ns, "ip", "link", "show", "gst0"); !strings.Contains(br, "mtu 1450") {
		t.Errorf("%s: gst0 does not have the stretched MTU 1450:\n%s", ns, br)
	}
}

// vxlanTX is how many packets gvx6000 on ns has sent.
func vxlanTX(t *testing.T, l *Lab, ns string) int {
	t.Helper()
	var links []struct {
		Stats struct {
			TX struct {
				Packets int `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	out := l.In(ns, "ip", "-j", "-s", "link", "show", "gvx6000")
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -s link show gvx6000: %v\n%s", err, out)
	}
	return links[0].Stats.TX.Packets
}

// macOf is the MAC address of dev in ns.
func macOf(t *testing.T, l *Lab, ns, dev string) string {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	out := l.In(ns, "ip", "-j", "link", "show", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].Address == "" {
		t.Fatalf("ip -j link show %s: %v\n%s", dev, err, out)
	}
	return links[0].Address
}

// runIn runs a command in ns and returns its output, error and exit code
// (no failure: for polls).
func runIn(ns string, args ...string) (string, error, int) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return string(out), err, code
}
