package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needBin skips (or, with GUESTNET_E2E_REQUIRED=1, fails) a test whose
// peer is not installed, naming the Debian package that brings it.
func needBin(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(path); err == nil {
		return
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatalf("%s is missing: apt-get install -y %s", path, pkg)
	}
	t.Skipf("SKIPPED: %s is missing (apt-get install -y %s)", path, pkg)
}

// bird is a BIRD 2 daemon in its own namespace, in the foreground, with
// its config, control socket and PID file in the test's folder (no
// system service, nothing in /etc or /run).
type bird struct {
	*proc
	l    *Lab
	sock string
}

// BIRD starts bird with conf inside ns and waits until it answers on its
// control socket.
func (l *Lab) BIRD(ns, conf string) *bird {
	l.t.Helper()
	needBin(l.t, "bird", "bird2")
	dir := l.t.TempDir()
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
	b := &bird{l: l, sock: filepath.Join(dir, "bird.ctl")}
	b.proc = l.Proc("bird", ns, "bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	waitUntil(l.t, "bird answers on "+b.sock, 10*time.Second, func() bool {
		_, err := exec.Command("birdc", "-s", b.sock, "show", "status").CombinedOutput()
		return err == nil && b.cmd.ProcessState == nil
	})
	return b
}

// C runs a birdc command and returns its output.
func (b *bird) C(args ...string) string {
	b.l.t.Helper()
	out, err := exec.Command("birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		b.l.t.Fatalf("birdc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// birdRouter is the config of the LAN's router: eBGP with every host
// (import all, export only its own connected client subnet on cl0, not
// what it learned), learned routes written to its kernel table so its
// client's packets are forwarded.
func birdRouter(id string, asn int, hosts []*bgpHost) string {
	var s strings.Builder
	fmt.Fprintf(&s, `log stderr all;
router id %s;
protocol device { scan time 1; }
protocol direct { ipv4; interface "cl0"; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
template bgp host {
  local %s as %d;
  hold time 9; connect retry time 2; error wait time 1, 5;
  ipv4 { import all; export where source = RTS_DEVICE; };
}
`, id, id, asn)
	for _, h := range hosts {
		fmt.Fprintf(&s, "protocol bgp h%d from host { neighbor %s as %d; }\n", h.N, h.Addr, h.ASN)
	}
	return s.String()
}

// frr is FRR's bgpd with zebra (which installs bgpd's best paths in the
// namespace's kernel) in one namespace, in the foreground. Both run as
// user frr (zebra refuses root: root is not in group frrvty); their
// folder is made for them outside the test's root-only temp folder.
type frr struct {
	l   *Lab
	dir string
}

// FRR starts zebra and bgpd with bgpdConf inside ns and waits until
// bgpd answers vtysh.
func (l *Lab) FRR(ns, bgpdConf string) *frr {
	l.t.Helper()
	needBin(l.t, "/usr/lib/frr/bgpd", "frr")
	u, err := user.Lookup("frr")
	if err != nil {
		l.t.Fatalf("user frr: %v (the Debian package frr makes it)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "guestnet-e2e-frr-")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	f := &frr{l: l, dir: dir}
	for name, text := range map[string]string{"zebra.conf": "", "bgpd.conf": bgpdConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			l.t.Fatal(err)
		}
	}
	for _, p := range []string{dir, filepath.Join(dir, "zebra.conf"), filepath.Join(dir, "bgpd.conf")} {
		os.Chown(p, uid, gid)
	}
	os.Chmod(dir, 0o755)
	common := func(d string) []string {
		return []string{"/usr/lib/frr/" + d, "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-u", "frr", "-g", "frr", "-P", "0",
			"--log", "stdout"}
	}
	l.Proc("zebra", ns, common("zebra")...)
	waitUntil(l.t, "zebra's socket", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "zserv.api"))
		return err == nil
	})
	l.Proc("bgpd", ns, common("bgpd")...)
	waitUntil(l.t, "bgpd answers vtysh", 10*time.Second, func() bool {
		_, err := exec.Command("vtysh", "--vty_socket", dir, "-c", "show bgp summary").CombinedOutput()
		return err == nil
	})
	return f
}

// Vtysh runs one vtysh command against this FRR.
func (f *frr) Vtysh(cmd string) string {
	f.l.t.Helper()
	out, err := exec.Command("vtysh", "--vty_socket", f.dir, "-c", cmd).CombinedOutput()
	if err != nil {
		f.l.t.Fatalf("vtysh -c %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// Best returns FRR's best path's next hop per prefix in its BGP table.
func (f *frr) Best() map[string]string {
	f.l.t.Helper()
	out := f.Vtysh("show bgp ipv4 unicast json")
	var t struct {
		Routes map[string][]struct {
			Valid    bool `json:"valid"`
			Best     bool `json:"bestpath"`
			Nexthops []struct {
				IP string `json:"ip"`
			} `json:"nexthops"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &t); err != nil {
		f.l.t.Fatalf("vtysh show bgp ipv4 unicast json: %v\n%s", err, out)
	}
	best := map[string]string{}
	for p, paths := range t.Routes {
		for _, pa := range paths {
			if pa.Valid && pa.Best && len(pa.Nexthops) > 0 {
				best[p] = pa.Nexthops[0].IP
			}
		}
	}
	return best
}

// frrPeer is FRR's bgpd config: AS asn, eBGP with every host, no export
// policy needed (RFC 8212's default is turned off: this is a lab).
func frrPeer(id string, asn int, hosts []*bgpHost) string {
	var s strings.Builder
	fmt.Fprintf(&s, `frr defaults traditional
hostname frr
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
`, asn, id)
	for _, h := range hosts {
		fmt.Fprintf(&s, " neighbor %s remote-as %d\n neighbor %s timers 3 9\n neighbor %s timers connect 2\n", h.Addr, h.ASN, h.Addr, h.Addr)
	}
	return s.String()
}

// hostileBIRD is a peer that announces, besides one legitimate prefix
// (10.30.0.0/24), what a host must never install: a default route, the
// first host's own subnet and a prefix inside it, a prefix inside the
// LAN (a connected subnet), prefixes outside import, and a path whose
// next hop is not on any connected subnet.
func hostileBIRD(id string, asn int, hosts []*bgpHost) string {
	var rs []birdRoute
	for _, p := range hostilePrefixes {
		r := birdRoute{prefix: p.prefix}
		if p.prefix == unreachablePrefix {
			r.hop = unreachableHop
		}
		rs = append(rs, r)
	}
	return staticBIRD(id, asn, hosts, rs)
}

// birdRoute is a prefix a static BIRD announces, with the next hop it
// names ("" = its own address).
type birdRoute struct{ prefix, hop string }

// staticBIRD is a peer of every host that announces 10.30.0.0/24 (the
// legitimate one) and routes, each with its next hop, and imports nothing.
func staticBIRD(id string, asn int, hosts []*bgpHost, routes []birdRoute) string {
	var s strings.Builder
	fmt.Fprintf(&s, "log stderr all;\nrouter id %s;\nprotocol device { scan time 1; }\nprotocol static hostile {\n  ipv4;\n  route 10.30.0.0/24 blackhole;\n", id)
	for _, r := range routes {
		fmt.Fprintf(&s, "  route %s blackhole;\n", r.prefix)
	}
	fmt.Fprintf(&s, "}\ntemplate bgp host {\n  local %s as %d;\n  hold time 9; connect retry time 2; error wait time 1, 5;\n  ipv4 { import none; export filter {\n", id, asn)
	for _, r := range routes {
		if r.hop != "" {
			fmt.Fprintf(&s, "    if net = %s then bgp_next_hop = %s;\n", r.prefix, r.hop)
		}
	}
	s.WriteString("    accept; }; };\n}\n")
	for _, h := range hosts {
		fmt.Fprintf(&s, "protocol bgp h%d from host { neighbor %s as %d; }\n", h.N, h.Addr, h.ASN)
	}
	return s.String()
}

// The hostile peer's prefixes, and why the first host must refuse each.
// policy is true for a refusal of the import policy (on purpose: bgp's
// "refused"), false for a path that cannot be installed.
var hostilePrefixes = []struct {
	prefix, why string
	policy      bool
}{
	{"0.0.0.0/0", "a default route (0.0.0.0/0 is not in import)", true},
	{"10.71.0.0/24", "this host's own network rt", true},
	{"10.71.0.128/25", "inside this host's own network rt", true},
	{"10.10.0.128/25", "inside the LAN, a connected subnet", true},
	{"198.51.100.0/24", "outside import", true},
	{"192.168.5.0/24", "outside import (the written list replaces the private ranges)", true},
	{unreachablePrefix, "next hop " + unreachableHop + " is on no connected subnet", false},
}

const unreachablePrefix, unreachableHop = "10.40.0.0/24", "10.50.0.1"
