package spec

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestBadFiles loads every file of testdata/bad and compares the error with
// the .err file beside it. Each error must name file, line and field.
func TestBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 20 {
		t.Fatalf("found %d bad files, want the whole corpus", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			got := err.Error() + "\n"
			if !strings.HasPrefix(got, f+":") {
				t.Errorf("error does not start with the file name: %s", got)
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if got != string(want) {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestGoodFile(t *testing.T) {
	s, err := Load("testdata/good/all-modes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range s.Networks {
		names = append(names, n.Name+"="+string(n.Mode)+"/"+n.Bridge)
	}
	want := "default=nat/gnat0 free=open/gopen0 iso=isolated/gn-iso lab=routed/grt0 lan=bridge/br0 served=nat/gsrv0"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("networks: %s\nwant:      %s", got, want)
	}
	d := s.Networks[5].DHCP
	if d == nil || len(d.Ranges) != 2 || d.Lease != 30*time.Minute || d.Hosts[0].MAC != "52:54:00:aa:bb:cc" ||
		d.Domain != "lab.internal" || d.MTU != 1400 || len(d.Routes) != 1 || len(d.DNS) != 1 {
		t.Errorf("served.dhcp: %+v", d)
	}
	if s.Networks[3].MTU != 1400 || s.Networks[3].IPv4 != netip.MustParsePrefix("10.99.1.1/24") {
		t.Errorf("lab: %+v", s.Networks[3].Network)
	}
}

func TestDirectoryAndDuplicates(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("networks:\n  x:\n    mode: isolated\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.yml"), []byte("networks:\n  y:\n    mode: isolated\n"), 0o644)
	s, err := Load(dir)
	if err != nil || len(s.Networks) != 2 {
		t.Fatalf("load dir: %v %v", s, err)
	}
	os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("\nnetworks:\n  x:\n    mode: isolated\n    bridge: other\n"), 0o644)
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), "c.yaml:3: networks.x: declared twice (also at") {
		t.Errorf("duplicate across files: %v", err)
	}
}

func host() model.Host {
	return model.Host{
		Links: []model.Link{
			{Name: "br-docker", Kind: "bridge"},
			{Name: "eth0", Kind: "device"},
			{Name: "eth1", Kind: "device", Master: "br-docker"},
			{Name: "gnat0", Kind: "bridge", Alias: "guestnet:default"},
			{Name: "virbr0", Kind: "bridge"},
			// Addresses without a prefix route (noprefixroute): no route
			// says the host has them.
			{Name: "x9", Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("fd42:55::1/64"), netip.MustParsePrefix("10.96.0.5/24"),
				netip.MustParsePrefix("fe80::1/64")}},
		},
		Routes: []model.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0"},
			{Dst: netip.MustParsePrefix("172.17.0.0/16"), Dev: "br-docker", Proto: 2},
		},
	}
}

func TestCheckHost(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"networks:\n  lan:\n    mode: bridge\n    bridge: br0\n    uplink: eth9\n",
			`h.yaml:5: networks.lan.uplink: no interface "eth9" on this host`},
		{"networks:\n  lan:\n    mode: bridge\n    bridge: br0\n    uplink: eth1\n",
			`h.yaml:5: networks.lan.uplink: "eth1" is already a port of bridge br-docker`},
		{"networks:\n  lan:\n    mode: bridge\n    bridge: br0\n    uplink: virbr0\n",
			`h.yaml:5: networks.lan.uplink: "virbr0" is a bridge itself; name the NIC instead`},
		{"networks:\n  default:\n    mode: nat\n    bridge: virbr0\n    ipv4: 10.99.0.1/24\n",
			`h.yaml:4: networks.default.bridge: "virbr0" already exists and guestnet did not create it (pick another name, or delete the link)`},
		{"networks:\n  other:\n    mode: nat\n    bridge: gnat0\n    ipv4: 10.99.0.1/24\n",
			`h.yaml:4: networks.other.bridge: "gnat0" belongs to guestnet network default: destroy that network first`},
		{"networks:\n  d:\n    mode: nat\n    bridge: gd0\n    ipv4: 172.17.3.1/24\n",
			`h.yaml:5: networks.d.ipv4: subnet 172.17.3.0/24 overlaps the host's route 172.17.0.0/16 dev br-docker`},
		{"networks:\n  d:\n    mode: nat\n    bridge: gd0\n    ipv6: fd42:55::1/64\n",
			`h.yaml:5: networks.d.ipv6: subnet fd42:55::/64 holds fd42:55::1, an address of x9 already (pick another subnet, or remove the address from x9)`},
		{"networks:\n  d:\n    mode: routed\n    bridge: gd0\n    ipv4: 10.96.0.1/24\n",
			`h.yaml:5: networks.d.ipv4: subnet 10.96.0.0/24 holds 10.96.0.5, an address of x9 already (pick another subnet, or remove the address from x9)`},
	}
	for _, c := range cases {
		nets, err := Parse("h.yaml", []byte(c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		s := &Spec{Networks: nets}
		err = s.CheckHost(host())
		if err == nil || err.Error() != c.want {
			t.Errorf("got  %v\nwant %s", err, c.want)
		}
	}
	ok := &Spec{}
	ok.Networks, _ = Parse("h.yaml", []byte("networks:\n  default:\n    mode: nat\n    bridge: gnat0\n    ipv4: 10.99.0.1/24\n"))
	if err := ok.CheckHost(host()); err != nil {
		t.Errorf("re-applying an owned network: %v", err)
	}
	// Link-local addresses are on every interface and in no guest subnet.
	ok.Networks, _ = Parse("h.yaml", []byte("networks:\n  d:\n    mode: nat\n    bridge: gd0\n    ipv6: fd42:56::1/64\n"))
	if err := ok.CheckHost(host()); err != nil {
		t.Errorf("a subnet no interface holds an address of: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nets, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		s := &Spec{Networks: nets}
		if s.Validate() == nil {
			for _, n := range nets {
				if len(n.Bridge) > 15 || n.Mode == "" {
					t.Fatalf("accepted an invalid network: %+v", n.Network)
				}
			}
		}
	})
}

// TestLoadRefusesFIFO: a named pipe as a spec is refused at once, never
// read (reading it would block apply, plan and the daemon's reload).
func TestLoadRefusesFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "net.yaml")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("SKIPPED: cannot make a FIFO here:", err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "named pipe (FIFO), not a regular file") {
		t.Fatalf("Load of a FIFO: %v", err)
	}
}
