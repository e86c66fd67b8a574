// Package e2e builds hosts out of network namespaces and veth pairs, runs
// the guestnet binary against them with --netns, and checks the result with
// real packets. It needs root; it never touches the root namespace: every
// link is created inside a test namespace, and every namespace is removed
// when its test ends, pass or fail.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
)

var guestnetBin string

func TestMain(m *testing.M) {
	if arg := os.Getenv("GUESTNET_HOLD_TCP"); arg != "" {
		holdTCPChild(arg) // a child of TestDNSTCPHoldDoesNotStarveOtherNetwork
	}
	dir, err := os.MkdirTemp("", "guestnet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	guestnetBin = filepath.Join(dir, "guestnet")
	build := exec.Command("go", "build", "-o", guestnetBin, "../cmd/guestnet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build guestnet:", err)
		os.Exit(1)
	}
	// The machine's resolver file is a thing tests must never change: a
	// DHCP client run with its stock hook in a test namespace rewrites it
	// (ip netns exec gives a namespace no /etc/resolv.conf of its own).
	// Every client here runs with the lab's own hook; this says so.
	resolvBefore, _ := os.ReadFile("/etc/resolv.conf")
	code := m.Run()
	os.RemoveAll(dir)
	if after, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(after, resolvBefore) {
		fmt.Fprintf(os.Stderr, "FAIL: the e2e tests changed this machine's /etc/resolv.conf:\nbefore:\n%safter:\n%s", resolvBefore, after)
		code = 1
	}
	os.Exit(code)
}

// needRoot skips a test that needs root, loudly; with GUESTNET_E2E_REQUIRED=1
// (set by .ci/run) it fails instead, so CI can never pass by skipping.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatal("e2e tests need root (network namespaces), and GUESTNET_E2E_REQUIRED=1")
	}
	t.Skip("SKIPPED: e2e tests need root to create network namespaces")
}

var nsCounter atomic.Int32

// Lab is one test's set of namespaces and guestnet's state folder.
type Lab struct {
	t        testing.TB
	prefix   string
	StateDir string
}

func newLab(t testing.TB) *Lab {
	needRoot(t)
	return &Lab{t: t, prefix: fmt.Sprintf("gn%d-%d-", os.Getpid()%100000, nsCounter.Add(1)), StateDir: t.TempDir()}
}

// NS creates a namespace (lo up) and registers its removal.
func (l *Lab) NS(name string) string {
	full := l.prefix + name
	l.must("ip", "netns", "add", full)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", full).Run() })
	l.must("ip", "-n", full, "link", "set", "lo", "up")
	return full
}

// Veth links namespace a (interface an, address aaddr) with b; both up.
// An empty address leaves that end without one.
func (l *Lab) Veth(a, an, aaddr, b, bn, baddr string) {
	l.must("ip", "-n", a, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b)
	for _, e := range [][3]string{{a, an, aaddr}, {b, bn, baddr}} {
		if e[2] != "" {
			l.must("ip", "-n", e[0], "addr", "add", e[2], "dev", e[1])
		}
		l.must("ip", "-n", e[0], "link", "set", e[1], "up")
	}
}

// Guest makes a guest namespace on a veth whose host end (hostIf, in ns
// host) is attached with `guestnet attach`; addr and gw are the guest's.
func (l *Lab) Guest(host, network, name, hostIf, addr, gw string) string {
	g := l.NS(name)
	l.Veth(g, "eth0", addr, host, hostIf, "")
	if gw != "" {
		l.must("ip", "-n", g, "route", "add", "default", "via", gw)
	}
	l.Guestnet(host, "attach", network, hostIf)
	return g
}

func (l *Lab) must(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// In runs a command inside a namespace and returns its output.
func (l *Lab) In(ns string, args ...string) string {
	l.t.Helper()
	return l.must(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// Run runs guestnet against ns and returns stdout, stderr and exit code.
func (l *Lab) Run(ns string, args ...string) (string, string, int) {
	l.t.Helper()
	full := append([]string{"--netns", ns, "--state-dir", l.StateDir}, args...)
	cmd := exec.Command(guestnetBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("guestnet %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// Guestnet runs guestnet and fails the test unless it exits 0.
func (l *Lab) Guestnet(ns string, args ...string) string {
	l.t.Helper()
	out, errs, code := l.Run(ns, args...)
	if code != 0 {
		l.t.Fatalf("guestnet %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// Spec writes a spec file and returns its path.
func (l *Lab) Spec(yaml string) string {
	p := filepath.Join(l.t.TempDir(), "guestnet.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// ApplyJSON applies a spec and returns the number of kernel writes.
func (l *Lab) ApplyJSON(ns, spec string) int {
	l.t.Helper()
	out := l.Guestnet(ns, "-o", "json", "apply", spec)
	var r struct {
		Writes int `json:"kernel_writes"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("apply -o json: %v\n%s", err, out)
	}
	return r.Writes
}

// Ping reports whether one ICMP echo from ns to addr is answered
// (busybox ping: the machine has no other ping).
func (l *Lab) Ping(ns, addr string) bool {
	cmd := exec.Command("ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", addr)
	return cmd.Run() == nil
}

// Serve listens on TCP addr:port inside ns; each accepted connection is
// sent the peer address it saw, then closed. The listener lives until the
// test ends.
func (l *Lab) Serve(ns, addrport string) {
	l.t.Helper()
	l.answerTCP(ns, addrport, func(peer net.IP) string { return peer.String() })
}

// answerTCP listens on TCP addr:port inside ns until the test ends and
// sends each connection the line answer makes of its peer's address.
func (l *Lab) answerTCP(ns, addrport string, answer func(peer net.IP) string) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	var ln net.Listener
	family := "tcp4"
	if ap, err := netip.ParseAddrPort(addrport); err == nil && ap.Addr().Is6() {
		family = "tcp6"
	}
	if err := n.Do(func() (err error) { ln, err = net.Listen(family, addrport); return }); err != nil {
		l.t.Fatalf("listen %s in %s: %v", addrport, ns, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, answer(c.RemoteAddr().(*net.TCPAddr).IP))
			c.Close()
		}
	}()
}

// Dial connects from ns to addr:port and returns the source address the
// server saw, or an error.
func (l *Lab) Dial(ns, addrport string) (string, error) {
	c, err := dialIn(ns, addrport, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:k])), nil
}

// expect records one connectivity check and fails the test when the
// observed result differs.
func (l *Lab) expect(what string, want, got bool) {
	l.t.Helper()
	verdict := map[bool]string{true: "reaches", false: "blocked"}
	if want != got {
		l.t.Errorf("%s: want %s, got %s", what, verdict[want], verdict[got])
		return
	}
	l.t.Logf("ok  %-50s %s", what, verdict[got])
}

// check is one row of a matrix: what is tried, whether it should work, and
// the attempt.
type check struct {
	what string
	want bool
	got  func() bool
}

// matrix runs the checks, fails the test on each one that differs, and
// prints them as a table under header ("A | B | C").
func (l *Lab) matrix(header string, rows []check) {
	l.t.Helper()
	var table []string
	for _, r := range rows {
		got := r.got()
		l.expect(r.what, r.want, got)
		table = append(table, fmt.Sprintf("| %-55s | %-7v | %-7v |", r.what, r.want, got))
	}
	l.t.Logf("\n| %s |\n|---|---|---|\n%s", header, strings.Join(table, "\n"))
}

// dialQuick only connects (and closes), with a short timeout, for polling
// and for servers that do not speak first.
func (l *Lab) dialQuick(ns, addrport string) (string, error) {
	c, err := dialIn(ns, addrport, quickDial)
	if err != nil {
		return "", err
	}
	c.Close()
	return "", nil
}

// dialIn opens a TCP connection from inside ns.
func dialIn(ns, addrport string, timeout time.Duration) (net.Conn, error) {
	n, err := netns.Open(ns)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	var c net.Conn
	family := "tcp4"
	if ap, err := netip.ParseAddrPort(addrport); err == nil && ap.Addr().Is6() {
		family = "tcp6"
	}
	err = n.Do(func() (err error) { c, err = net.DialTimeout(family, addrport, timeout); return })
	return c, err
}

// quickDial bounds a connection attempt of dialQuick.
var quickDial = 300 * time.Millisecond

// waitUDP waits until something in ns listens on UDP port (a peer we
// started, such as dnsmasq), instead of sleeping.
func (l *Lab) waitUDP(ns string, port int) {
	l.t.Helper()
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ports, err := n.UDPListeners(); err == nil && ports[port] > 0 {
			return
		}
	}
	l.t.Fatalf("nothing listens on UDP %d in %s", port, ns)
}
