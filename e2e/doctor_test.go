package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

type finding struct {
	Check, Severity, Network, What, Fix string
	Evidence                            []string
}

// doctor runs guestnet doctor and returns its findings and exit code.
func (l *Lab) doctor(ns string, args ...string) ([]finding, int) {
	l.t.Helper()
	out, errs, code := l.Run(ns, append([]string{"-o", "json", "doctor"}, args...)...)
	var fs []finding
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		l.t.Fatalf("doctor -o json: %v\n%s%s", err, out, errs)
	}
	return fs, code
}

func checks(fs []finding) string {
	var c []string
	for _, f := range fs {
		c = append(c, f.Check)
	}
	return strings.Join(c, ",")
}

func TestDoctorHealthyAllModes(t *testing.T) {
	l := newLab(t)
	host := allModesHost(l)
	l.Guestnet(host, "apply", l.Spec(allModesSpec))
	l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	if fs, code := l.doctor(host); code != 0 || len(fs) != 0 {
		t.Errorf("healthy host: exit %d, findings %+v", code, fs)
	}
}

func TestDoctorBrokenHosts(t *testing.T) {
	cases := []struct {
		name  string
		setup func(l *Lab, host string)
		want  string // the checks, in order
	}{
		{"ip_forward off", func(l *Lab, host string) {
			l.Guestnet(host, "apply", l.Spec(natSpec))
			l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		}, "ip-forward"},
		{"Docker FORWARD DROP on a hand-made bridge", func(l *Lab, host string) {
			handBridge(l, host)
			l.In(host, "iptables", "-P", "FORWARD", "DROP")
		}, "forward-drop"},
		{"masquerade bound to the old uplink", func(l *Lab, host string) {
			handBridge(l, host)
			l.In(host, "iptables", "-t", "nat", "-F", "POSTROUTING")
			l.In(host, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.77.0.0/24", "-o", "up0", "-j", "MASQUERADE")
			l.must("ip", "-n", host, "route", "replace", "default", "via", "198.51.100.254")
		}, "masquerade-oif"},
		{"ip_forward off and FORWARD DROP", func(l *Lab, host string) {
			handBridge(l, host)
			l.In(host, "iptables", "-P", "FORWARD", "DROP")
			l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		}, "ip-forward,forward-drop"},
		{"TAP in no bridge, port MTU mismatch", func(l *Lab, host string) {
			l.Guestnet(host, "apply", l.Spec(natSpec))
			l.In(host, "ip", "tuntap", "add", "tap9", "mode", "tap")
			l.In(host, "ip", "link", "set", "tap9", "up")
			// Two ports by hand, one with a smaller MTU: the bridge follows
			// the smallest, the other port keeps sending larger frames.
			l.Veth(host, "vg7", "", l.NS("g7"), "eth0", "")
			l.Veth(host, "vg8", "", l.NS("g8"), "eth0", "")
			l.In(host, "ip", "link", "set", "vg8", "mtu", "1400")
			l.In(host, "ip", "link", "set", "vg7", "master", "gnat0")
			l.In(host, "ip", "link", "set", "vg8", "master", "gnat0")
			// Ports put in the bridge by hand, with no daemon to guard them:
			// their IPv6 is unchecked too (ipv6-guard-ports).
		}, "bridge,bridge,ipv6-guard-ports"},
		{"duplicate masquerade", func(l *Lab, host string) {
			handBridge(l, host)
			l.In(host, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.77.0.0/24", "-j", "MASQUERADE")
		}, "masquerade-oif"},
		{"hand-made routed bridge with no NAT", func(l *Lab, host string) {
			handBridge(l, host)
			l.In(host, "iptables", "-t", "nat", "-F")
		}, "return-route"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t)
			host, _ := natHost(l)
			c.setup(l, host)
			fs, code := l.doctor(host)
			if code != 1 || checks(fs) != c.want {
				t.Fatalf("doctor: exit %d, checks %q, want %q\n%+v", code, checks(fs), c.want, fs)
			}
			for _, f := range fs {
				if len(f.Evidence) == 0 || f.Fix == "" {
					t.Errorf("%s: finding without evidence or fix: %+v", f.Check, f)
				}
				t.Logf("%s %s: %s | evidence %v | fix %s", f.Severity, f.Check, f.What, f.Evidence, f.Fix)
			}
		})
	}
}

// handBridge configures a NAT network by hand, as the background recipes
// do (no guestnet): bridge, address, forwarding, masquerade by source.
func handBridge(l *Lab, host string) {
	l.In(host, "ip", "link", "add", "br0", "type", "bridge")
	l.In(host, "ip", "addr", "add", "10.77.0.1/24", "dev", "br0")
	l.In(host, "ip", "link", "set", "br0", "up")
	l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.In(host, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.77.0.0/24", "!", "-d", "10.77.0.0/24", "-j", "MASQUERADE")
}

// TestDoctorMasqueradeFindingIsReal checks the masquerade-oif finding
// against real packets: bound to up0, a guest gets out while the default
// route uses up0 and not after it moves to up1; doctor says so only then.
func TestDoctorMasqueradeFindingIsReal(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.In(host, "ip", "link", "add", "br0", "type", "bridge")
	l.In(host, "ip", "addr", "add", "10.77.0.1/24", "dev", "br0")
	l.In(host, "ip", "link", "set", "br0", "up")
	l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.In(host, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.77.0.0/24", "-o", "up0", "-j", "MASQUERADE")
	g := l.NS("g")
	l.Veth(g, "eth0", "10.77.0.10/24", host, "vg1", "")
	l.In(host, "ip", "link", "set", "vg1", "master", "br0")
	l.must("ip", "-n", g, "route", "add", "default", "via", "10.77.0.1")
	l.Serve(inet, "203.0.113.10:8080")

	_, err := l.Dial(g, "203.0.113.10:8080")
	l.expect("guest out via up0 (masquerade bound to up0)", true, err == nil)
	if fs, _ := l.doctor(host); strings.Contains(checks(fs), "masquerade-oif") {
		t.Errorf("doctor reports masquerade-oif while the route matches: %+v", fs)
	}
	l.must("ip", "-n", host, "route", "replace", "default", "via", "198.51.100.254")
	_, err = l.Dial(g, "203.0.113.10:8080")
	l.expect("guest out after the default route moved to up1", false, err == nil)
	if fs, _ := l.doctor(host); !strings.Contains(checks(fs), "masquerade-oif") {
		t.Errorf("doctor misses the masquerade bound to up0: %+v", fs)
	}
}

func TestDoctorDHCP(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	l.Guestnet(host, "apply", spec)
	fs, _ := l.doctor(host)
	if checks(fs) != "dhcp" || !strings.Contains(fs[0].What, "not running") {
		t.Errorf("declared dhcp, no daemon: %+v", fs)
	}
	other := exec.Command("ip", "netns", "exec", host, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--port=0",
		"--interface=gnat0", "--bind-interfaces", "--dhcp-range=10.99.0.100,10.99.0.199,1h", "--user=root", "--pid-file=",
		"--dhcp-leasefile="+t.TempDir()+"/leases")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dnsmasq on port 67", func() bool {
		fs, _ = l.doctor(host)
		return len(fs) == 1 && strings.Contains(fs[0].What, "another program holds UDP port 67")
	})
	other.Process.Kill()
	other.Wait()
	l.Serve_(host, spec)
	if fs, code := l.doctor(host); code != 0 {
		t.Errorf("daemon running: exit %d, %+v", code, fs)
	}
}

func TestDoctorInputDropsDHCP(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	l.Serve_(host, spec)
	l.In(host, "iptables", "-P", "INPUT", "DROP")
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	_, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true")
	l.expect("DHCP through an INPUT policy DROP", false, err == nil)
	fs, code := l.doctor(host)
	if code != 1 || checks(fs) != "dhcp" || !strings.Contains(fs[0].What, "table ip filter chain INPUT drops by policy") {
		t.Fatalf("doctor: exit %d %+v", code, fs)
	}
	l.In(host, "iptables", "-I", "INPUT", "-i", "gnat0", "-j", "ACCEPT")
	_, err = l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", "/bin/true")
	l.expect("DHCP after the fix doctor printed (accept on gnat0)", true, err == nil)
	if fs, code := l.doctor(host); code != 0 {
		t.Errorf("after the fix: exit %d %+v", code, fs)
	}
}
