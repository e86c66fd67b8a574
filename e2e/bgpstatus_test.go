package e2e

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/bgp"
)

// BGPStatus is what `guestnet -o json bgp` says of the daemon serving ns.
func (l *Lab) BGPStatus(ns string) bgp.Status {
	l.t.Helper()
	out := l.Guestnet(ns, "-o", "json", "bgp")
	var st bgp.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("guestnet -o json bgp: %v\n%s", err, out)
	}
	return st
}

// waitLearned waits until the daemon in ns has learned at least n paths,
// and returns its status.
func waitLearned(t *testing.T, l *Lab, ns string, n int) bgp.Status {
	t.Helper()
	var st bgp.Status
	waitUntil(t, "guestnet bgp lists the paths learned", 30*time.Second, func() bool {
		st = l.BGPStatus(ns)
		return len(st.Learned) >= n
	})
	return st
}

// learnedOf finds prefix among the learned paths.
func learnedOf(st bgp.Status, prefix string) (bgp.Learned, bool) {
	p := netip.MustParsePrefix(prefix)
	for _, l := range st.Learned {
		if l.Prefix == p {
			return l, true
		}
	}
	return bgp.Learned{}, false
}

// checkHostileReported: doctor names every refused prefix of the
// hostile peer.
func checkHostileReported(t *testing.T, l *Lab, ns string) {
	t.Helper()
	out, errs, _ := l.Run(ns, "doctor")
	for _, p := range hostilePrefixes {
		if !strings.Contains(out+errs, p.prefix) {
			t.Errorf("guestnet doctor does not name the refused %s:\n%s%s", p.prefix, out, errs)
		}
	}
	t.Logf("guestnet doctor:\n%s%s", out, errs)
}

// checkNoStale: no learned path is still marked stale (kept across a
// peer's restart) on the daemons of nss.
func checkNoStale(t *testing.T, l *Lab, nss ...string) {
	t.Helper()
	for _, ns := range nss {
		for _, p := range l.BGPStatus(ns).Learned {
			if p.Stale {
				t.Errorf("%s: %s via %s still stale after its peer's End-of-RIB", ns, p.Prefix, p.NextHop)
			}
		}
	}
}
