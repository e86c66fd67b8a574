package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cliSpec is two small networks for the CLI's own tests.
const cliSpec = `
networks:
  alpha:
    mode: isolated
    bridge: gcli0
  beta:
    mode: nat
    bridge: gcli1
    ipv4: 10.99.7.1/24
`

// TestCliEmptySpecChangesNothing: an empty spec used to make apply remove
// every network and exit 0. Each way of declaring nothing (a 0-byte file, a
// comment, `networks:` alone, an empty directory) must now exit non-zero,
// name the networks it would have removed and the explicit way, and leave
// the host as it was; destroy --all and apply --allow-empty remove them.
func TestCliEmptySpecChangesNothing(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	full := l.Spec(cliSpec)
	l.Guestnet(host, "apply", full)
	before := l.snapshot(host)
	dir := t.TempDir()
	empty := map[string]string{"empty.yaml": "", "comment.yaml": "# all networks gone\n", "bare.yaml": "networks:\n"}
	var cases []string
	for name, body := range empty {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, p)
	}
	cases = append(cases, t.TempDir()) // an empty directory
	for _, c := range cases {
		out, errs, code := l.Run(host, "apply", c)
		if code == 0 {
			t.Errorf("apply %s (no networks): exit 0, want non-zero\n%s%s", c, out, errs)
		}
		for _, want := range []string{"declares no networks", "alpha and beta", "guestnet destroy --all", "--allow-empty"} {
			if !strings.Contains(errs, want) {
				t.Errorf("apply %s: the refusal does not say %q:\n%s", c, want, errs)
			}
		}
		if after := l.snapshot(host); after != before {
			t.Errorf("apply %s changed the host:\n%s", c, diffLines(before, after))
		}
		t.Logf("apply %s: exit %d: %s", filepath.Base(c), code, strings.TrimSpace(errs))
		// plan shows what apply would remove, and says apply refuses it.
		if _, errs, code := l.Run(host, "plan", c); code != 2 || !strings.Contains(errs, "apply refuses it") {
			t.Errorf("plan %s: exit %d, want 2 with a note that apply refuses it: %s", c, code, errs)
		}
		// -o json fails the same way, with the error as JSON on stdout.
		out, _, code = l.Run(host, "-o", "json", "apply", c)
		var e struct{ Error string }
		if code == 0 || json.Unmarshal([]byte(out), &e) != nil || !strings.Contains(e.Error, "declares no networks") {
			t.Errorf("apply -o json %s: exit %d, stdout %q", c, code, out)
		}
	}
	// The explicit ways remove everything.
	l.Guestnet(host, "apply", "--allow-empty", cases[0])
	if _, err := l.tryIn(host, "ip", "link", "show", "gcli0"); err == nil {
		t.Error("apply --allow-empty left gcli0")
	}
	l.Guestnet(host, "apply", full)
	out := l.Guestnet(host, "destroy", "--all")
	t.Logf("destroy --all: %s", out)
	for _, br := range []string{"gcli0", "gcli1"} {
		if _, err := l.tryIn(host, "ip", "link", "show", br); err == nil {
			t.Errorf("destroy --all left %s", br)
		}
	}
	if got := l.In(host, "nft", "list", "ruleset"); strings.Contains(got, "guestnet") {
		t.Errorf("destroy --all left guestnet's tables:\n%s", got)
	}
	if _, errs, code := l.Run(host, "destroy", "--all", "alpha"); code == 0 {
		t.Errorf("destroy --all alpha: exit 0, want an error: %s", errs)
	}
}

// TestCliServeRefusesEmptyConfig: serve with a config that declares no
// networks would remove every network and serve nothing: it exits 1 at
// once and says why.
func TestCliServeRefusesEmptyConfig(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Guestnet(host, "apply", l.Spec(cliSpec))
	before := l.snapshot(host)
	out, errs, code := l.Run(host, "serve", "--config", t.TempDir())
	if code != 1 || !strings.Contains(errs, "declares no networks") {
		t.Errorf("serve with an empty config: exit %d, want 1 saying it declares no networks\n%s%s", code, out, errs)
	}
	if after := l.snapshot(host); after != before {
		t.Errorf("serve with an empty config changed the host:\n%s", diffLines(before, after))
	}
	t.Logf("serve --config EMPTYDIR: exit %d: %s", code, strings.TrimSpace(errs))
}

// TestCliReapplyForgetsPorts: destroy forgets the ports attached to a
// network; applying the network again makes an empty bridge (documented in
// destroy's help): the interface may since belong to another guest.
func TestCliReapplyForgetsPorts(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(cliSpec)
	l.Guestnet(host, "apply", spec)
	l.must("ip", "-n", host, "tuntap", "add", "dev", "tapcli", "mode", "tap")
	l.Guestnet(host, "attach", "alpha", "tapcli")
	if got := l.In(host, "ip", "-o", "link", "show", "tapcli"); !strings.Contains(got, "master gcli0") {
		t.Fatalf("attach: %s", got)
	}
	l.Guestnet(host, "destroy", "alpha")
	l.Guestnet(host, "apply", spec)
	if got := l.In(host, "ip", "-o", "link", "show", "tapcli"); strings.Contains(got, "master") {
		t.Errorf("re-applying alpha re-attached tapcli: %s", got)
	}
	if out := l.Guestnet(host, "plan", spec); !strings.Contains(out, "No changes") {
		t.Errorf("plan after re-apply: %s", out)
	}
}

// TestCliServeRefusesEmptiedConfig: a running serve whose config file is
// emptied keeps its networks: apply --allow-empty of that file (a reload)
// fails, saying why, and the bridges stay.
func TestCliServeRefusesEmptiedConfig(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	specPath := l.Spec(cliSpec)
	l.Serve_(host, specPath)
	if err := os.WriteFile(specPath, []byte("# emptied\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := l.Run(host, "apply", "--allow-empty", specPath)
	if code == 0 || !strings.Contains(errs, "declares no networks") {
		t.Errorf("reload of an emptied config: exit %d, want an error saying it declares no networks\n%s%s", code, out, errs)
	}
	t.Logf("apply --allow-empty (serve running): exit %d: %s", code, strings.TrimSpace(errs))
	for _, br := range []string{"gcli0", "gcli1"} {
		if _, err := l.tryIn(host, "ip", "link", "show", br); err != nil {
			t.Errorf("%s is gone after the refused reload", br)
		}
	}
}

// TestCliDestroyTypo: `destroy nosuchnet` used to exit 0. A name typed on
// the command line that guestnet does not own here is an error listing the
// applied networks, and nothing changes (also when a known name is given
// with it).
func TestCliDestroyTypo(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Guestnet(host, "apply", l.Spec(cliSpec))
	before := l.snapshot(host)
	for _, args := range [][]string{{"destroy", "nosuchnet"}, {"destroy", "alpha", "nosuchnet"}, {"-o", "json", "destroy", "nosuchnet"}} {
		out, errs, code := l.Run(host, args...)
		if code == 0 || !strings.Contains(errs, `no network "nosuchnet"`) || !strings.Contains(errs, "alpha and beta") {
			t.Errorf("%v: exit %d, want an error naming nosuchnet and the applied networks\n%s%s", args, code, out, errs)
		}
		t.Logf("%v: exit %d: %s", args, code, strings.TrimSpace(errs))
	}
	if after := l.snapshot(host); after != before {
		t.Errorf("a refused destroy changed the host:\n%s", diffLines(before, after))
	}
	l.Guestnet(host, "destroy", "alpha")
	if _, err := l.tryIn(host, "ip", "link", "show", "gcli0"); err == nil {
		t.Error("destroy alpha left gcli0")
	}
}

// TestCliJSON: every command with -o json prints one JSON document on
// stdout, on its success and error paths, in a real namespace; trace's
// keys are all lower-case (packet.Src was not).
func TestCliJSON(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	spec := l.Spec(cliSpec + "  gamma:\n    mode: routed\n    bridge: gcli2\n    ipv4: 10.99.8.1/24\n")
	l.must("ip", "-n", host, "tuntap", "add", "dev", "tapj", "mode", "tap")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"plan", spec}, 2, `"changes"`},
		{[]string{"apply", spec}, 0, `"kernel_writes"`},
		{[]string{"plan", spec}, 0, `"changes": 0`},
		{[]string{"attach", "alpha", "tapj"}, 0, `"command"`},
		{[]string{"attach", "alpha", "nosuchtap"}, 1, `"error"`},
		{[]string{"status"}, 0, `"gcli0"`},
		{[]string{"routes", "gamma", "--peer", "198.51.100.126"}, 0, `10.99.8.0/24`},
		{[]string{"routes", "nosuch"}, 1, `"error"`},
		{[]string{"leases"}, 0, `[]`},
		{[]string{"doctor"}, -1, `[`},
		{[]string{"doctor", "nosuch"}, 1, `"error"`},
		{[]string{"trace", "10.99.7.10", "198.51.100.126", "tcp/80"}, -1, `"src": "10.99.7.10"`},
		{[]string{"trace", "nosuch", "10.99.7.1"}, 1, `"error"`},
		{[]string{"qemu-script", "beta"}, 0, `"script"`},
		{[]string{"detach", "alpha", "tapj"}, 0, `"actions"`},
		{[]string{"detach", "nosuch", "tapj"}, 1, `"error"`},
		{[]string{"destroy", "gamma"}, 0, `"kernel_writes"`},
		{[]string{"destroy", "gamma"}, 1, `"error"`},
		{[]string{"apply", t.TempDir()}, 1, `"error"`},
		{[]string{"destroy", "--all"}, 0, `"kernel_writes"`},
	} {
		out, errs, code := l.Run(host, append([]string{"-o", "json"}, tc.args...)...)
		if tc.code >= 0 && code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out, errs)
		}
		if !json.Valid([]byte(out)) || !strings.Contains(out, tc.want) {
			t.Errorf("%v -o json: stdout is not one JSON document holding %s:\n%s\n%s", tc.args, tc.want, out, errs)
		}
		if tc.args[0] == "trace" && strings.Contains(out, `"Src"`) {
			t.Errorf("trace -o json has upper-case keys:\n%s", out)
		}
	}
}

// TestCliRefusesNonsense: input breaker 2 saw accepted is an error naming
// what is wrong: an unknown output format, a typo in attach's network, a
// protocol or port trace cannot mean, an interface that is not there.
func TestCliRefusesNonsense(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(cliSpec)
	l.Guestnet(host, "apply", spec)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "yaml", "status"}, `unknown output format "yaml"`},
		{[]string{"attach", "alpah", "vg1"}, `no network "alpah": the networks alpha and beta are applied here`},
		{[]string{"trace", "10.99.0.10", "198.51.100.1", "sctp/5"}, `protocol "sctp"`},
		{[]string{"trace", "10.99.0.10", "198.51.100.1", "tcp/99999"}, `port "99999"`},
		{[]string{"trace", "10.99.0.10", "198.51.100.1", "tcp/0"}, `port "0"`},
		{[]string{"trace", "10.99.0.10", "198.51.100.1", "icmp/3"}, "icmp has no port"},
		{[]string{"trace", "--in", "nosuch", "10.99.0.10", "198.51.100.1"}, "trace --in nosuch: no such interface"},
		{[]string{"trace", "--port", "nosuch", "10.99.0.10", "198.51.100.1"}, "trace --port nosuch: no such interface"},
		{[]string{"forward", "add", "beta", "--file", spec}, `required flag(s) "port", "to" not set`},
	} {
		out, errs, code := l.Run(host, c.args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, want 1 and %q\n%s%s", c.args, code, c.want, out, errs)
		}
	}
}
