package e2e

import (
	"strings"
	"testing"
)

// TestCrashDuringDetach: a detach killed after its first kernel write
// (GUESTNET_CRASH_AFTER_WRITES=1) used to leave the port out of the bridge
// but up, and a second detach said "nothing to do". Now the port is taken
// down first: after the crash it is down (still in the bridge), and the
// second detach takes it out of the bridge, ending where an uninterrupted
// detach ends.
func TestCrashDuringDetach(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	l.Guestnet(host, "apply", l.Spec(dhcpSpec))
	l.Guest(host, "default", "g", "vg", "10.99.0.50/24", "")
	link := func() string { return l.In(host, "ip", "-o", "link", "show", "vg") }
	if s := link(); !strings.Contains(s, "master gnat0") || !strings.Contains(s, ",UP") {
		t.Fatalf("after attach: %s", s)
	}
	if !l.crashRun(host, 1, "detach", "default", "vg") {
		t.Fatal("detach was not killed after its first write")
	}
	if s := link(); strings.Contains(s, ",UP") {
		t.Errorf("after a crash during detach the port is up: %s", s)
	}
	out := l.Guestnet(host, "detach", "default", "vg")
	s := link()
	if strings.Contains(s, "master") || strings.Contains(s, ",UP") {
		t.Errorf("after the second detach (%q) the port is still in a bridge or up: %s", strings.TrimSpace(out), s)
	}
}
