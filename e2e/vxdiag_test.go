package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// vxdiagEtcd is one member of a test's etcd cluster, run in its own
// namespace; killed by its PID.
type vxdiagEtcd struct {
	name, addr string
	cmd        *exec.Cmd
	log        *bytes.Buffer
}

func (m *vxdiagEtcd) client() string { return "http://" + m.addr + ":2379" }

// kill ends the member with SIGKILL, as a crash would.
func (m *vxdiagEtcd) kill() {
	if m.cmd != nil && m.cmd.ProcessState == nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
	}
}

// etcdCluster starts Debian's etcd as n members, each in its own
// namespace on the LAN bridge br0 of namespace lan (addresses 10.10.0.201
// and up), and waits until the cluster has a quorum.
func (l *Lab) etcdCluster(lan string, n int) []*vxdiagEtcd {
	l.t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		l.t.Fatalf("etcd is not installed (apt-get install etcd-server): %v", err)
	}
	var ms []*vxdiagEtcd
	var initial []string
	for i := range n {
		m := &vxdiagEtcd{name: fmt.Sprintf("e%d", i+1), addr: fmt.Sprintf("10.10.0.%d", 201+i), log: &bytes.Buffer{}}
		ms = append(ms, m)
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", m.name, m.addr))
	}
	for _, m := range ms {
		ns := l.NS(m.name)
		l.lanPort(lan, ns, m.addr+"/24")
		m.cmd = exec.Command("ip", "netns", "exec", ns, bin, "--name", m.name, "--data-dir", filepath.Join(l.t.TempDir(), m.name),
			"--listen-client-urls", m.client(), "--advertise-client-urls", m.client(),
			"--listen-peer-urls", "http://"+m.addr+":2380", "--initial-advertise-peer-urls", "http://"+m.addr+":2380",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "vxdiag",
			"--heartbeat-interval", "50", "--election-timeout", "500")
		m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := m.cmd.Start(); err != nil {
			l.t.Fatalf("start etcd %s: %v", m.name, err)
		}
		l.t.Cleanup(m.kill)
	}
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.client())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A linearizable read through the first member's namespace.
		out, err := exec.Command("ip", "netns", "exec", l.prefix+ms[0].name, "etcdctl", "--endpoints", strings.Join(eps, ","),
			"--command-timeout", "1s", "get", "probe").CombinedOutput()
		if err == nil {
			return ms
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("etcd %v has no quorum after 30 s: %v\n%s\n%s", eps, err, out, ms[0].log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lanPort links namespace ns (interface lan0, address addr) to the bridge
// br0 of namespace lan.
func (l *Lab) lanPort(lan, ns, addr string) {
	l.t.Helper()
	port := "p" + strings.TrimPrefix(ns, l.prefix) // ph1, pe1: short enough for a link name
	l.Veth(lan, port, "", ns, "lan0", addr)
	l.must("ip", "-n", lan, "link", "set", port, "master", "br0")
}

// vxdiagLeaseSpec is host 10.10.0.1's stretched network with DHCP, its
// leases in the three-member cluster of etcdCluster.
const vxdiagLeaseSpec = `
bgp:
  asn: 65000
  router_id: 10.10.0.1
  peers: [{address: 10.10.0.2, asn: 65000}]
leases:
  etcd: [http://10.10.0.201:2379, http://10.10.0.202:2379, http://10.10.0.203:2379]
networks:
  stretch:
    mode: isolated
    bridge: gst0
    ipv4: 10.60.0.1/24
    vxlan: {vni: 6000}
    dhcp: {range: [10.60.0.100-10.60.0.250]}
`

// waitQuorumFinding runs doctor until its etcd-quorum findings satisfy
// ok, and returns them; it fails the test after 30 s.
func (l *Lab) waitQuorumFinding(host, what string, ok func([]finding) bool) []finding {
	l.t.Helper()
	var got []finding
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		fs, _ := l.doctor(host)
		if got = of(fs, "etcd-quorum"); ok(got) {
			return got
		}
	}
	l.t.Fatalf("%s: doctor's etcd-quorum findings after 30 s:\n%s", what, texts(got))
	return nil
}

// Doctor asks the running daemon about the lease cluster: nothing while
// the three members run, a warning with one killed (the quorum holds),
// an error naming the one endpoint that answers with two killed. Before
// serve runs it says it could not ask.
func TestVXLANDoctorEtcdQuorum(t *testing.T) {
	l := newLab(t)
	lan := l.NS("lan")
	l.must("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
	l.must("ip", "-n", lan, "link", "set", "br0", "up")
	h1 := l.NS("h1")
	l.lanPort(lan, h1, "10.10.0.1/24")
	ms := l.etcdCluster(lan, 3)
	spec := l.Spec(vxdiagLeaseSpec)

	fs, _ := l.doctor(h1, "--config", spec)
	if q := of(fs, "etcd-quorum"); len(q) != 1 || q[0].Severity != "info" || !strings.Contains(q[0].What, "doctor could not ask it") {
		t.Errorf("no daemon: want doctor to say it could not ask, got:\n%s", texts(q))
	}

	l.Serve_(h1, spec)
	l.waitQuorumFinding(h1, "three members", func(q []finding) bool { return len(q) == 0 })

	ms[2].kill()
	q := l.waitQuorumFinding(h1, "one member killed", func(q []finding) bool { return len(q) == 1 && q[0].Severity == "warning" })
	if !strings.Contains(q[0].What, "http://10.10.0.203:2379 do not answer") || !strings.Contains(q[0].What, "still has quorum") {
		t.Errorf("one member killed: want the warning to name 10.10.0.203 and say the quorum holds, got:\n%s", texts(q))
	}
	t.Logf("one member killed:\n%s", texts(q))

	ms[1].kill()
	q = l.waitQuorumFinding(h1, "two members killed", func(q []finding) bool { return len(q) == 1 && q[0].Severity == "error" })
	t.Logf("two members killed:\n%s", texts(q))
	for _, want := range []string{"has no quorum (answered: http://10.10.0.201:2379 (1 of 3))", "no new leases on stretch",
		"acknowledged with their remaining time, not extended"} {
		if !strings.Contains(q[0].What, want) {
			t.Errorf("two members killed: the finding lacks %q:\n%s", want, texts(q))
		}
	}
}

// Doctor reads the EVPN flood list the daemon received: host h2 announces
// its VTEP 10.20.0.2 (an address of its own beyond the LAN), which h1 has
// no route to until the test gives it one.
func TestVXLANDoctorFloodVTEP(t *testing.T) {
	l := newLab(t)
	lan := l.NS("lan")
	l.must("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
	l.must("ip", "-n", lan, "link", "set", "br0", "up")
	h1, h2 := l.NS("h1"), l.NS("h2")
	l.lanPort(lan, h1, "10.10.0.1/24")
	l.lanPort(lan, h2, "10.10.0.2/24")
	l.In(h2, "ip", "addr", "add", "10.20.0.2/32", "dev", "lo")
	spec := func(me, peer, local string) string {
		return l.Spec(fmt.Sprintf(`
bgp:
  asn: 65000
  router_id: %s
  peers: [{address: %s, asn: 65000}]
networks:
  stretch:
    mode: isolated
    bridge: gst0
    ipv4: 10.60.0.1/24
    vxlan: {vni: 6000, local: %s}
`, me, peer, local))
	}
	l.Serve_(h2, spec("10.10.0.2", "10.10.0.1", "10.20.0.2"))
	l.Serve_(h1, spec("10.10.0.1", "10.10.0.2", "10.10.0.1"))
	var vtep []finding
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		fs, _ := l.doctor(h1)
		if vtep = of(fs, "vtep-unreachable"); len(vtep) == 1 && strings.Contains(vtep[0].What, "10.20.0.2 (EVPN flood list of VNI 6000)") {
			break
		}
	}
	t.Logf("h1's doctor:\n%s", texts(vtep))
	if len(vtep) != 1 || vtep[0].Severity != "error" || vtep[0].Network != "stretch" ||
		!strings.Contains(vtep[0].What, "no route to the VTEP 10.20.0.2 (EVPN flood list of VNI 6000)") {
		t.Fatalf("want the flood list's VTEP 10.20.0.2 reported unreachable, got:\n%s", texts(vtep))
	}
	l.In(h1, "ip", "route", "add", "10.20.0.2/32", "via", "10.10.0.2")
	fs, _ := l.doctor(h1)
	if vtep := of(fs, "vtep-unreachable"); len(vtep) != 0 {
		t.Errorf("routed: still\n%s", texts(vtep))
	}
}
