package e2e

import (
	"os"
	"path/filepath"
	"strings"
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

// TestDestroyWhileServing: `guestnet destroy` while serve runs used to
// remove the networks, which the daemon then made again as drift, with
// none of their guest ports. Now it exits 1, says how to remove them
// (from the daemon's config), and changes nothing: the port stays in its
// bridge.
func TestDestroyWhileServing(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	specPath := l.Spec(dhcpSpec)
	l.Serve_(host, specPath)
	l.Guest(host, "default", "g", "vg1", "10.99.0.20/24", "10.99.0.1")
	for _, args := range [][]string{{"destroy", "default"}, {"destroy", "--all"}, {"-o", "json", "destroy", "--all"}} {
		out, errs, code := l.Run(host, args...)
		if code != 1 || !strings.Contains(errs, "guestnet serve is running here with --config "+specPath) {
			t.Errorf("%v while serving: exit %d, want 1 with the daemon's config named\n%s%s", args, code, out, errs)
		}
	}
	if m := strings.Fields(l.In(host, "cat", "/sys/class/net/vg1/master/uevent")); len(m) == 0 || !strings.Contains(strings.Join(m, " "), "INTERFACE=gnat0") {
		t.Errorf("vg1 is not in gnat0 any more: %v", m)
	}
}
