package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/spec"
)

const libvirtData = "../../internal/libvirt/testdata/"

// copyXML puts the named testdata files into a fresh directory.
func copyXML(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		data, err := os.ReadFile(libvirtData + n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestImportLibvirtFile(t *testing.T) {
	out, errs, code := runCLI(t, "import", "libvirt", libvirtData+"default.xml")
	want, err := os.ReadFile(libvirtData + "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(want) {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s", code, out, want)
	}
	if !strings.HasPrefix(errs, "warning: "+libvirtData+"default.xml:1: no <domain>") {
		t.Errorf("stderr %q: want the warning about DNS", errs)
	}
}

func TestImportLibvirtStdin(t *testing.T) {
	f, err := os.Open(libvirtData + "open.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	out, errs, code := runCLI(t, "import", "libvirt", "-")
	if code != 0 || !strings.Contains(out, "  open:\n    mode: open\n    bridge: virbr3\n") {
		t.Errorf("exit %d, stdout:\n%s", code, out)
	}
	if !strings.Contains(errs, "warning: (stdin):1: ") {
		t.Errorf("stderr %q: want warnings naming (stdin)", errs)
	}
}

// --all prints one networks: mapping that guestnet loads whole.
func TestImportLibvirtAll(t *testing.T) {
	dir := copyXML(t, "default.xml", "isolated.xml", "renamed.xml")
	out, _, code := runCLI(t, "import", "libvirt", "--all", dir)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	p := filepath.Join(t.TempDir(), "libvirt.yaml")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := spec.Load(p)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var names []string
	for _, n := range s.Networks {
		names = append(names, n.Name+"="+n.Bridge)
	}
	if got := strings.Join(names, " "); got != "default=virbr0 my-lab-net=virbr5 private=virbr2" {
		t.Errorf("networks %s", got)
	}
}

// One refused file fails the whole run, says where, and prints nothing.
func TestImportLibvirtAllRefused(t *testing.T) {
	dir := copyXML(t, "default.xml", "bandwidth.xml", "macvtap.xml")
	out, errs, code := runCLI(t, "import", "libvirt", "--all", dir)
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q: want 1 and nothing", code, out)
	}
	for _, want := range []string{
		"error: " + filepath.Join(dir, "bandwidth.xml") + ":5: <bandwidth> in <network> is not supported",
		"error: " + filepath.Join(dir, "macvtap.xml") + ":3: <forward mode='bridge'> without <bridge name> is macvtap",
		"guestnet: 2 of 3 libvirt networks cannot be imported",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

// Two files fine alone but on one bridge are refused together.
func TestImportLibvirtAllClash(t *testing.T) {
	dir := copyXML(t, "nat-ipv6.xml", "nat66.xml")
	out, errs, code := runCLI(t, "import", "libvirt", "--all", dir)
	if code != 1 || out != "" || !strings.Contains(errs, "nat66.xml:") || !strings.Contains(errs, `"virbr0" is also the bridge of network default`) {
		t.Errorf("exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}
}

func TestImportLibvirtArgs(t *testing.T) {
	for _, args := range [][]string{{}, {"a.xml", "b.xml"}, {"--all", "/tmp", "a.xml"}} {
		_, errs, code := runCLI(t, append([]string{"import", "libvirt"}, args...)...)
		if code != 1 || !strings.Contains(errs, "want one FILE (- for stdin), or --all DIR") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}
