package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestHelpGolden holds every command's --help in testdata/help: a change of
// wording shows in review, and no command goes without a description, an
// example or its exit codes. go test ./cmd/guestnet -run TestHelpGolden -update
// rewrites them.
func TestHelpGolden(t *testing.T) {
	t.Setenv("GUESTNET_STATE_DIR", "") // the default shows in --help
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sc := range c.Commands() {
			if sc.Name() == "help" || sc.Name() == "completion" {
				continue
			}
			walk(sc, append(append([]string{}, path...), sc.Name()))
		}
	}
	walk(newRoot(&globals{}), nil)
	if len(paths) < 18 {
		t.Fatalf("walked %d commands, want every one (18)", len(paths))
	}
	for _, p := range paths {
		out, errs, code := runCLI(t, append(p, "--help")...)
		if code != 0 || errs != "" {
			t.Errorf("%v --help: exit %d, stderr %q", p, code, errs)
		}
		name := "guestnet"
		if len(p) > 0 {
			name = strings.Join(p, "_")
		}
		golden := filepath.Join("testdata", "help", name+".txt")
		if *update {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update to write it)", err)
		}
		if out != string(want) {
			t.Errorf("guestnet %s --help differs from %s (run with -update if intended):\n%s", strings.Join(p, " "), golden, out)
		}
		if len(p) > 0 {
			for _, section := range []string{"Exit codes:", "Examples:"} {
				if !strings.Contains(out, section) {
					t.Errorf("guestnet %s --help has no %q", strings.Join(p, " "), section)
				}
			}
		}
		if strings.Contains(out, "--netns ip netns add") || strings.Contains(out, "netns ip ") {
			t.Errorf("guestnet %s --help renders a backticked usage word as the flag's placeholder:\n%s", strings.Join(p, " "), out)
		}
	}
}

// TestVersion: --version says the module version and the commit (or that
// the build recorded none).
func TestVersion(t *testing.T) {
	out, _, code := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "guestnet version ") || !strings.Contains(out, "commit") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// Completion offers the applied networks, and a network's attached ports.
func TestCompletion(t *testing.T) {
	dir := stateDir(t)
	g := []string{"--netns", testNetns, "--state-dir", dir}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"qemu-script", ""}, []string{"alpha", "beta"}},
		{[]string{"routes", "a"}, []string{"alpha", "beta"}},
		{[]string{"destroy", ""}, []string{"alpha", "beta"}},
		{[]string{"detach", "alpha", ""}, []string{"tap-a1"}},
	} {
		out, errs, code := runCLI(t, append(append([]string{"__complete"}, g...), tc.args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d %s", tc.args, code, errs)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := lines[:len(lines)-1] // the last line is the directive
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("complete %v: %q, want %q", tc.args, got, tc.want)
		}
	}
}
