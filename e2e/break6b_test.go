package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

const renumberSpec = `
networks:
  six:
    mode: routed
    bridge: gn6
    ipv6: %s
`

// TestIPv6Renumber: the operator changes a network's prefix under a
// running guest (the kernel's own SLAAC). The guest takes an address in
// the new prefix, and its address in the old one is deprecated at once
// (no longer chosen as a source) with the old on-link route gone: the
// daemon's RAs announce the former prefix with lifetimes 0 (RFC 8978).
// Before, the old address stayed preferred for up to 4 hours with nothing
// routing it. Then the network is removed: its final RA deprecates the
// new prefix too.
func TestIPv6Renumber(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(strings.Replace(renumberSpec, "%s", "fd42:61::1/64", 1))
	l.Serve_(host, spec)
	g := l.v6Guest(host, "six", "renum", "vr1", "02:00:00:00:61:31")
	l.must("ip", "-n", g, "link", "set", "eth0", "up")
	has := func(prefix string) func() bool {
		return func() bool {
			for _, a := range l.addrs6(g) {
				if strings.HasPrefix(a, prefix) {
					return true
				}
			}
			return false
		}
	}
	if _, ok := waitTrue(15*time.Second, has("fd42:61:")); !ok {
		t.Fatalf("no SLAAC address in fd42:61::/64: %v", l.addrs6(g))
	}
	// state is the guest's line of `ip -6 addr` for its address in
	// prefix, "" when it has none.
	state := func(prefix string) string {
		out, _ := l.tryIn(g, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, " "+prefix) {
				return strings.TrimSpace(line)
			}
		}
		return ""
	}
	os.WriteFile(spec, []byte(strings.Replace(renumberSpec, "%s", "fd42:63::1/64", 1)), 0o644)
	l.Guestnet(host, "apply", spec)
	took, ok := waitTrue(15*time.Second, has("fd42:63:"))
	if !ok {
		t.Fatalf("no SLAAC address in the new prefix fd42:63::/64 after the reload: %v", l.addrs6(g))
	}
	t.Logf("new prefix after %v: %v", took.Round(time.Millisecond), l.addrs6(g))
	took, ok = waitTrue(5*time.Second, func() bool {
		s := state("fd42:61:")
		return s == "" || strings.Contains(s, "deprecated")
	})
	routes := l.In(g, "ip", "-6", "route", "show", "dev", "eth0")
	if !ok {
		t.Errorf("the old address is still preferred after renumbering:\n%s", state("fd42:61:"))
	} else {
		t.Logf("old address after %v: %q", took.Round(time.Millisecond), state("fd42:61:"))
	}
	if strings.Contains(routes, "fd42:61::/64") {
		t.Errorf("the guest keeps the old on-link route:\n%s", routes)
	}

	// The network goes: the final RA deprecates the current prefix too.
	os.WriteFile(spec, []byte("networks:\n  other:\n    mode: isolated\n    bridge: gn7\n"), 0o644)
	l.Guestnet(host, "apply", spec)
	if _, ok := waitTrue(5*time.Second, func() bool {
		s := state("fd42:63:")
		return s == "" || strings.Contains(s, "deprecated")
	}); !ok {
		t.Errorf("the network was removed, the guest's address in it is still preferred:\n%s", state("fd42:63:"))
	}
	if r := l.defaultRoute6(g); r != "" {
		t.Errorf("the network was removed, the guest keeps its default route %q", r)
	}
	t.Logf("after removal: %q, routes %q", state("fd42:63:"), l.In(g, "ip", "-6", "route", "show", "dev", "eth0"))
}
