package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a running `guestnet serve`.
type Daemon struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

// Serve starts the daemon for ns with a spec file and waits until its API
// answers. It is stopped (SIGTERM, by PID) when the test ends.
func (l *Lab) Serve_(ns, spec string, extra ...string) *Daemon {
	l.t.Helper()
	d := &Daemon{log: &bytes.Buffer{}}
	args := append([]string{"--netns", ns, "--state-dir", l.StateDir, "serve", "--config", spec, "--log-level", "debug"}, extra...)
	d.cmd = exec.Command(guestnetBin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { d.Stop(); l.t.Logf("daemon log:\n%s", lastLines(d.log.String(), 15)) })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, errs, code := l.Run(ns, "leases"); code == 0 && strings.Contains(errs, "from the daemon") {
			return d
		}
		if d.cmd.ProcessState != nil {
			break
		}
	}
	l.t.Fatalf("daemon did not become ready:\n%s", d.log)
	return nil
}

// Stop ends the daemon with SIGTERM and waits for it.
func (d *Daemon) Stop() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
	}
}

// Kill ends the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clientScript is the hook the DHCP clients run: it only sets the address
// and default route they were given (their stock hooks would also rewrite
// this machine's /etc/resolv.conf).
func (l *Lab) clientScript() string {
	p := filepath.Join(l.t.TempDir(), "dhcp-hook")
	os.WriteFile(p, []byte(`#!/bin/sh
# udhcpc: $1=bound|renew, $ip $mask $router; dhclient: $reason, $new_*
case "$1$reason" in
bound|renew|BOUND|RENEW|REBOOT)
  ip=${ip:-$new_ip_address}; mask=${mask:-$new_subnet_mask}; router=${router:-$new_routers}
  ip addr flush dev $interface
  ip addr add $ip/$mask dev $interface
  ip route replace default via ${router%% *}
  ;;
RELEASE|EXPIRE)
  # as dhclient-script does: a released address is given up (guestnet
  # checks with ARP that no one holds an address before it offers it)
  ip addr flush dev $interface
  ;;
esac
exit 0
`), 0o755)
	return p
}

// dhcpGuest makes a guest namespace attached to network with the given
// MAC (or a random one for "").
func (l *Lab) dhcpGuest(host, network, name, hostIf, mac string) string {
	g := l.NS(name)
	l.Veth(g, "eth0", "", host, hostIf, "")
	if mac != "" {
		l.must("ip", "-n", g, "link", "set", "eth0", "address", mac)
	}
	l.Guestnet(host, "attach", network, hostIf)
	return g
}

// addrOf returns the IPv4 address of eth0 in ns, or "".
func (l *Lab) addrOf(ns string) string {
	out, _ := l.tryIn(ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return strings.Split(f[i+1], "/")[0]
		}
	}
	return ""
}

const dhcpSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dhcp:
      range: 10.99.0.100-10.99.0.199
      lease: 1h
      hosts: [{mac: "02:00:00:00:00:aa", ip: 10.99.0.10, name: vm1}]
`

func TestDHCPRealClients(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Serve_(host, l.Spec(dhcpSpec))
	hook := l.clientScript()
	tmp := t.TempDir()
	// dhclient stays in the background to renew: end it by the PID it wrote.
	t.Cleanup(func() { killPIDFile(filepath.Join(tmp, "dhclient.pid")) })
	clients := []struct {
		name, mac string
		cmd       []string
	}{
		{"udhcpc", "", []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook}},
		{"dhclient", "", []string{"dhclient", "-1", "-4", "-sf", hook, "-lf", filepath.Join(tmp, "dhclient.leases"), "-pf", filepath.Join(tmp, "dhclient.pid"), "eth0"}},
		{"dhcpcd", "", []string{"dhcpcd", "-1", "-4", "-B", "-A", "-t", "10", "--nohook", "resolv.conf", "-c", "/bin/true", "eth0"}},
		{"static", "02:00:00:00:00:aa", []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook}},
	}
	seen := map[string]string{}
	for i, c := range clients {
		g := l.dhcpGuest(host, "default", c.name, fmt.Sprintf("vg%d", i), c.mac)
		out, err := l.tryIn(g, c.cmd...)
		if err != nil && c.name != "dhclient" { // dhclient -1 exits 0 or 2 by version; its address tells
			t.Errorf("%s: %v\n%s", c.name, err, out)
		}
		a := l.addrOf(g)
		ip, perr := netip.ParseAddr(a)
		inRange := perr == nil && ip.Compare(netip.MustParseAddr("10.99.0.100")) >= 0 && ip.Compare(netip.MustParseAddr("10.99.0.199")) <= 0
		switch {
		case c.name == "static" && a != "10.99.0.10":
			t.Errorf("static host got %q, want 10.99.0.10", a)
		case c.name != "static" && !inRange:
			t.Errorf("%s got %q, want an address of the range\n%s", c.name, a, out)
		case seen[a] != "":
			t.Errorf("%s and %s share %s", c.name, seen[a], a)
		}
		seen[a] = c.name
		l.expect(c.name+" ("+a+") -> internet through its DHCP route", true, l.Ping(g, "203.0.113.10"))
	}
	_ = inet
	out := l.Guestnet(host, "leases", "-o", "json")
	var leases []struct{ IP, MAC, State string }
	json.Unmarshal([]byte(out), &leases)
	if len(leases) != len(clients) {
		t.Errorf("daemon lists %d leases, want %d:\n%s", len(leases), len(clients), out)
	}
}

func TestDHCPReleaseAndReuse(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := strings.Replace(dhcpSpec, "10.99.0.100-10.99.0.199", "10.99.0.100-10.99.0.101", 1)
	l.Serve_(host, l.Spec(spec))
	hook := l.clientScript()
	a := l.dhcpGuest(host, "default", "a", "vga", "02:00:00:00:01:01")
	b := l.dhcpGuest(host, "default", "b", "vgb", "02:00:00:00:01:02")
	c := l.dhcpGuest(host, "default", "c", "vgc", "02:00:00:00:01:03")
	udhcpc := []string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", hook}
	tmp := t.TempDir()
	dhclient := []string{"dhclient", "-4", "-sf", hook, "-lf", filepath.Join(tmp, "a.leases"), "-pf", filepath.Join(tmp, "a.pid")}
	l.tryIn(a, append(dhclient, "-1", "eth0")...)
	l.tryIn(b, udhcpc...)
	aAddr := l.addrOf(a)
	if aAddr == "" || l.addrOf(b) == "" {
		t.Fatalf("a=%q b=%q: the first two clients must get the two addresses", aAddr, l.addrOf(b))
	}
	if _, err := l.tryIn(c, udhcpc...); err == nil || l.addrOf(c) != "" {
		t.Fatalf("third client got %q from a full pool", l.addrOf(c))
	}
	// a releases (dhclient -r sends DHCPRELEASE) and c then gets that address.
	if out, err := l.tryIn(a, append(dhclient, "-r", "eth0")...); err != nil {
		t.Fatalf("dhclient -r: %v\n%s", err, out)
	}
	if _, err := l.tryIn(c, udhcpc...); err != nil || l.addrOf(c) != aAddr {
		t.Errorf("after a released %s, c got %q", aAddr, l.addrOf(c))
	}
}

// TestKill9KeepsAckedLeases runs a stream of real clients (busybox udhcpc,
// a new MAC each time), kills the daemon with SIGKILL in the middle,
// restarts it, and checks that every lease a client was acknowledged is
// still held by that client, and that no address went to two clients.
func TestKill9KeepsAckedLeases(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	// One guest plays 160 clients: per_port 0 lifts the per-port cap.
	spec := l.Spec(strings.Replace(dhcpSpec, "range: 10.99.0.100-10.99.0.199", "range: 10.99.0.2-10.99.0.250\n      per_port: 0", 1))
	d := l.Serve_(host, spec)
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	out := filepath.Join(t.TempDir(), "acked")
	script := `for i in $(seq 1 160); do
  mac=$(printf '02:00:00:00:%02x:%02x' $((i/256)) $((i%256)))
  ip link set eth0 address $mac
  busybox udhcpc -i eth0 -n -q -t 1 -T 1 -s /bin/true 2>&1 | sed -n "s/.*lease of \([0-9.]*\) obtained.*/$mac \1/p" >> ` + out + `
done`
	stream := exec.Command("ip", "netns", "exec", g, "sh", "-c", script)
	if err := stream.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if stream.ProcessState == nil {
			stream.Process.Kill()
			stream.Wait()
		}
	})
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(out); bytes.Count(b, []byte("\n")) >= 40 {
			break
		}
	}
	d.Kill()
	b, _ := os.ReadFile(out)
	t.Logf("SIGKILL after %d acknowledged leases", bytes.Count(b, []byte("\n")))
	time.Sleep(200 * time.Millisecond)
	l.Serve_(host, spec)
	if err := stream.Wait(); err != nil {
		t.Fatalf("client stream: %v", err)
	}

	b, _ = os.ReadFile(out)
	acked := map[string]string{} // mac -> ip
	owner := map[string]string{} // ip -> mac, from the clients' side
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if m, ok := owner[f[1]]; ok && m != f[0] {
			t.Errorf("%s was acknowledged to two clients: %s and %s", f[1], m, f[0])
		}
		acked[f[0]], owner[f[1]] = f[1], f[0]
	}
	var leases []struct{ IP, MAC string }
	if err := json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases); err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, le := range leases {
		if m, ok := held[le.IP]; ok {
			t.Errorf("store holds %s twice (%s, %s)", le.IP, m, le.MAC)
		}
		held[le.IP] = le.MAC
	}
	lost := 0
	for mac, ip := range acked {
		if held[ip] != mac {
			lost++
			t.Errorf("acknowledged lease %s -> %s is gone after the restart (store has %q)", mac, ip, held[ip])
		}
	}
	t.Logf("%d leases acknowledged across a SIGKILL and restart, %d lost, %d in the store", len(acked), lost, len(leases))
	if len(acked) < 100 {
		t.Errorf("only %d of 160 clients got a lease; the stream did not really run", len(acked))
	}
}

// TestDriftRepairTime breaks the host under a running daemon and measures
// how long a DHCP guest's connection to the internet takes to come back.
func TestDriftRepairTime(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Serve_(host, l.Spec(dhcpSpec))
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript()); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	l.Serve(inet, "203.0.113.10:8080")
	if _, err := l.Dial(g, "203.0.113.10:8080"); err != nil {
		t.Fatalf("guest cannot reach the internet before any drift: %v", err)
	}
	var rows []string
	for _, c := range []struct {
		name string
		cmd  []string
	}{
		{"ip link del gnat0", []string{"ip", "link", "del", "gnat0"}},
		{"nft flush ruleset", []string{"nft", "flush", "ruleset"}},
		{"sysctl net.ipv4.ip_forward=0", []string{"sysctl", "-qw", "net.ipv4.ip_forward=0"}},
		{"iptables -F (not ours: nothing to repair)", []string{"iptables", "-F"}},
		{"ip addr flush dev gnat0", []string{"ip", "addr", "flush", "dev", "gnat0"}},
	} {
		start := time.Now()
		l.In(host, c.cmd...)
		var back time.Duration
		for time.Since(start) < 5*time.Second {
			if _, err := l.dialQuick(g, "203.0.113.10:8080"); err == nil {
				back = time.Since(start)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if back == 0 {
			t.Errorf("%s: the guest did not get back out within 5 s", c.name)
			continue
		}
		if back > time.Second {
			t.Errorf("%s: repair took %v, want under 1 s", c.name, back)
		}
		rows = append(rows, fmt.Sprintf("| %-42s | %8.1f ms |", c.name, float64(back.Microseconds())/1000))
	}
	t.Logf("connectivity back after drift (guest -> internet, TCP):\n| drift | back after |\n|---|---|\n%s", strings.Join(rows, "\n"))
}

func TestDNS(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	// The upstream resolver is dnsmasq in the pretend internet, authoritative
	// for example.test; no query ever leaves for a real resolver.
	l.must("ip", "-n", inet, "addr", "add", "203.0.113.53/32", "dev", "lo")
	up := exec.Command("ip", "netns", "exec", inet, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address=203.0.113.53", "--bind-interfaces", "--address=/example.test/203.0.113.80", "--user=root", "--pid-file=")
	if err := up.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() { up.Process.Kill(); up.Wait() })
	l.waitUDP(inet, 53)
	l.Serve_(host, l.Spec(dhcpSpec+"    dns:\n      domain: lab.internal\n      upstream: [203.0.113.53]\n"))
	hook := l.clientScript()
	g1 := l.dhcpGuest(host, "default", "g1", "vg1", "")
	g2 := l.dhcpGuest(host, "default", "g2", "vg2", "")
	for g, name := range map[string]string{g1: "alpha", g2: "bravo"} {
		if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-x", "hostname:"+name, "-s", hook); err != nil {
			t.Fatalf("udhcpc %s: %v\n%s", name, err, out)
		}
	}
	bravo := l.addrOf(g2)
	for _, c := range []struct{ query, want string }{
		{"bravo.lab.internal", bravo},
		{"vm1.lab.internal", "10.99.0.10"},
		{bravo, "bravo.lab.internal"},
		{"web.example.test", "203.0.113.80"},
	} {
		// busybox nslookup asks A and AAAA and exits 1 when either fails;
		// the answer it printed is what counts.
		out, _ := l.tryIn(g1, "busybox", "nslookup", c.query, "10.99.0.1")
		if !strings.Contains(out, c.want) {
			t.Errorf("nslookup %s from a guest: want %s\n%s", c.query, c.want, out)
			continue
		}
		t.Logf("ok  nslookup %-22s -> %s", c.query, c.want)
	}
	if out, err := l.tryIn(g1, "busybox", "nslookup", "nobody.lab.internal", "10.99.0.1"); err == nil {
		t.Errorf("an unknown guest name resolved:\n%s", out)
	}
}

// TestReload changes the config under a running daemon, by SIGHUP and by
// `guestnet apply`: a new network appears, the unchanged network keeps its
// DHCP server and leases (a renewal still gets the same address).
func TestReload(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	specPath := l.Spec(dhcpSpec)
	d := l.Serve_(host, specPath)
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	hook := l.clientScript()
	l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook)
	first := l.addrOf(g)
	if first == "" {
		t.Fatal("no lease before reload")
	}

	os.WriteFile(specPath, []byte(dhcpSpec+"  lab:\n    mode: isolated\n    bridge: giso0\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "giso0 after SIGHUP", func() bool { _, err := l.tryIn(host, "ip", "link", "show", "giso0"); return err == nil })

	os.WriteFile(specPath, []byte(dhcpSpec), 0o644)
	out := l.Guestnet(host, "apply", specPath)
	if !strings.Contains(out, "guestnet serve is running here") {
		t.Errorf("apply with a running daemon: %s", out)
	}
	waitFor(t, "giso0 gone after apply", func() bool { _, err := l.tryIn(host, "ip", "link", "show", "giso0"); return err != nil })

	l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-r", first, "-s", hook)
	if again := l.addrOf(g); again != first {
		t.Errorf("after two reloads the guest got %s, had %s", again, first)
	}
	if n := strings.Count(d.log.String(), `msg="dhcp serving" network=default`); n != 1 {
		t.Errorf("DHCP of the unchanged network was (re)started %d times, want once", n)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestMetrics(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	// The metrics listener is on loopback of the namespace the daemon runs in.
	addr := fmt.Sprintf("127.0.0.1:%d", 19000+os.Getpid()%1000)
	l.Serve_(host, l.Spec(dhcpSpec), "--metrics", addr)
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript())
	l.In(host, "ip", "link", "del", "gnat0")
	waitFor(t, "the bridge repaired", func() bool { _, err := l.tryIn(host, "ip", "link", "show", "gnat0"); return err == nil })
	body := metricsWith(t, addr, "guestnet_repairs_total 1")
	for _, want := range []string{
		`guestnet_dhcp_leases{network="default",state="in_use"} 1`,
		`guestnet_dhcp_leases{network="default",state="free"} 99`,
		`guestnet_dhcp_packets_total{network="default",type="ack"} 1`,
		`guestnet_dhcp_packets_total{network="default",type="discover"} 1`,
		// the first address of a new store had no record: checked with ARP, nobody there
		`guestnet_dhcp_arp_checks_total{network="default",result="probed"} 1`,
		`guestnet_dhcp_arp_checks_total{network="default",result="in_use"} 0`,
		"guestnet_apply_duration_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// killPIDFile ends the process whose PID a client wrote to path.
func killPIDFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

// metricsWith waits until the daemon's metrics at addr contain want, and
// returns them.
func metricsWith(t *testing.T, addr, want string) string {
	t.Helper()
	var body string
	waitFor(t, "metrics with "+want, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, want)
	})
	return body
}
