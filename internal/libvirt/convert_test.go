package libvirt

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestGolden converts every testdata/*.xml: a network that converts has its
// YAML in NAME.yaml (and its warnings in NAME.warn), which spec.Load must
// accept and read back as the very network Convert returned; a refused one
// has its errors in NAME.err.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.xml")
	if len(files) < 15 {
		t.Fatalf("found %d testdata/*.xml, want the 20 examples", len(files))
	}
	for _, f := range files {
		base := strings.TrimSuffix(f, ".xml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Convert(f, data)
			var warn string
			if r != nil {
				for _, w := range r.Warnings {
					warn += w.Error() + "\n"
				}
			}
			golden(t, base+".warn", warn)
			if err != nil {
				golden(t, base+".err", err.Error()+"\n")
				golden(t, base+".yaml", "")
				return
			}
			golden(t, base+".err", "")
			out := Render([]*Result{r})
			golden(t, base+".yaml", out)

			// Round trip: the file as written loads, and gives the model.
			p := filepath.Join(t.TempDir(), "spec.yaml")
			if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := spec.Load(p)
			if err != nil {
				t.Fatalf("spec.Load refuses the converted network:\n%v\n%s", err, out)
			}
			if got := s.Models(); len(got) != 1 || !reflect.DeepEqual(got[0], r.Network) {
				t.Errorf("spec.Load reads back\n%+v\nConvert gave\n%+v", got, r.Network)
			}
		})
	}
}

// golden compares got with the file, which must not exist when got is
// empty; -update writes it (or removes it).
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if got == "" {
			os.Remove(path)
			return
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err) && got == "":
	case os.IsNotExist(err):
		t.Errorf("%s: missing; got:\n%s(go test -update writes it)", path, got)
	case err != nil:
		t.Fatal(err)
	case string(want) != got:
		t.Errorf("%s differs; got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestDefault checks libvirt's own default network field by field, not by
// golden text: nat, virbr0, 192.168.122.1/24, one range, libvirt's lease.
func TestDefault(t *testing.T) {
	data, err := os.ReadFile("testdata/default.xml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Convert("default.xml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := model.Network{
		Name: "default", Mode: model.NAT, Bridge: "virbr0",
		IPv4: netip.MustParsePrefix("192.168.122.1/24"),
		DHCP: &model.DHCP{
			Ranges:  []model.Range{{From: netip.MustParseAddr("192.168.122.2"), To: netip.MustParseAddr("192.168.122.254")}},
			Lease:   time.Hour,
			PerPort: spec.DefaultPerPort,
		},
	}
	if !reflect.DeepEqual(r.Network, want) {
		t.Errorf("got %+v\nwant %+v", r.Network, want)
	}
	// libvirt serves DNS on every network; guestnet needs a domain for
	// it, so the one thing the import says is that.
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0].Msg, "no <domain>") {
		t.Errorf("warnings: %v", r.Warnings)
	}
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"default":                            "default",
		"my net":                             "my-net",
		"_lab":                               "lab",
		"über":                               "ber",
		"a234567890123456789012345678901234": "a2345678901234567890123456789012",
	} {
		if got, ok := Name(in); !ok || got != want {
			t.Errorf("Name(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if got, ok := Name("___"); ok {
		t.Errorf("Name(___) = %q, true; want refused", got)
	}
}

// TestUnknownNamed: an element or attribute nobody knows is an error that
// names it and its line, so nothing libvirt does is lost unseen.
func TestUnknownNamed(t *testing.T) {
	x := "<network>\n  <name>n</name>\n  <bridge name='virbr9' colour='blue'/>\n  <ip address='10.9.0.1' prefix='24'>\n    <frob/>\n  </ip>\n</network>\n"
	_, err := Convert("u.xml", []byte(x))
	if err == nil {
		t.Fatal("converted; want errors")
	}
	for _, want := range []string{`u.xml:3: attribute colour="blue" of <bridge>`, "u.xml:5: <frob> in <ip>"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestCheckAll: networks fine alone but not together are refused at the
// <network> of the later one.
func TestCheckAll(t *testing.T) {
	conv := func(file, x string) *Result {
		r, err := Convert(file, []byte(x))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := conv("a.xml", "<network><name>a</name><bridge name='virbr0'/></network>")
	b := conv("b.xml", "<network><name>b</name><bridge name='virbr0'/></network>")
	c := conv("c.xml", "<network><name>a</name><bridge name='virbr1'/></network>")
	err := CheckAll([]*Result{a, b})
	if err == nil || !strings.Contains(err.Error(), "b.xml:1: ") || !strings.Contains(err.Error(), `"virbr0" is also the bridge of network a`) {
		t.Errorf("same bridge: %v", err)
	}
	err = CheckAll([]*Result{a, c})
	if err == nil || !strings.Contains(err.Error(), "c.xml:1: ") || !strings.Contains(err.Error(), "network a is also defined at a.xml:1") {
		t.Errorf("same name: %v", err)
	}
	e := conv("e.xml", "<network><name>my net</name><bridge name='virbr3'/></network>")
	f := conv("f.xml", "<network><name>my-net</name><bridge name='virbr4'/></network>")
	err = CheckAll([]*Result{e, f})
	if err == nil || !strings.Contains(err.Error(), `f.xml:1: libvirt networks "my-net" and "my net" (e.xml:1) both become guestnet network my-net`) {
		t.Errorf("names mapped to one: %v", err)
	}
	if err := CheckAll([]*Result{a, conv("d.xml", "<network><name>d</name><bridge name='virbr2'/></network>")}); err != nil {
		t.Errorf("two fine networks: %v", err)
	}
}

// TestNotANetwork: a domain's XML, or no XML at all, is refused with
// where and why.
func TestNotANetwork(t *testing.T) {
	for x, want := range map[string]string{
		"<domain type='kvm'>\n<name>vm</name>\n</domain>": "d.xml:1: not a libvirt network: expected element type <network> but have <domain>",
		"<network>\n<name>n</name>\n":                     "d.xml:3: not a libvirt network: unexpected EOF",
		"":                                                "d.xml:1: not a libvirt network: no element in it (want a <network>)",
	} {
		r, err := Convert("d.xml", []byte(x))
		if r != nil || err == nil || err.Error() != want {
			t.Errorf("%q: got %v, %v; want %q", x, r, err, want)
		}
	}
}
