package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// Doctor on stretched networks (issue 16), in namespaces: an underlay too
// small for the network's MTU plus VXLAN, a VTEP with no route or one
// routed into the guest bridge, the VXLAN device out of its bridge, and
// etcd losing its quorum under a running guestnet serve.

// vxdiagSpec is host 10.10.0.1's: peer 10.10.0.2 is on its LAN, 10.20.0.9
// (a VTEP of another rack) has no route until the test gives it one.
const vxdiagSpec = `
bgp:
  asn: 65000
  router_id: 10.10.0.1
  peers:
    - {address: 10.10.0.2, asn: 65000}
    - {address: 10.20.0.9, asn: 65000}
networks:
  stretch:
    mode: isolated
    bridge: gst0
    ipv4: 10.60.0.1/24
    mtu: 1450
    vxlan: {vni: 6000}
`

// of returns the findings of one check.
func of(fs []finding, check string) []finding {
	var out []finding
	for _, f := range fs {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func (f finding) text() string {
	return f.Severity + " " + f.Check + " [" + f.Network + "]: " + f.What + " | " + strings.Join(f.Evidence, " | ") + " | " + f.Fix
}

func texts(fs []finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.text())
	}
	return strings.Join(s, "\n")
}

func TestVXLANDoctorMTUAndVTEPs(t *testing.T) {
	l := newLab(t)
	h1, h2 := l.NS("h1"), l.NS("h2")
	l.Veth(h1, "lan0", "10.10.0.1/24", h2, "lan0", "10.10.0.2/24")
	l.In(h1, "ip", "link", "set", "lan0", "mtu", "1400")
	l.In(h2, "ip", "link", "set", "lan0", "mtu", "1400")
	spec := l.Spec(vxdiagSpec)
	l.Guestnet(h1, "apply", spec)

	fs, code := l.doctor(h1, "--config", spec)
	t.Logf("doctor, underlay mtu 1400, 10.20.0.9 without a route:\n%s", texts(fs))
	if code != 1 {
		t.Errorf("doctor exit %d, want 1", code)
	}
	mtu := of(fs, "vxlan-mtu")
	if len(mtu) != 1 || mtu[0].Severity != "error" || mtu[0].Network != "stretch" ||
		!strings.Contains(mtu[0].What, "MTU of stretch (1450)") || !strings.Contains(mtu[0].What, "MTU of lan0 (1400)") ||
		!strings.Contains(mtu[0].Fix, "lower the network's MTU to 1350") || !strings.Contains(mtu[0].Fix, "ip link set lan0 mtu 1500") {
		t.Errorf("want one vxlan-mtu error naming 1450, lan0's 1400 and both fixes, got:\n%s", texts(mtu))
	}
	vtep := of(fs, "vtep-unreachable")
	if len(vtep) != 1 || vtep[0].Severity != "error" || !strings.Contains(vtep[0].What, "no route to the VTEP 10.20.0.9 (bgp peer)") {
		t.Errorf("want one vtep-unreachable error for 10.20.0.9 alone (10.10.0.2 is on the LAN), got:\n%s", texts(vtep))
	}

	// Fixed: the underlay raised to 1500 on both ends, 10.20.0.9 routed
	// over the LAN.
	l.In(h1, "ip", "link", "set", "lan0", "mtu", "1500")
	l.In(h2, "ip", "link", "set", "lan0", "mtu", "1500")
	l.In(h1, "ip", "route", "add", "10.20.0.9/32", "via", "10.10.0.2", "dev", "lan0")
	fs, _ = l.doctor(h1, "--config", spec)
	if bad := append(of(fs, "vxlan-mtu"), of(fs, "vtep-unreachable")...); len(bad) != 0 {
		t.Errorf("fixed underlay: still\n%s", texts(bad))
	}

	// A route that sends the VTEP into the guest bridge.
	l.In(h1, "ip", "route", "replace", "10.20.0.9/32", "dev", "gst0")
	fs, _ = l.doctor(h1, "--config", spec)
	vtep = of(fs, "vtep-unreachable")
	if len(vtep) != 1 || !strings.Contains(vtep[0].What, "leaves through gst0, the bridge of guest network stretch") {
		t.Errorf("want the VTEP routed into gst0 reported, got:\n%s", texts(vtep))
	}
	l.In(h1, "ip", "route", "del", "10.20.0.9/32")

	// The VXLAN device: missing, then made by hand outside the bridge,
	// then put in it.
	if exec.Command("ip", "-n", h1, "link", "show", "gvx6000").Run() == nil {
		l.In(h1, "ip", "link", "del", "gvx6000")
	}
	fs, _ = l.doctor(h1, "--config", spec)
	if dev := of(fs, "vxlan-device"); len(dev) != 1 || !strings.Contains(dev[0].What, "the VXLAN device gvx6000 of stretch (VNI 6000) does not exist") {
		t.Errorf("want the missing device reported, got:\n%s", texts(dev))
	}
	l.In(h1, "ip", "link", "add", "gvx6000", "mtu", "1450", "type", "vxlan", "id", "6000", "dstport", "4789", "local", "10.10.0.1", "nolearning")
	l.In(h1, "ip", "link", "set", "gvx6000", "up")
	fs, _ = l.doctor(h1, "--config", spec)
	if dev := of(fs, "vxlan-device"); len(dev) != 1 || dev[0].Severity != "error" || !strings.Contains(dev[0].What, "gvx6000 is not a port of gst0") {
		t.Errorf("want the device outside the bridge reported, got:\n%s", texts(dev))
	}
	l.In(h1, "ip", "link", "set", "gvx6000", "master", "gst0")
	l.In(h1, "bridge", "link", "set", "dev", "gvx6000", "learning", "off", "neigh_suppress", "on")
	fs, _ = l.doctor(h1, "--config", spec)
	if dev := of(fs, "vxlan-device"); len(dev) != 0 {
		t.Errorf("device in the bridge, learning off, neigh_suppress on: still\n%s", texts(dev))
	}
}
