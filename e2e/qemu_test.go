package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needQEMU finds qemu-system-x86_64; like needRoot, it fails under CI
// (GUESTNET_E2E_REQUIRED=1, where .ci/run installs it) and skips loudly
// elsewhere.
func needQEMU(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-system-x86_64")
	if err == nil {
		return p
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatal("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
	}
	t.Skip("SKIPPED: qemu-system-x86_64 not found; install qemu-system-x86 to run this test")
	return ""
}

// writeScript saves `guestnet qemu-script` output as an executable file;
// extra are more qemu-script flags (--ip, --mac).
func (l *Lab) writeScript(host, network string, down bool, extra ...string) string {
	args := append([]string{"qemu-script", network}, extra...)
	name := "qemu-ifup-" + network
	if down {
		args = append(args, "--down")
		name = "qemu-ifdown-" + network
	}
	p := filepath.Join(l.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(l.Guestnet(host, args...)), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// startQEMU starts a paused VM (-S: no guest code runs) whose NIC is a TAP
// that QEMU creates and hands to script=/downscript=, exactly as users run
// it. It returns the process, its stderr and the path of its QMP socket.
func startQEMU(t *testing.T, qemu, host, tap, up, down string) (*exec.Cmd, *bytes.Buffer, string) {
	qmp := filepath.Join(t.TempDir(), "qmp")
	cmd := exec.Command("ip", "netns", "exec", host, qemu,
		"-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "64",
		"-qmp", "unix:"+qmp+",server=on,wait=off",
		"-netdev", "tap,id=n0,ifname="+tap+",script="+up+",downscript="+down,
		"-device", "virtio-net-pci,netdev=n0,romfile=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &stderr, qmp
}

// waitReady returns once QEMU's main loop answers a QMP query-status. The
// TAP script runs during QEMU's start-up, before QEMU handles SIGTERM: a
// signal sent earlier kills it outright, and no downscript runs.
func waitReady(t *testing.T, qmp string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("unix", qmp, time.Second)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		var reply string
		_, err = r.ReadString('\n') // greeting
		for _, q := range []string{"qmp_capabilities", "query-status"} {
			if err == nil {
				_, err = fmt.Fprintf(c, `{"execute":%q}`+"\n", q)
			}
			if err == nil {
				reply, err = r.ReadString('\n')
			}
		}
		c.Close()
		if err == nil && strings.Contains(reply, `"status"`) {
			return
		}
	}
	t.Fatal("QEMU's QMP socket never answered query-status")
}

func TestQEMUScriptHelper(t *testing.T) {
	l := newLab(t)
	qemu := needQEMU(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+"    mtu: 1400\n"))
	up := l.writeScript(host, "default", false, "--ip", "10.99.0.77", "--mac", "52:54:00:00:00:77")
	down := l.writeScript(host, "default", true)

	cmd, stderr, qmp := startQEMU(t, qemu, host, "tap7", up, down)
	deadline := time.Now().Add(20 * time.Second)
	var link string
	for time.Now().Before(deadline) {
		link, _ = l.tryIn(host, "ip", "-o", "link", "show", "tap7")
		if strings.Contains(link, "master gnat0") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"master gnat0", "mtu 1400", ",UP"} {
		if !strings.Contains(link, want) {
			t.Fatalf("after QEMU ran %s, tap7 lacks %q: %s\nqemu: %s", up, want, link, stderr)
		}
	}
	t.Logf("QEMU's script= attached its TAP: %s", strings.TrimSpace(link))
	bound := func() string {
		out, _ := l.tryIn(host, "nft", "list", "set", "bridge", "guestnet", "bound")
		return out
	}
	if !strings.Contains(bound(), `"tap7" . 52:54:00:00:00:77 . 10.99.0.77`) {
		t.Errorf("the per-VM script did not bind tap7:\n%s", bound())
	}

	// QEMU runs the downscript when it shuts down on SIGTERM.
	waitReady(t, qmp)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if strings.Contains(stderr.String(), "failed") {
		t.Errorf("QEMU reported a script failure: %s", stderr)
	}
	// QEMU waits for its downscript before it exits.
	if b := bound(); strings.Contains(b, "tap7") {
		t.Errorf("the downscript left tap7's binding:\n%s", b)
	}
}

// TestQEMUScriptUnknownNetworkFails: qemu-script of a network guestnet did
// not apply is an error (it printed a script and exited 0); a script whose
// network was destroyed since makes QEMU fail to start, naming it.
func TestQEMUScriptUnknownNetworkFails(t *testing.T) {
	l := newLab(t)
	qemu := needQEMU(t)
	host := l.NS("host")
	if out, errs, code := l.Run(host, "qemu-script", "nosuch"); code != 1 || out != "" || !strings.Contains(errs, `no network "nosuch"`) {
		t.Errorf("qemu-script nosuch: exit %d, want 1 with no script\n%s%s", code, out, errs)
	}
	spec := l.Spec(cliSpec)
	l.Guestnet(host, "apply", spec)
	up := l.writeScript(host, "alpha", false)
	l.Guestnet(host, "destroy", "alpha")
	cmd, stderr, _ := startQEMU(t, qemu, host, "tap7", up, "no")
	err := cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "alpha") {
		t.Fatalf("QEMU with a helper for a destroyed network: err %v, stderr %s", err, stderr)
	}
	t.Logf("QEMU refused to start: %s", strings.TrimSpace(stderr.String()))
}

func TestAttachCreatesTAP(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec))
	l.Guestnet(host, "attach", "default", "tap3", "--create", "--owner", "4242", "--group", "4243")
	link := l.In(host, "ip", "-d", "-o", "link", "show", "tap3")
	for _, want := range []string{"master gnat0", "tun type tap", "user 4242", "group 4243", "persist on"} {
		if !strings.Contains(link, want) {
			t.Errorf("tap3 lacks %q: %s", want, link)
		}
	}
	out := l.Guestnet(host, "attach", "default", "tap3")
	if !strings.Contains(out, "nothing to do") {
		t.Errorf("second attach: %s", out)
	}
	l.Guestnet(host, "detach", "default", "tap3")
	if link := l.In(host, "ip", "-o", "link", "show", "tap3"); strings.Contains(link, "master") {
		t.Errorf("detach left tap3 in a bridge: %s", link)
	}
}

func (l *Lab) tryIn(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}
