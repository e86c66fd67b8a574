package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReloadApplyOtherFile: `guestnet apply other.yaml` while serve runs
// with another config used to exit 0 and make the daemon reload its own
// config, ignoring other.yaml. Now it exits 1, names the daemon's config
// and how to change it, and changes nothing; apply of the daemon's own
// config (also by a path spelled otherwise) still reloads it.
func TestReloadApplyOtherFile(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	specPath := l.Spec(dhcpSpec)
	l.Serve_(host, specPath)
	other := filepath.Join(t.TempDir(), "other.yaml")
	os.WriteFile(other, []byte(dhcpSpec+"  lab:\n    mode: isolated\n    bridge: giso0\n"), 0o644)

	out, errs, code := l.Run(host, "apply", other)
	if code != 1 {
		t.Errorf("apply of a file that is not the daemon's config: exit %d, want 1\n%s%s", code, out, errs)
	}
	for _, want := range []string{"guestnet serve is running here with --config " + specPath, other} {
		if !strings.Contains(errs, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, errs)
		}
	}
	if _, err := l.tryIn(host, "ip", "link", "show", "giso0"); err == nil {
		t.Error("giso0 exists: the refused file was applied")
	}
	t.Logf("apply %s: exit %d: %s", other, code, errs)

	os.WriteFile(specPath, []byte(dhcpSpec+"  lab:\n    mode: isolated\n    bridge: giso0\n"), 0o644)
	same := filepath.Join(filepath.Dir(specPath), ".", filepath.Base(specPath))
	if out := l.Guestnet(host, "apply", same); !strings.Contains(out, "guestnet serve is running here") {
		t.Errorf("apply of the daemon's config: %s", out)
	}
	waitFor(t, "giso0 after apply of the daemon's config", func() bool { _, err := l.tryIn(host, "ip", "link", "show", "giso0"); return err == nil })
}

// TestDestroyWhileServing: `guestnet destroy NET` while serve runs is
// done by the daemon, which keeps the network down: drift repair, SIGHUP
// and a restart of serve leave it gone; `guestnet apply` of the config
// brings it back. destroy --all and an unknown name are refused and
// change nothing.
func TestDestroyWhileServing(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	specPath := l.Spec(dhcpSpec + "  lab:\n    mode: isolated\n    bridge: giso0\n")
	d := l.Serve_(host, specPath)
	l.Guest(host, "default", "g", "vg1", "10.99.0.20/24", "10.99.0.1")
	gone := func(link string) bool { _, err := l.tryIn(host, "ip", "link", "show", link); return err != nil }
	for _, args := range [][]string{{"destroy", "--all"}, {"destroy", "nosuch"}} {
		out, errs, code := l.Run(host, args...)
		if code != 1 || !strings.Contains(errs, "guestnet serve") {
			t.Errorf("%v while serving: exit %d, want 1 naming guestnet serve\n%s%s", args, code, out, errs)
		}
	}
	if gone("gnat0") || gone("giso0") {
		t.Fatal("a refused destroy removed a bridge")
	}
	out, errs, code := l.Run(host, "destroy", "default")
	if code != 0 || !strings.Contains(out, "destroyed default") {
		t.Fatalf("destroy default while serving: exit %d\n%s%s", code, out, errs)
	}
	if !gone("gnat0") || gone("giso0") {
		t.Fatal("after destroy default: want gnat0 gone and giso0 kept")
	}
	// Drift repair runs on every kernel event: make some, then SIGHUP.
	l.must("ip", "netns", "exec", host, "ip", "link", "set", "giso0", "down")
	waitFor(t, "giso0 repaired up", func() bool {
		o, _ := l.tryIn(host, "ip", "-br", "link", "show", "giso0")
		return strings.Contains(o, "UP")
	})
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload logged", func() bool { return strings.Contains(d.log.String(), "destroyed with guestnet destroy: left down") })
	if !gone("gnat0") {
		t.Fatal("drift repair or SIGHUP made the destroyed network again")
	}
	d.Stop()
	l.Serve_(host, specPath)
	if !gone("gnat0") {
		t.Fatal("a restart of serve made the destroyed network again")
	}
	if out := l.Guestnet(host, "apply", specPath); !strings.Contains(out, "guestnet serve is running here") {
		t.Errorf("apply of the daemon's config: %s", out)
	}
	if gone("gnat0") {
		t.Fatal("apply of the config did not bring the destroyed network back")
	}
}
