package spec

import (
	"strings"
	"testing"
)

const editBase = `# the lab
networks:
  default:
    mode: nat          # like virbr0
    bridge: gnat0
    ipv4: 10.99.0.1/24
`

func TestEditForwards(t *testing.T) {
	out, n, err := EditForwards("lab.yaml", []byte(editBase), "default",
		ForwardEdit{Proto: "tcp", Port: "2222", To: "10.99.0.10:22", From: []string{"203.0.113.0/24"}}, true)
	if err != nil || n != 1 {
		t.Fatalf("add: %v (%d)", err, n)
	}
	s := string(out)
	for _, want := range []string{"# the lab", "# like virbr0", `{proto: tcp, port: "2222", to: '10.99.0.10:22', from: [203.0.113.0/24]}`} {
		if !strings.Contains(s, want) {
			t.Errorf("edited file lacks %q:\n%s", want, s)
		}
	}
	nets, err := Parse("lab.yaml", out)
	if err != nil || len(nets[0].Forwards) != 1 || nets[0].Forwards[0].ToPort != 22 {
		t.Fatalf("edited file parses to %+v, %v", nets, err)
	}
	out2, n, err := EditForwards("lab.yaml", out, "default", ForwardEdit{Proto: "tcp", Port: "2222"}, false)
	if err != nil || n != 1 || strings.Contains(string(out2), "2222") {
		t.Errorf("rm: %v (%d)\n%s", err, n, out2)
	}
	if _, _, err := EditForwards("lab.yaml", []byte(editBase), "default", ForwardEdit{Proto: "tcp", Port: "22", To: "10.98.0.10"}, true); err == nil ||
		!strings.Contains(err.Error(), "forwards[0].to: 10.98.0.10 is not a guest address") {
		t.Errorf("an invalid forward was written: %v", err)
	}
	if _, _, err := EditForwards("lab.yaml", []byte(editBase), "nosuch", ForwardEdit{}, true); err == nil {
		t.Error("editing a missing network succeeded")
	}
}
