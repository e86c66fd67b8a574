package nft

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestGolden renders each testdata/*.yaml and compares with the .nft file:
// the text `nft list table inet guestnet` must print for that spec (the e2e
// suite checks the kernel's copy against the same rendering).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden specs")
	}
	for _, f := range files {
		s, err := spec.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Render(s.Models(), model.Host{})
		if err != nil {
			t.Fatal(err)
		}
		golden := strings.TrimSuffix(f, ".yaml") + ".nft"
		if *update {
			os.WriteFile(golden, []byte(rs.String()), 0o644)
		}
		want, _ := os.ReadFile(golden)
		if rs.String() != string(want) {
			t.Errorf("%s:\n%s\nwant:\n%s", golden, rs, want)
		}
	}
}

// TestEncodeDecode translates every rule guestnet renders to expressions
// and back: observe must read exactly what apply wrote.
func TestEncodeDecode(t *testing.T) {
	s, err := spec.Load("testdata/all-modes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := model.Host{BridgeNFCallIPTables: true, Foreign: model.Foreign{DockerUser: true,
		ForwardDrop: []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}}}
	var nets []model.Network
	for _, n := range s.Models() {
		if n.Mode != model.Open { // open adds no rules, so it cannot use DOCKER-USER
			nets = append(nets, n)
		}
	}
	rs, err := Render(nets, h)
	if err != nil {
		t.Fatal(err)
	}
	var rules []model.Rule
	for _, c := range rs.Chains {
		rules = append(rules, c.Rules...)
	}
	if len(rs.DockerUser) == 0 {
		t.Fatal("no DOCKER-USER rules rendered")
	}
	for i, r := range append(rules, rs.DockerUser...) {
		inet := i < len(rules)
		exprs, err := Encode(r, inet)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := Decode(exprs, r.Network)
		if !ok || got.String() != r.String() {
			t.Errorf("round trip of %s: got %s (ok=%v)", r, got, ok)
		}
	}
	if _, ok := Decode(nil, "x"); ok {
		t.Error("an empty rule decoded as ok")
	}
}

func TestForeignForwardDrop(t *testing.T) {
	nat := []model.Network{{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: mustPrefix("10.99.0.1/24")}}
	iso := []model.Network{{Name: "iso", Mode: model.Isolated, Bridge: "giso0"}}
	drop := []model.ForeignChain{{Name: "table ip filter chain FORWARD"}}
	var ce *ConflictError

	_, err := Render(nat, model.Host{Foreign: model.Foreign{ForwardDrop: drop}})
	if !errors.As(err, &ce) || ce.Bridged || ce.Bridge != "gnat0" {
		t.Errorf("nat under FORWARD DROP: %v", err)
	}
	if _, err := Render(iso, model.Host{Foreign: model.Foreign{ForwardDrop: drop}}); err != nil {
		t.Errorf("isolated without br_netfilter crosses no FORWARD chain: %v", err)
	}
	_, err = Render(iso, model.Host{BridgeNFCallIPTables: true, Foreign: model.Foreign{ForwardDrop: drop}})
	if !errors.As(err, &ce) || !ce.Bridged {
		t.Errorf("isolated under br_netfilter + FORWARD DROP: %v", err)
	}
	lets := []model.ForeignChain{{Name: "table ip filter chain FORWARD", AcceptIIF: []string{"gnat0"}, AcceptOIF: []string{"gnat0"}}}
	if rs, err := Render(nat, model.Host{Foreign: model.Foreign{ForwardDrop: lets}}); err != nil || len(rs.DockerUser) != 0 {
		t.Errorf("chain that already accepts the bridge: %v %v", rs.DockerUser, err)
	}
	rs, err := Render(nat, model.Host{Foreign: model.Foreign{ForwardDrop: drop, DockerUser: true}})
	want := "insert rule ip filter DOCKER-USER iifname \"gnat0\" accept comment \"guestnet:default\"\n" +
		"insert rule ip filter DOCKER-USER oifname \"gnat0\" accept comment \"guestnet:default\"\n"
	if err != nil || !strings.HasSuffix(rs.String(), want) {
		t.Errorf("DOCKER-USER rules:\n%s\nwant suffix:\n%s (err %v)", rs, want, err)
	}
	open := []model.Network{{Name: "free", Mode: model.Open, Bridge: "gopen0", IPv4: mustPrefix("10.99.2.1/24")}}
	if _, err := Render(open, model.Host{Foreign: model.Foreign{ForwardDrop: drop, DockerUser: true}}); !errors.As(err, &ce) {
		t.Errorf("mode open adds no rules, so a FORWARD DROP must be reported: %v", err)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestForwardElementsRoundTrip(t *testing.T) {
	s, err := spec.Load("testdata/forwards.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Render(s.Models(), model.Host{})
	if err != nil || len(rs.Forwards) != 4 {
		t.Fatalf("render: %v, %d elements", err, len(rs.Forwards))
	}
	for _, f := range rs.Forwards {
		k, kEnd, val := EncodeForward(f)
		got, ok := DecodeForward(k, kEnd, val)
		if !ok || got != f {
			t.Errorf("element %s read back as %s (ok=%v)", f, got, ok)
		}
		if f.Exact() {
			k, val := EncodeExact(f)
			if got, ok := DecodeExact(k, val); !ok || got != f {
				t.Errorf("hash element %s read back as %s (ok=%v)", f, got, ok)
			}
		}
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			exprs, err := Encode(r, true)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := Decode(exprs, r.Network); !ok || got.String() != r.String() {
				t.Errorf("round trip of %s: got %s (ok=%v)", r, got, ok)
			}
		}
	}
}
