package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDHCPOneServerPerNamespace: a second `guestnet serve` on a namespace
// already served, with another --state-dir, exits non-zero at once and
// names the first (PID and state dir); the first keeps serving: a guest
// still gets a lease and its API still answers.
func TestDHCPOneServerPerNamespace(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	first := l.Serve_(host, spec)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other := t.TempDir()
	var out bytes.Buffer
	second := exec.CommandContext(ctx, guestnetBin, "--netns", host, "--state-dir", other, "serve", "--config", spec)
	second.Stdout, second.Stderr = &out, &out
	err := second.Run()
	if ctx.Err() != nil {
		t.Fatalf("the second serve on the same namespace was still running after 20 s:\n%s", out.String())
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("the second serve: %v, want a non-zero exit\n%s", err, out.String())
	}
	for _, want := range []string{"already serves network namespace", fmt.Sprintf("PID %d", first.cmd.Process.Pid), "state dir " + l.StateDir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the second serve's message does not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "dhcp serving") {
		t.Errorf("the second serve started DHCP:\n%s", out.String())
	}

	if first.cmd.ProcessState != nil {
		t.Fatalf("the first daemon ended: %v", first.cmd.ProcessState)
	}
	g := l.dhcpGuest(host, "default", "g", "vg", "")
	if o, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", l.clientScript()); err != nil {
		t.Fatalf("the first daemon no longer answers DHCP: %v\n%s", err, o)
	}
	if _, errs, code := l.Run(host, "leases"); code != 0 || !strings.Contains(errs, "from the daemon") {
		t.Errorf("the first daemon's API: exit %d, %s", code, errs)
	}
}
