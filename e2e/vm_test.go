package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A guest VM: Debian's cloud kernel and a busybox initramfs built once per
// run, booted by QEMU (TCG) on a TAP that QEMU's own script= hands to
// guestnet's ifup helper. /init loads virtio-net, runs the scenario's shell
// commands (passed base64 on the kernel command line) and powers off; the
// test reads marker lines from the serial console.

var (
	vmOnce   sync.Once
	vmKernel string
	vmInitrd string
	vmErr    error
)

// vmCache is where the kernel and busybox-static packages are kept
// between runs (downloaded with apt-get download, unpacked with dpkg -x,
// never installed).
func vmCache() string {
	if d := os.Getenv("GUESTNET_VM_CACHE"); d != "" {
		return d
	}
	return "/var/cache/guestnet-e2e"
}

// Modules virtio-net needs, in load order.
var vmModules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net"}

const vmInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in MODULES; do insmod /lib/$m.ko || echo "GN-FAIL insmod $m"; done
ip link set lo up; ip link set eth0 up
mkdir -p /etc /www; echo guestnet > /www/index.html
# check LABEL CMD...: run CMD, print GN-OK or GN-FAIL with the label
check() { l=$1; shift; if "$@" >/tmp/out 2>&1; then echo "GN-OK $l"; else echo "GN-FAIL $l: $(tail -c 200 /tmp/out | tr '\n' ' ')"; fi; }
# dhcp NAME: lease with host name NAME, print GN-LEASE ADDRESS
dhcp() { udhcpc -i eth0 -q -t 20 -T 1 -x hostname:$1 -s /udhcpc.script >/tmp/dhcp 2>&1 && echo "GN-LEASE $(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)" || { echo "GN-FAIL dhcp: $(tail -c 200 /tmp/dhcp)"; }; }
# retry N CMD...: CMD until it works, once a second, N times
retry() { n=$1; shift; while [ $n -gt 0 ]; do "$@" && return 0; n=$((n-1)); sleep 1; done; return 1; }
echo "$gncmd" | base64 -d > /cmd.sh
echo GN-START
. /cmd.sh
echo GN-END
poweroff -f
`

const vmDHCPScript = `#!/bin/sh
echo "GN-DHCP $1 $ip" > /dev/console  # udhcpc -b sends its own output to /dev/null
case "$1" in
bound|renew)
  ip addr flush dev $interface; ip addr add $ip/$mask dev $interface
  [ -n "$router" ] && ip route replace default via ${router%% *}
  : > /etc/resolv.conf; for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf ;;
esac
exit 0
`

// vmAssets returns the kernel and the initramfs, making them on first use.
func vmAssets(t testing.TB) (string, string) {
	t.Helper()
	vmOnce.Do(func() { vmKernel, vmInitrd, vmErr = buildVMAssets(filepath.Dir(guestnetBin)) })
	if vmErr != nil {
		t.Fatalf("guest VM assets: %v", vmErr)
	}
	return vmKernel, vmInitrd
}

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func buildVMAssets(work string) (string, string, error) {
	cache := vmCache()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", err
	}
	kernels, _ := filepath.Glob(filepath.Join(cache, "root/boot/vmlinuz-*-cloud-amd64"))
	if len(kernels) == 0 {
		out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
		if err != nil {
			return "", "", fmt.Errorf("apt-cache depends linux-image-cloud-amd64: %w (run apt-get update)", err)
		}
		pkg := ""
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Depends:" {
				pkg = f[1]
				break
			}
		}
		if pkg == "" {
			return "", "", fmt.Errorf("no kernel package behind linux-image-cloud-amd64")
		}
		if err := run(cache, "apt-get", "download", "-q", pkg); err != nil {
			return "", "", err
		}
		debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		if len(debs) == 0 {
			return "", "", fmt.Errorf("apt-get download %s left no .deb", pkg)
		}
		if err := run(cache, "dpkg", "-x", debs[0], "root"); err != nil {
			return "", "", err
		}
		kernels, _ = filepath.Glob(filepath.Join(cache, "root/boot/vmlinuz-*-cloud-amd64"))
	}
	bb := filepath.Join(cache, "bb/bin/busybox")
	if _, err := os.Stat(bb); err != nil {
		if err := run(cache, "apt-get", "download", "-q", "busybox-static"); err != nil {
			return "", "", err
		}
		debs, _ := filepath.Glob(filepath.Join(cache, "busybox-static_*.deb"))
		if len(debs) == 0 {
			return "", "", fmt.Errorf("apt-get download busybox-static left no .deb")
		}
		if err := run(cache, "dpkg", "-x", debs[0], "bb"); err != nil {
			return "", "", err
		}
	}
	if len(kernels) == 0 {
		return "", "", fmt.Errorf("no vmlinuz in %s", cache)
	}
	kver := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")

	root := filepath.Join(work, "initramfs")
	for _, d := range []string{"bin", "lib", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", "", err
		}
	}
	if err := run(root, "cp", bb, "bin/busybox"); err != nil {
		return "", "", err
	}
	for _, m := range vmModules {
		found, _ := filepath.Glob(filepath.Join(cache, "root/lib/modules", kver, "kernel/*/*/"+m+".ko"))
		found2, _ := filepath.Glob(filepath.Join(cache, "root/lib/modules", kver, "kernel/*/"+m+".ko"))
		found = append(found, found2...)
		if len(found) == 0 {
			return "", "", fmt.Errorf("module %s not in %s", m, kver)
		}
		if err := run(root, "cp", found[0], "lib/"+m+".ko"); err != nil {
			return "", "", err
		}
	}
	files := map[string]string{
		"init":          strings.Replace(vmInit, "MODULES", strings.Join(vmModules, " "), 1),
		"udhcpc.script": vmDHCPScript,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o755); err != nil {
			return "", "", err
		}
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	cpio := exec.Command("sh", "-c", "find . | busybox cpio -o -H newc > "+initrd)
	cpio.Dir = root
	if out, err := cpio.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("cpio: %v\n%s", err, out)
	}
	return kernels[0], initrd, nil
}

// VM is a running guest.
type VM struct {
	Name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	done   chan struct{}
	booted time.Time
}

// BootVM starts a guest in host namespace ns on a TAP attached to network
// by QEMU's script=/downscript= (guestnet's helper), running script.
func (l *Lab) BootVM(ns, network, name, mac, script string) *VM {
	l.t.Helper()
	qemu := needQEMU(l.t)
	kernel, initrd := vmAssets(l.t)
	up, down := l.writeScript(ns, network, false), l.writeScript(ns, network, true)
	tap := "tap" + name
	if len(tap) > 15 {
		tap = tap[:15]
	}
	v := &VM{Name: name, done: make(chan struct{}), booted: time.Now()}
	v.cmd = exec.Command("ip", "netns", "exec", ns, qemu,
		"-accel", "tcg", "-cpu", "max", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 gncmd="+base64.StdEncoding.EncodeToString([]byte(script)),
		"-netdev", "tap,id=n0,ifname="+tap+",script="+up+",downscript="+down,
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+mac)
	out, err := v.cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	v.cmd.Stderr = v.cmd.Stdout
	if err := v.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v.mu.Lock()
			v.lines = append(v.lines, strings.TrimRight(sc.Text(), "\r"))
			v.mu.Unlock()
		}
		v.cmd.Wait()
		close(v.done)
	}()
	l.t.Cleanup(func() {
		v.cmd.Process.Signal(syscall.SIGKILL)
		<-v.done
		if l.t.Failed() {
			l.t.Logf("serial console of %s:\n%s", name, strings.Join(v.Lines(), "\n"))
		}
	})
	return v
}

// Lines returns what the console printed so far.
func (v *VM) Lines() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// WaitFor waits until a console line starts with prefix and returns it.
func (v *VM) WaitFor(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, l := range v.Lines() {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		select {
		case <-deadline:
			t.Fatalf("%s: no %q on the console within %v", v.Name, prefix, timeout)
		case <-v.done:
			for _, l := range v.Lines() {
				if strings.HasPrefix(l, prefix) {
					return l
				}
			}
			t.Fatalf("%s: powered off without printing %q", v.Name, prefix)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Results waits for the guest to finish and returns its GN-OK/GN-FAIL lines.
func (v *VM) Results(t testing.TB, timeout time.Duration) (ok, fail []string) {
	t.Helper()
	v.WaitFor(t, "GN-END", timeout)
	for _, l := range v.Lines() {
		if s, found := strings.CutPrefix(l, "GN-OK "); found {
			ok = append(ok, s)
		}
		if s, found := strings.CutPrefix(l, "GN-FAIL "); found {
			fail = append(fail, s)
		}
	}
	return ok, fail
}

// expectResults checks a guest's results: every label in want passed, none failed.
func expectResults(t testing.TB, v *VM, timeout time.Duration, want ...string) {
	t.Helper()
	ok, fail := v.Results(t, timeout)
	for _, f := range fail {
		t.Errorf("%s: FAIL %s", v.Name, f)
	}
	for _, w := range want {
		found := false
		for _, o := range ok {
			found = found || o == w
		}
		if !found {
			t.Errorf("%s: %q did not pass (passed: %v)", v.Name, w, ok)
		} else {
			t.Logf("ok  %-8s %s", v.Name, w)
		}
	}
}
