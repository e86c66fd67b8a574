package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The stretch lab (issue 16): three hosts on one LAN carry one network
// stretched over VXLAN, whose leases live in a three-member etcd cluster:
//
//	                 far 198.51.100.10 (+ .53 dnsmasq, the upstream resolver)
//	                  |
//	                 rtr 198.51.100.1 / 10.10.0.254 (a plain router, no NAT)
//	                  |
//	   +--------------+---------- br0 [lan] ------------------+
//	   |              |              |            |      |      |
//	 h1 10.10.0.1   h2 10.10.0.2   h3 10.10.0.3   e1 .201 e2 .202 e3 .203 (etcd)
//	   |              |              |
//	 gst0+gvx6000   gst0+gvx6000   gst0+gvx6000   stretch 10.60.0.1/24 on each (anycast)
//	   |              |              |
//	 guests         guests         guests        (veth into the host's bridge)
//
// Every host reads the same spec file (the contract of the issue: peers are
// all three hosts, no router_id, leases.etcd the three members) and runs
// `guestnet serve --netns hN`, killable by PID. The etcd members are
// Debian's /usr/bin/etcd as children of the test, each in its own
// namespace, data in t.TempDir(), killed by PID and restartable on the same
// data. Hosts reach the far host by their default route via rtr; their nat
// network masquerades to their own LAN address.

const (
	stretchNet    = "stretch"
	stretchBridge = "gst0"
	stretchVNI    = 6000
	stretchGW     = "10.60.0.1"
	stretchDomain = "stretch.internal"
	farAddr       = "198.51.100.10"
	farDNS        = "198.51.100.53"
	farName       = "web.example.test" // what the far dnsmasq answers
	farNameAddr   = "198.51.100.80"
)

var stretchVX = fmt.Sprintf("gvx%d", stretchVNI)

// stretchOpts is what a test changes in the shared spec.
type stretchOpts struct {
	Range string // DHCP range ("" = 10.60.0.100-10.60.0.250)
	Lease string // DHCP lease time ("" = 1h)
	Block int    // leases.block (0 = not written: the default, 16)
	Hold  string // BGP hold time of every peer ("" = the default)
}

// stretchLab is the LAN, the router and far host, the etcd cluster and the
// three guestnet hosts.
type stretchLab struct {
	*Lab
	LAN, Rtr, Far string
	Hosts         []*stretchHost
	Etcd          []*etcdMember
	SpecPath      string
	dir           string
	lanPorts      int
	guests        int
}

// newStretchLab builds the whole lab and starts everything: etcd (healthy),
// then serve on the three hosts.
func newStretchLab(t *testing.T, o stretchOpts) *stretchLab {
	s := &stretchLab{Lab: newLab(t), dir: t.TempDir()}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("the stretch lab needs Debian's etcd (apt-get install etcd-server)")
	}
	s.LAN = s.NS("lan")
	s.must("ip", "-n", s.LAN, "link", "add", "br0", "type", "bridge")
	s.must("ip", "-n", s.LAN, "link", "set", "br0", "up")

	// The router and the far host: the pretend internet.
	s.Rtr, s.Far = s.NS("rtr"), s.NS("far")
	s.onLAN(s.Rtr, "10.10.0.254/24")
	s.Veth(s.Rtr, "up0", "198.51.100.1/24", s.Far, "eth0", farAddr+"/24")
	s.must("ip", "-n", s.Far, "addr", "add", farDNS+"/32", "dev", "lo")
	s.must("ip", "-n", s.Far, "route", "add", "default", "via", "198.51.100.1")
	s.In(s.Rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	s.Serve(s.Far, farAddr+":8080") // answers each connection with the source it saw
	s.Proc("dnsmasq", s.Far, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address="+farDNS, "--bind-interfaces", "--address=/example.test/"+farNameAddr,
		"--user=root", "--pid-file=")
	s.waitUDP(s.Far, 53)

	for i := 1; i <= 3; i++ {
		m := &etcdMember{l: s, N: i, Addr: fmt.Sprintf("10.10.0.%d", 200+i),
			Dir: filepath.Join(t.TempDir(), "etcd")}
		m.NS = s.NS(fmt.Sprintf("e%d", i))
		s.onLAN(m.NS, m.Addr+"/24")
		s.Etcd = append(s.Etcd, m)
	}
	for i := 1; i <= 3; i++ {
		h := &stretchHost{s: s, N: i, Addr: fmt.Sprintf("10.10.0.%d", i),
			logPath: filepath.Join(s.dir, fmt.Sprintf("h%d.log", i))}
		h.NS = s.NS(fmt.Sprintf("h%d", i))
		s.onLAN(h.NS, h.Addr+"/24")
		s.must("ip", "-n", h.NS, "route", "add", "default", "via", "10.10.0.254")
		s.Hosts = append(s.Hosts, h)
	}
	s.SpecPath = filepath.Join(s.dir, "guestnet.yaml")
	if err := os.WriteFile(s.SpecPath, []byte(s.specText(o)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range s.Etcd {
		m.Start()
	}
	s.WaitEtcd(3)
	for _, h := range s.Hosts {
		h.Start()
	}
	return s
}

// specText is the one spec every host reads.
func (s *stretchLab) specText(o stretchOpts) string {
	rng, lease := o.Range, o.Lease
	if rng == "" {
		rng = "10.60.0.100-10.60.0.250"
	}
	if lease == "" {
		lease = "1h"
	}
	var b strings.Builder
	b.WriteString("bgp:\n  asn: 65000\n  peers:\n")
	for _, h := range s.Hosts {
		hold := ""
		if o.Hold != "" {
			hold = ", hold: " + o.Hold
		}
		fmt.Fprintf(&b, "    - {address: %s, asn: 65000%s}\n", h.Addr, hold)
	}
	var eps []string
	for _, m := range s.Etcd {
		eps = append(eps, m.ClientURL())
	}
	fmt.Fprintf(&b, "leases:\n  etcd: [%s]\n", strings.Join(eps, ", "))
	if o.Block != 0 {
		fmt.Fprintf(&b, "  block: %d\n", o.Block)
	}
	fmt.Fprintf(&b, `networks:
  %s:
    mode: nat
    bridge: %s
    ipv4: %s/24
    vxlan: {vni: %d}
    dhcp: {range: [%s], lease: %s}
    dns: {domain: %s, upstream: [%s]}
`, stretchNet, stretchBridge, stretchGW, stretchVNI, rng, lease, stretchDomain, farDNS)
	return b.String()
}

// onLAN gives ns a veth lan0 with addr, a port of the LAN's bridge.
func (s *stretchLab) onLAN(ns, addr string) {
	s.lanPorts++
	port := fmt.Sprintf("p%d", s.lanPorts)
	s.Veth(ns, "lan0", addr, s.LAN, port, "")
	s.must("ip", "-n", s.LAN, "link", "set", port, "master", "br0")
}

// etcdMember is one member of the lease cluster: Debian's etcd 3.4 run as
// a child of the test inside its own namespace.
type etcdMember struct {
	l    *stretchLab
	N    int
	NS   string
	Addr string // 10.10.0.20N
	Dir  string // its data folder (kept across Kill and Start)
	cmd  *exec.Cmd
	log  *os.File
}

func (m *etcdMember) name() string      { return fmt.Sprintf("e%d", m.N) }
func (m *etcdMember) ClientURL() string { return fmt.Sprintf("http://%s:2379", m.Addr) }
func (m *etcdMember) peerURL() string   { return fmt.Sprintf("http://%s:2380", m.Addr) }
func (m *etcdMember) Running() bool     { return m.cmd != nil && m.cmd.ProcessState == nil }
func (s *stretchLab) etcdEndpoints() string {
	var eps []string
	for _, m := range s.Etcd {
		eps = append(eps, m.ClientURL())
	}
	return strings.Join(eps, ",")
}

// Start runs the member (again: on its existing data folder, etcd ignores
// the --initial-* flags and rejoins).
func (m *etcdMember) Start() {
	t := m.l.t
	t.Helper()
	var cluster []string
	for _, o := range m.l.Etcd {
		cluster = append(cluster, o.name()+"="+o.peerURL())
	}
	logf, err := os.OpenFile(filepath.Join(m.l.dir, m.name()+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m.log = logf
	// `ip netns exec` execs etcd: the PID is etcd's.
	m.cmd = exec.Command("ip", "netns", "exec", m.NS, "etcd",
		"--name", m.name(), "--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL(), "--advertise-client-urls", m.ClientURL(),
		"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", filepath.Base(m.l.dir),
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", m.name(), err)
	}
	cmd := m.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		logf.Close()
	})
}

// Kill ends the member with SIGKILL, by PID, as a crash would.
func (m *etcdMember) Kill() {
	if m.Running() {
		m.cmd.Process.Signal(syscall.SIGKILL)
		m.cmd.Wait()
	}
}

// WaitEtcd waits until n members answer `etcdctl endpoint health`.
func (s *stretchLab) WaitEtcd(n int) {
	s.t.Helper()
	var out string
	waitUntil(s.t, fmt.Sprintf("%d etcd members healthy", n), 30*time.Second, func() bool {
		b, _ := exec.Command("ip", "netns", "exec", s.Hosts[0].NS, "etcdctl", "--endpoints", s.etcdEndpoints(),
			"--dial-timeout", "1s", "--command-timeout", "2s", "endpoint", "health").CombinedOutput()
		out = string(b)
		return strings.Count(out, "is healthy") >= n
	})
}

// stretchHost is one guestnet host.
type stretchHost struct {
	s       *stretchLab
	N       int
	NS      string
	Addr    string // on the LAN, and its VTEP: 10.10.0.N
	logPath string // serve's output, across restarts
	cmd     *exec.Cmd
}

// Start runs `guestnet serve` on the shared spec and waits until its API
// answers. It is stopped (SIGTERM, by PID) when the test ends.
func (h *stretchHost) Start() {
	t := h.s.t
	t.Helper()
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(guestnetBin, "--netns", h.NS, "--state-dir", h.s.StateDir,
		"serve", "--config", h.s.SpecPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		logf.Close()
		if t.Failed() {
			t.Logf("h%d serve log:\n%s", h.N, lastLines(h.Log(), 25))
		}
	})
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, errs, code := h.s.Run(h.NS, "leases"); code == 0 && strings.Contains(errs, "from the daemon") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("h%d: serve exited:\n%s", h.N, lastLines(h.Log(), 30))
		default:
		}
	}
	t.Fatalf("h%d: serve did not become ready:\n%s", h.N, lastLines(h.Log(), 30))
}

// Kill ends serve with SIGKILL, by PID, as a crash would.
func (h *stretchHost) Kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := syscall.Kill(h.cmd.Process.Pid, 0); err != nil {
			return
		}
	}
}

// Log is serve's output so far.
func (h *stretchHost) Log() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

// Guestnet runs guestnet against h.
func (h *stretchHost) Guestnet(args ...string) string {
	h.s.t.Helper()
	return h.s.Guestnet(h.NS, args...)
}

// leaseRow is one lease of `guestnet leases -o json`, with whatever else
// a host reports about it.
type leaseRow map[string]any

func (r leaseRow) str(k string) string { s, _ := r[k].(string); return s }

// Leases is the stretched network's leases as h lists them.
func (h *stretchHost) Leases() []leaseRow {
	h.s.t.Helper()
	out := h.Guestnet("-o", "json", "leases", stretchNet)
	var rows []leaseRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		h.s.t.Fatalf("h%d leases -o json: %v\n%s", h.N, err, out)
	}
	return rows
}

// LeaseOf is the bound lease of mac as h lists it (nil if none).
func (h *stretchHost) LeaseOf(mac string) leaseRow {
	for _, r := range h.Leases() {
		if strings.EqualFold(r.str("mac"), mac) && r.str("state") == "bound" {
			return r
		}
	}
	return nil
}

// fdbEntry is one entry of `bridge -j fdb show`.
type fdbEntry struct {
	MAC    string   `json:"mac"`
	Dev    string   `json:"ifname"`
	Dst    string   `json:"dst"`
	Master string   `json:"master"`
	State  string   `json:"state"`
	Flags  []string `json:"flags"`
}

func (e fdbEntry) has(flag string) bool { return slices.Contains(e.Flags, flag) }

func (e fdbEntry) String() string {
	return fmt.Sprintf("%s dev %s dst %s master %s state %s flags %v", e.MAC, e.Dev, e.Dst, e.Master, e.State, e.Flags)
}

// FDB is the forwarding entries of dev on h (the VXLAN device's own and
// the bridge's entries on that port).
func (h *stretchHost) FDB(dev string) []fdbEntry {
	h.s.t.Helper()
	es, err := h.fdb(dev)
	if err != nil {
		h.s.t.Fatal(err)
	}
	return es
}

func (h *stretchHost) fdb(dev string) ([]fdbEntry, error) {
	out, err := exec.Command("bridge", "-n", h.NS, "-j", "fdb", "show", "dev", dev).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("h%d: bridge fdb show dev %s: %v: %s", h.N, dev, err, out)
	}
	var es []fdbEntry
	if err := json.Unmarshal(out, &es); err != nil {
		return nil, fmt.Errorf("h%d: bridge -j fdb: %v\n%s", h.N, err, out)
	}
	return es, nil
}

// FloodVTEPs is the dst of h's all-zero entries on the VXLAN device: where
// its broadcast goes.
func (h *stretchHost) FloodVTEPs() []string {
	var out []string
	es, _ := h.fdb(stretchVX) // no device (yet): nothing, polled again
	for _, e := range es {
		if e.MAC == "00:00:00:00:00:00" && e.Dst != "" {
			out = append(out, e.Dst)
		}
	}
	slices.Sort(out)
	return out
}

// others is every host but h.
func (s *stretchLab) others(h *stretchHost) []*stretchHost {
	var out []*stretchHost
	for _, o := range s.Hosts {
		if o != h {
			out = append(out, o)
		}
	}
	return out
}

// WaitOverlay waits until every live host floods to every other live
// host's VTEP (EVPN type 3 from each peer installed): the overlay is up.
func (s *stretchLab) WaitOverlay(live ...*stretchHost) time.Duration {
	s.t.Helper()
	if len(live) == 0 {
		live = s.Hosts
	}
	start := time.Now()
	for {
		var missing []string
		for _, h := range live {
			have := h.FloodVTEPs()
			for _, o := range live {
				if o != h && !slices.Contains(have, o.Addr) {
					missing = append(missing, fmt.Sprintf("h%d floods not to %s", h.N, o.Addr))
				}
			}
		}
		if len(missing) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > 40*time.Second {
			var fdb []string
			for _, h := range live {
				_, err := h.fdb(stretchVX)
				fdb = append(fdb, fmt.Sprintf("h%d: %v", h.N, err))
			}
			s.t.Fatalf("overlay not up within 40 s (EVPN type 3 of every peer installed): %s\n%s",
				strings.Join(missing, "; "), strings.Join(fdb, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stretchGuest is a guest namespace on a veth port of a host's bridge.
type stretchGuest struct {
	s      *stretchLab
	Name   string
	NS     string
	MAC    string
	Host   *stretchHost
	HostIf string // its port (the veth's host end)
	hook   string // its DHCP hook script
	events string // what the hook recorded: "bound 10.60.0.101 3600"
	client *exec.Cmd
}

// Guest makes a guest namespace on host h with a fixed MAC, attached to
// the stretched network. It has no address until DHCP gives one.
func (s *stretchLab) Guest(h *stretchHost, name string) *stretchGuest {
	s.t.Helper()
	s.guests++
	g := &stretchGuest{s: s, Name: name, Host: h, HostIf: fmt.Sprintf("vs%d", s.guests),
		MAC: fmt.Sprintf("02:60:00:00:%02x:%02x", h.N, s.guests)}
	g.NS = s.NS(name)
	s.Veth(g.NS, "eth0", "", h.NS, g.HostIf, "")
	s.must("ip", "-n", g.NS, "link", "set", "eth0", "address", g.MAC)
	h.Guestnet("attach", stretchNet, g.HostIf)
	g.hook, g.events = s.hookScript(name)
	return g
}

// hookScript writes a DHCP client hook that sets the address, default
// route and MTU it was given (only in its own namespace: the stock hooks
// would rewrite this machine's /etc/resolv.conf) and records each event,
// with the lease time, in a file.
func (s *stretchLab) hookScript(name string) (hook, events string) {
	dir := s.t.TempDir()
	hook, events = filepath.Join(dir, "hook-"+name), filepath.Join(dir, "events-"+name)
	os.WriteFile(hook, []byte(fmt.Sprintf(`#!/bin/sh
# udhcpc: $1=bound|renew|deconfig|leasefail|nak, $ip $mask $router $lease $mtu
echo "$1 $ip $lease" >> %s
case "$1" in
bound|renew)
  ip addr flush dev $interface
  ip addr add $ip/$mask dev $interface
  [ -n "$mtu" ] && ip link set dev $interface mtu $mtu
  ip route replace default via ${router%%%% *}
  ;;
esac
exit 0
`, events)), 0o755)
	return hook, events
}

// Events is what g's DHCP hook recorded, one line each.
func (g *stretchGuest) Events() []string {
	b, _ := os.ReadFile(g.events)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// DHCP runs one udhcpc exchange (it quits once bound) and returns the
// address, or "" and udhcpc's output.
func (g *stretchGuest) DHCP(extra ...string) (string, string) {
	args := append([]string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "4", "-T", "2",
		"-x", "hostname:" + g.Name, "-s", g.hook}, extra...)
	out, err := g.s.tryIn(g.NS, args...)
	if err != nil {
		return "", out
	}
	return g.s.addrOf(g.NS), out
}

// MustDHCP is DHCP that fails the test without a lease.
func (g *stretchGuest) MustDHCP() string {
	g.s.t.Helper()
	a, out := g.DHCP()
	if a == "" {
		g.s.t.Fatalf("%s on h%d: no lease:\n%s\nh%d log:\n%s", g.Name, g.Host.N, out, g.Host.N, lastLines(g.Host.Log(), 20))
	}
	return a
}

// RunClient starts udhcpc in the background, as a guest's own client that
// stays and renews, and waits for its lease. It ends (by PID) with the test.
func (g *stretchGuest) RunClient() string {
	g.s.t.Helper()
	g.client = exec.Command("ip", "netns", "exec", g.NS, "busybox", "udhcpc", "-f", "-i", "eth0",
		"-t", "4", "-T", "2", "-x", "hostname:"+g.Name, "-s", g.hook)
	if err := g.client.Start(); err != nil {
		g.s.t.Fatal(err)
	}
	c := g.client
	g.s.t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	waitUntil(g.s.t, g.Name+" bound by its running udhcpc", 20*time.Second, func() bool {
		return g.s.addrOf(g.NS) != ""
	})
	return g.s.addrOf(g.NS)
}

// Renew has the running client renew now (udhcpc's SIGUSR1) and returns
// the hook's event line of the answer ("renew IP LEASE"), or "" if none
// came within timeout.
func (g *stretchGuest) Renew(timeout time.Duration) string {
	before := len(g.Events())
	g.client.Process.Signal(syscall.SIGUSR1)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ev := g.Events()
		for _, e := range ev[before:] {
			if strings.HasPrefix(e, "renew ") || strings.HasPrefix(e, "bound ") {
				return e
			}
		}
	}
	return ""
}

// Migrate moves g to h the way a live migration does: the destination
// gets a new port (QEMU's new TAP; here a veth whose guest end is eth1
// with g's MAC) while the source's port stays, up, with g's MAC in the
// source bridge's FDB (the source QEMU lives on until the switchover is
// done); at the switchover the guest's address and default route go to
// the new NIC. Done (the source QEMU quits) deletes the old NIC, and the
// new one takes the name eth0, under which g's running DHCP client (bound
// by name) renews.
func (g *stretchGuest) Migrate(h *stretchHost, addr string) (done func()) {
	s := g.s
	s.t.Helper()
	s.guests++
	newIf := fmt.Sprintf("vs%d", s.guests)
	s.Veth(g.NS, "eth1", "", h.NS, newIf, "")
	s.must("ip", "-n", g.NS, "link", "set", "eth1", "address", g.MAC, "mtu", "1450")
	h.Guestnet("attach", stretchNet, newIf)
	// The switchover.
	s.must("ip", "-n", g.NS, "addr", "flush", "dev", "eth0")
	s.must("ip", "-n", g.NS, "addr", "add", addr+"/24", "dev", "eth1")
	s.must("ip", "-n", g.NS, "route", "replace", "default", "via", stretchGW, "dev", "eth1")
	old := g.Host
	g.Host = h
	return func() {
		s.t.Helper()
		s.must("ip", "-n", g.NS, "link", "del", "eth0") // and with it the port on the old host
		old.Guestnet("detach", stretchNet, g.HostIf)
		g.HostIf = newIf
		s.must("ip", "-n", g.NS, "link", "set", "eth1", "down")
		s.must("ip", "-n", g.NS, "link", "set", "eth1", "name", "eth0")
		s.must("ip", "-n", g.NS, "link", "set", "eth0", "up")
		s.must("ip", "-n", g.NS, "route", "replace", "default", "via", stretchGW, "dev", "eth0")
	}
}

// clientBatch is n DHCP clients behind one host: one namespace with n
// veth ends, each a port of the host's bridge with its own MAC, and n
// udhcpc at once. Cheaper than n namespaces, the same on the wire.
type clientBatch struct {
	s    *stretchLab
	NS   string
	Host *stretchHost
	MACs []string
	log  string // the shared hook's record: "IFACE bound IP"
	hook string
}

// Clients makes a batch of n clients on h (not yet started).
func (s *stretchLab) Clients(h *stretchHost, n int) *clientBatch {
	s.t.Helper()
	s.guests++
	b := &clientBatch{s: s, Host: h}
	b.NS = s.NS(fmt.Sprintf("c%d", s.guests))
	dir := s.t.TempDir()
	b.hook, b.log = filepath.Join(dir, "hook"), filepath.Join(dir, "events")
	// Records only: n addresses of one subnet on n links of one
	// namespace would make the kernel answer ARP for all on any.
	os.WriteFile(b.hook, []byte(fmt.Sprintf("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$interface bound $ip\" >> %s\nexit 0\n", b.log)), 0o755)
	batch := filepath.Join(dir, "links")
	var lines []string
	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("02:61:%02x:00:%02x:%02x", h.N, s.guests%256, i)
		b.MACs = append(b.MACs, mac)
		lines = append(lines, fmt.Sprintf("link add k%d-%d type veth peer name e%d netns %s", s.guests, i, i, b.NS))
	}
	os.WriteFile(batch, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	s.must("ip", "-n", h.NS, "-batch", batch)
	for i := 0; i < n; i++ {
		s.must("ip", "-n", b.NS, "link", "set", fmt.Sprintf("e%d", i), "address", b.MACs[i], "up")
		port := fmt.Sprintf("k%d-%d", s.guests, i)
		s.must("ip", "-n", h.NS, "link", "set", port, "up")
		h.Guestnet("attach", stretchNet, port)
	}
	return b
}

// Run starts every client of the batch at once (one udhcpc each) and waits
// for them; it returns interface -> address of those that got a lease.
func (b *clientBatch) Run() map[string]string {
	var wg sync.WaitGroup
	for i := range b.MACs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exec.Command("ip", "netns", "exec", b.NS, "busybox", "udhcpc", "-i", fmt.Sprintf("e%d", i),
				"-n", "-q", "-t", "5", "-T", "3", "-s", b.hook).Run()
		}()
	}
	wg.Wait()
	return b.Bound()
}

// Bound is interface -> address of what the hook recorded.
func (b *clientBatch) Bound() map[string]string {
	got := map[string]string{}
	raw, _ := os.ReadFile(b.log)
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			got[f[0]] = f[2]
		}
	}
	return got
}

// heard records what frames from one source MAC reach eth0 of a guest
// namespace: an AF_PACKET socket inside it, which sees every frame its
// port delivers (a broadcast flooded over the VXLAN, too).
type heard struct {
	mu     sync.Mutex
	frames []string // "arp who-has 10.60.0.77 tell 10.60.0.100", "udp 0.0.0.0:68 > 255.255.255.255:67"
	stop   chan struct{}
	done   chan struct{}
}

// Hear starts recording, in ns, the frames whose source MAC is from.
func (s *stretchLab) Hear(ns, from string) *heard {
	s.t.Helper()
	fd := listenEth0(s.t, ns)
	h := &heard{stop: make(chan struct{}), done: make(chan struct{})}
	src, _ := net.ParseMAC(from)
	go func() {
		defer close(h.done)
		defer unix.Close(fd)
		buf := make([]byte, 2048)
		for {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				select {
				case <-h.stop:
					return
				default:
					continue
				}
			}
			if k < 42 || !bytes.Equal(buf[6:12], src) {
				continue
			}
			var what string
			switch binary.BigEndian.Uint16(buf[12:14]) {
			case unix.ETH_P_ARP:
				op := map[uint16]string{1: "who-has", 2: "reply"}[binary.BigEndian.Uint16(buf[20:22])]
				what = fmt.Sprintf("arp %s %s tell %s", op, net.IP(buf[38:42]), net.IP(buf[28:32]))
			case unix.ETH_P_IP:
				ip := buf[14:k]
				ihl := int(ip[0]&0x0f) * 4
				if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
					continue
				}
				what = fmt.Sprintf("udp %s:%d > %s:%d", net.IP(ip[12:16]), binary.BigEndian.Uint16(ip[ihl:]),
					net.IP(ip[16:20]), binary.BigEndian.Uint16(ip[ihl+2:]))
			default:
				continue
			}
			h.mu.Lock()
			h.frames = append(h.frames, what)
			h.mu.Unlock()
		}
	}()
	s.t.Cleanup(func() { h.Stop() })
	return h
}

// Stop ends the recording (once what is queued is read) and returns it.
func (h *heard) Stop() []string {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.frames)
}
