package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// testNetns is a namespace name no test enters: the commands tested here
// read only the state folder (under netns/testNetns) or a spec file.
const testNetns = "gn-clitest-none"

// stateDir makes a state folder in which guestnet applied alpha and beta.
func stateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := state.Path(dir, testNetns)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	st := state.State{Networks: map[string]state.Net{
		"alpha": {Network: model.Network{Name: "alpha", Bridge: "gcli0"}, Ports: []string{"tap-a1"}},
		"beta":  {Network: model.Network{Name: "beta", Bridge: "gcli1"}},
	}}
	if err := state.Save(p, st); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runCLI runs one command line in-process.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

const forwardSpec = `networks:
  web:
    mode: nat
    bridge: gweb0
    ipv4: 10.99.3.1/24
    forwards:
      - port: 8080
        to: 10.99.3.10:80
`

// A typo in a network name is an error that lists the known names, for
// every command that takes one and can be run here without root.
func TestUnknownNetworkIsAnError(t *testing.T) {
	dir := stateDir(t)
	file := filepath.Join(t.TempDir(), "guestnet.yaml")
	if err := os.WriteFile(file, []byte(forwardSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	g := []string{"--netns", testNetns, "--state-dir", dir}
	for _, tc := range []struct {
		args  []string
		known string
	}{
		{[]string{"qemu-script", "nosuch"}, "alpha and beta"},
		{[]string{"qemu-script", "--down", "nosuch"}, "alpha and beta"},
		{[]string{"detach", "nosuch", "tap0"}, "alpha and beta"},
		{[]string{"routes", "nosuch"}, "alpha and beta"},
		{[]string{"leases", "nosuch"}, "alpha and beta"},
		{[]string{"-o", "json", "leases", "nosuch"}, "alpha and beta"},
		{[]string{"forward", "list", "nosuch", "--file", file}, "web"},
		{[]string{"forward", "add", "nosuch", "--file", file, "--port", "9000", "--to", "10.99.3.11"}, "web"},
		{[]string{"forward", "rm", "nosuch", "--file", file, "--port", "8080"}, "web"},
	} {
		out, errs, code := runCLI(t, append(g, tc.args...)...)
		if code == 0 {
			t.Errorf("%s: exit 0, want non-zero\n%s", strings.Join(tc.args, " "), out)
		}
		if out != "" {
			t.Errorf("%s: printed %q on stdout", strings.Join(tc.args, " "), out)
		}
		if !strings.Contains(errs, `no network "nosuch"`) || !strings.Contains(errs, tc.known) {
			t.Errorf("%s: the error does not name the typo and the known networks (%s):\n%s", strings.Join(tc.args, " "), tc.known, errs)
		}
	}
	// The spec file is untouched by the refused edits.
	if data, _ := os.ReadFile(file); string(data) != forwardSpec {
		t.Errorf("a refused forward edit changed the file:\n%s", data)
	}
	// The known names still work.
	if out, errs, code := runCLI(t, append(g, "qemu-script", "alpha")...); code != 0 || !strings.Contains(out, "ifup") {
		t.Errorf("qemu-script alpha: exit %d\n%s%s", code, out, errs)
	}
	if _, errs, code := runCLI(t, append(g, "leases", "alpha")...); code != 0 {
		t.Errorf("leases alpha: exit %d\n%s", code, errs)
	}
}
