package daemon

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/plan"
)

// Breaker tests of withdrawAhead (issue 14): what the speaker announces
// while an apply runs, and after one fails. The speaker is GoBGP in the
// test process, listening on loopback, with no peer (a peer would be
// dialled from the test's namespace).

// bgpSpec is a config with a speaker on 127.0.0.1:port announcing the
// routed networks nets (name and gateway/prefix, one per pair).
func bgpSpec(port int, section bool, nets ...string) string {
	var b strings.Builder
	if section {
		fmt.Fprintf(&b, "bgp:\n  asn: 65001\n  router_id: 10.10.0.1\n  listen: [127.0.0.1]\n  port: %d\n  peers: []\n", port)
	}
	b.WriteString("networks:\n")
	for i := 0; i < len(nets); i += 2 {
		fmt.Fprintf(&b, "  %s: {mode: routed, bridge: g%s, ipv4: %s}\n", nets[i], nets[i], nets[i+1])
	}
	return b.String()
}

// freePort is a TCP port free on loopback now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// watching fails the nth kernel write and records what the speaker
// announces at the first write of each apply.
type watching struct {
	flaky
	d       *Daemon
	atFirst string // announced when the first write came
}

func (w *watching) Do(a plan.Action) error {
	w.flaky.mu.Lock()
	first := w.flaky.seen == 0
	w.flaky.mu.Unlock()
	if first && w.d.speaker != nil { // d.mu is held by the apply
		w.atFirst = fmt.Sprint(w.d.speaker.Status().Announced)
	}
	return w.flaky.Do(a)
}

func (r *rig) announced() string {
	r.t.Helper()
	st, ok := r.d.BGP()
	if !ok {
		return "(no speaker)"
	}
	return fmt.Sprint(st.Announced)
}

func bgpRig(t *testing.T) (*rig, *watching, int) {
	port := freePort(t)
	r := start(t, bgpSpec(port, true, "rt1", "10.71.0.1/24", "rt2", "10.72.0.1/24"))
	w := &watching{flaky: flaky{Kernel: r.d.Engine.Kernel}, d: r.d}
	r.d.mu.Lock()
	r.d.Engine.Kernel = w
	r.d.mu.Unlock()
	if got := r.announced(); got != "[10.71.0.0/24 10.72.0.0/24]" {
		t.Fatalf("announced at start: %s", got)
	}
	return r, w, port
}

// A reload that removes rt2, with the bgp section kept or dropped,
// withdraws rt2 before the first kernel write (the first version left it
// announced until the apply ended when the section went); when the apply
// fails, rt2 (still applied) is announced again; once it succeeds, rt1
// alone is announced, or the speaker is stopped with its section.
func TestBreaker14bReloadFailsAfterWithdraw(t *testing.T) {
	for _, c := range []struct {
		name    string
		keepBGP bool
		after   string
	}{
		{"section kept", true, "[10.71.0.0/24]"},
		{"section dropped", false, "(no speaker)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, w, port := bgpRig(t)
			r.write(bgpSpec(port, c.keepBGP, "rt1", "10.71.0.1/24"))
			w.arm(1)
			if err := r.d.Reload(context.Background()); err == nil {
				t.Fatal("reload with its first write failing succeeded")
			}
			if w.atFirst != "[10.71.0.0/24]" {
				t.Errorf("announced at the apply's first write: %s, want rt2 withdrawn ahead", w.atFirst)
			}
			if got := r.announced(); got != "[10.71.0.0/24 10.72.0.0/24]" {
				t.Fatalf("announced after the failed reload: %s, want rt2 back (its bridge is still up: %s)", got, r.bridgeAddr("grt2"))
			}
			w.arm(0)
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := r.announced(); got != c.after {
				t.Fatalf("announced after the reload: %s, want %s", got, c.after)
			}
		})
	}
}

// A destroy that fails announces the network again, and holds nothing.
func TestBreaker14bDestroyFailsAnnouncesAgain(t *testing.T) {
	r, w, _ := bgpRig(t)
	w.arm(1)
	if err := r.d.destroy(context.Background(), []string{"rt2"}); err == nil {
		t.Fatal("destroy with its first write failing succeeded")
	}
	if w.atFirst != "[10.71.0.0/24]" {
		t.Errorf("announced at the destroy's first write: %s, want rt2 withdrawn ahead", w.atFirst)
	}
	if got := r.announced(); got != "[10.71.0.0/24 10.72.0.0/24]" {
		t.Fatalf("announced after the failed destroy: %s", got)
	}
	if got := r.heldFile(); got != "(none)" {
		t.Fatalf("a failed destroy left destroyed.json: %s", got)
	}
	// A second destroy that works withdraws rt2, and SIGHUP keeps it so.
	w.arm(0)
	if err := r.d.destroy(context.Background(), []string{"rt2"}); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.announced(); got != "[10.71.0.0/24]" {
		t.Fatalf("announced after destroy rt2 and SIGHUP: %s", got)
	}
}

var _ engine.Kernel = (*watching)(nil)
