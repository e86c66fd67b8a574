package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/dhcp"
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
		{[]string{"-o", "json", "forward", "list", "nosuch", "--file", file}, "web"},
		{[]string{"-o", "json", "qemu-script", "nosuch"}, "alpha and beta"},
		{[]string{"forward", "add", "nosuch", "--file", file, "--port", "9000", "--to", "10.99.3.11"}, "web"},
		{[]string{"forward", "rm", "nosuch", "--file", file, "--port", "8080"}, "web"},
	} {
		out, errs, code := runCLI(t, append(g, tc.args...)...)
		if code == 0 {
			t.Errorf("%s: exit 0, want non-zero\n%s", strings.Join(tc.args, " "), out)
		}
		if tc.args[0] == "-o" {
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(out), &e); err != nil || !strings.Contains(e.Error, "nosuch") {
				t.Errorf("%s: stdout is not a JSON error naming nosuch (%v): %q", strings.Join(tc.args, " "), err, out)
			}
		} else if out != "" {
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

// Every command with -o json that runs without root prints one JSON
// document on stdout, on its success path (the error path is in
// TestUnknownNetworkIsAnError); forward list used to print its table.
func TestJSONWithoutRoot(t *testing.T) {
	dir := stateDir(t)
	file := filepath.Join(t.TempDir(), "guestnet.yaml")
	if err := os.WriteFile(file, []byte(forwardSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	g := []string{"--netns", testNetns, "--state-dir", dir, "-o", "json"}
	for _, tc := range []struct {
		args []string
		want string // a key or value the document holds
	}{
		{[]string{"forward", "list", "--file", file}, `"port_from": 8080`},
		{[]string{"forward", "list", "web", "--file", file}, `"network": "web"`},
		{[]string{"forward", "add", "web", "--file", file, "--port", "9000", "--to", "10.99.3.11"}, `"action": "added"`},
		{[]string{"forward", "rm", "web", "--file", file, "--port", "9000"}, `"action": "removed"`},
		{[]string{"qemu-script", "alpha"}, `"kind": "ifup"`},
		{[]string{"qemu-script", "--down", "alpha"}, `"kind": "ifdown"`},
		{[]string{"leases"}, `[]`},
		{[]string{"leases", "alpha"}, `[]`},
	} {
		out, errs, code := runCLI(t, append(g, tc.args...)...)
		if code != 0 {
			t.Errorf("%v: exit %d\n%s", tc.args, code, errs)
			continue
		}
		if !json.Valid([]byte(out)) || !strings.Contains(out, tc.want) {
			t.Errorf("%v -o json: want a JSON document holding %s, got:\n%s", tc.args, tc.want, out)
		}
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 changes", 1: "1 change", 2: "2 changes"} {
		if got := plural(n, "change"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
}

// A lease of a static host whose guest sent no host name shows the name
// the spec gave the host (it showed an empty HOSTNAME), in the table and
// in JSON; a name the guest sent is kept.
func TestLeasesShowStaticName(t *testing.T) {
	dir := t.TempDir()
	p := state.Path(dir, testNetns)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.99.0.20")
	st := state.State{Networks: map[string]state.Net{"lab": {Network: model.Network{Name: "lab", Bridge: "glab0",
		DHCP: &model.DHCP{Hosts: []model.StaticHost{{MAC: "52:54:00:00:00:20", IP: ip, Name: "db1"}}}}}}}
	if err := state.Save(p, st); err != nil {
		t.Fatal(err)
	}
	store, err := dhcp.OpenBolt(daemon.LeasePath(filepath.Dir(p)), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for _, l := range []dhcp.Lease{
		{MAC: "52:54:00:00:00:20", IP: ip, Expiry: exp},
		{MAC: "52:54:00:00:00:21", IP: netip.MustParseAddr("10.99.0.100"), Hostname: "web1", Expiry: exp},
	} {
		if err := store.Put("lab", l); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()
	g := []string{"--netns", testNetns, "--state-dir", dir}
	out, errs, code := runCLI(t, append(g, "leases")...)
	if code != 0 || !regexp.MustCompile(`(?m)^lab +52:54:00:00:00:20 +10\.99\.0\.20 +db1 `).MatchString(out) ||
		!strings.Contains(out, "web1") || !strings.Contains(errs, "(2 leases,") {
		t.Errorf("leases: exit %d, want db1 for the static host and web1 kept:\n%s%s", code, out, errs)
	}
	out, _, _ = runCLI(t, append(g, "-o", "json", "leases", "lab")...)
	var ls []daemon.LeaseView
	err = json.Unmarshal([]byte(out), &ls)
	names := map[string]string{}
	for _, l := range ls {
		names[l.IP] = l.Hostname
	}
	if err != nil || len(ls) != 2 || names["10.99.0.20"] != "db1" || names["10.99.0.100"] != "web1" {
		t.Errorf("leases -o json: %v\n%s", err, out)
	}
}
