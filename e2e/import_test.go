package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// importLibvirt runs `guestnet import libvirt FILE` (no namespace: it
// reads a file and prints) and returns stdout and stderr; it fails the test
// unless the import exits 0.
func importLibvirt(t *testing.T, file string) (string, string) {
	t.Helper()
	cmd := exec.Command(guestnetBin, "import", "libvirt", file)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("guestnet import libvirt %s: %v\n%s%s", file, err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// TestImportLibvirtDefault: libvirt's own default network (Debian's
// /usr/share/libvirt/networks/default.xml, with a <host> added and its
// subnet moved from 192.168.122.0/24 into the lab's 10/8) imported, applied
// and served: a guest with the host entry's MAC gets the host entry's
// address from guestnet serve (busybox udhcpc), another gets one from the
// range, and both reach the pretend internet masqueraded, as libvirt's
// <forward/> (nat) had it. The bridge keeps libvirt's name, virbr0, which
// is what domains with <source bridge='virbr0'/> are attached to.
func TestImportLibvirtDefault(t *testing.T) {
	l := newLab(t)
	xml, err := os.ReadFile("../internal/libvirt/testdata/default.xml")
	if err != nil {
		t.Fatal(err)
	}
	x := strings.ReplaceAll(string(xml), "192.168.122.", "10.97.122.")
	x = strings.Replace(x, "    </dhcp>", "      <host mac='02:00:00:00:01:22' name='vm1' ip='10.97.122.50'/>\n    </dhcp>", 1)
	if !strings.Contains(x, "<host mac='02:00:00:00:01:22'") || !strings.Contains(x, "<forward/>") {
		t.Fatalf("libvirt's default.xml is not as expected:\n%s", xml)
	}
	file := filepath.Join(t.TempDir(), "default.xml")
	if err := os.WriteFile(file, []byte(x), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml, warnings := importLibvirt(t, file)
	t.Logf("guestnet import libvirt %s:\n%s\nstderr:\n%s", file, yaml, warnings)
	for _, want := range []string{"mode: nat", "bridge: virbr0", "ipv4: 10.97.122.1/24", `{mac: "02:00:00:00:01:22", ip: 10.97.122.50, name: vm1}`} {
		if !strings.Contains(yaml, want) {
			t.Errorf("the spec lacks %q", want)
		}
	}
	spec := l.Spec(yaml)

	host, inet := natHost(l)
	l.Guestnet(host, "apply", spec)
	l.Serve_(host, spec)
	hook := l.clientScript()
	vm1 := l.dhcpGuest(host, "default", "vm1", "vnet0", "02:00:00:00:01:22")
	other := l.dhcpGuest(host, "default", "other", "vnet1", "")
	for _, g := range []string{vm1, other} {
		if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
			t.Fatalf("udhcpc in %s: %v\n%s", g, err, out)
		}
	}
	if a := l.addrOf(vm1); a != "10.97.122.50" {
		t.Errorf("the guest with the host entry's MAC got %q, want 10.97.122.50", a)
	}
	a := l.addrOf(other)
	if a == "" || a == "10.97.122.50" || !strings.HasPrefix(a, "10.97.122.") {
		t.Errorf("the other guest got %q, want an address of the range 10.97.122.2-254 but .50", a)
	}
	if m := l.In(host, "cat", "/sys/class/net/vnet0/master/uevent"); !strings.Contains(m, "INTERFACE=virbr0") {
		t.Errorf("vnet0's master is not virbr0:\n%s", m)
	}
	l.Serve(inet, "203.0.113.10:8080")
	for _, g := range []string{vm1, other} {
		seen, err := l.Dial(g, "203.0.113.10:8080")
		if err != nil || !strings.HasPrefix(seen, "198.51.100.") {
			t.Errorf("%s to the pretend internet: seen as %q (%v), want masqueraded to the host's uplink 198.51.100.x", g, seen, err)
		}
	}
	t.Logf("vm1 (02:00:00:00:01:22) got %s, other got %s; the internet saw both as the host's uplink", l.addrOf(vm1), a)
}

// TestImportLibvirtExamplesApply: every network of libvirt's documentation
// that converts (the goldens of internal/libvirt) is applied in a namespace
// of its own, after moving its addresses into the lab's ranges
// (192.168.0.0/16 to 10.168.0.0/16, 2001:db8::/32 to fd01:db8::/32): what
// import prints, the kernel takes.
func TestImportLibvirtExamplesApply(t *testing.T) {
	files, _ := filepath.Glob("../internal/libvirt/testdata/*.yaml")
	if len(files) < 10 {
		t.Fatalf("found %d goldens", len(files))
	}
	l := newLab(t)
	move := strings.NewReplacer("192.168.", "10.168.", "2001:db8:", "fd01:db8:", "8.8.8.8", "203.0.113.53")
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ns := l.NS("ex" + string(rune('a'+i)))
		if strings.Contains(string(data), "uplink: eth0") {
			// mode bridge: the NIC it moves into the bridge, with an address.
			lan := l.NS("lan" + string(rune('a'+i)))
			l.Veth(ns, "eth0", "10.170.0.2/24", lan, "lan0", "10.170.0.1/24")
		}
		spec := l.Spec(move.Replace(string(data)))
		out := l.Guestnet(ns, "apply", spec)
		if _, _, code := l.Run(ns, "plan", spec); code != 0 {
			t.Errorf("%s: plan after apply exits %d: apply left something undone", filepath.Base(f), code)
		}
		t.Logf("%s: applied (%d lines of output)", filepath.Base(f), strings.Count(out, "\n"))
	}
}

// TestImportLibvirtDHCPv6Host: a DHCPv6 host of libvirt, named by its
// DUID as libvirt writes it (id='0:3:0:1:2:0:0:0:63:10', a byte per group,
// no leading zeros; libvirt's "local6" example), imported, applied and
// served: dhclient -6 -D LL, whose DUID-LL is that of its MAC, gets the
// host entry's address, and the lease names the DUID guestnet wrote.
func TestImportLibvirtDHCPv6Host(t *testing.T) {
	l := newLab(t)
	file := filepath.Join(t.TempDir(), "local6.xml")
	err := os.WriteFile(file, []byte(`<network>
  <name>local6</name>
  <bridge name='virbr1'/>
  <forward mode='route'/>
  <ip family='ipv6' address='fd42:63::1' prefix='64'>
    <dhcp>
      <range start='fd42:63::100' end='fd42:63::1ff'/>
      <host id='0:3:0:1:2:0:0:0:63:10' name='fixed' ip='fd42:63::10'/>
    </dhcp>
  </ip>
</network>
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	yaml, warnings := importLibvirt(t, file)
	t.Logf("guestnet import libvirt:\n%s\nstderr:\n%s", yaml, warnings)
	if !strings.Contains(yaml, `{duid: "00:03:00:01:02:00:00:00:63:10", ip: "fd42:63::10", name: fixed}`) {
		t.Fatalf("the spec lacks the host by its DUID")
	}
	host := l.NS("host")
	spec := l.Spec(yaml)
	l.Guestnet(host, "apply", spec)
	l.Serve_(host, spec)
	tmp := t.TempDir()
	g := l.v6Guest(host, "local6", "fixed", "vnet0", "02:00:00:00:63:10")
	l.must("ip", "-n", g, "link", "set", "eth0", "up")
	l.startBG(g, "dhclient", "-6", "-d", "-D", "LL", "-sf", l.hook6(filepath.Join(tmp, "fixed.log")),
		"-lf", filepath.Join(tmp, "fixed.leases"), "-pf", filepath.Join(tmp, "fixed.pid"), "eth0")
	took, ok := waitTrue(20*time.Second, func() bool { return slices.Contains(l.addrs6(g), "fd42:63::10") })
	if !ok {
		t.Fatalf("the guest of DUID-LL 02:00:00:00:63:10 holds %v, want fd42:63::10", l.addrs6(g))
	}
	if x, ok := l.leases6(host)["fd42:63::10"]; !ok || x.DUID != "00:03:00:01:02:00:00:00:63:10" {
		t.Errorf("lease of fd42:63::10: %+v, want DUID 00:03:00:01:02:00:00:00:63:10", x)
	}
	t.Logf("dhclient -6 -D LL got fd42:63::10 in %v", took.Round(time.Millisecond))
}
