package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// bgpStatus is the part of `guestnet -o json bgp` (bgp.Status) the
// tests read, decoded by its JSON names: the CLI's output is the
// contract here, not the Go type.
type bgpStatus struct {
	Peers []struct {
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"peers"`
	Announced []string     `json:"announced"`
	Learned   []bgpLearned `json:"learned"`
}

type bgpLearned struct {
	Prefix    string `json:"prefix"`
	NextHop   string `json:"next_hop"`
	Peer      string `json:"peer"`
	Installed bool   `json:"installed"`
	Why       string `json:"why"`
	Refused   bool   `json:"refused"` // by the import policy, on purpose
	Stale     bool   `json:"stale"`
}

// BGPStatus is what `guestnet -o json bgp` says of the daemon serving ns.
func (l *Lab) BGPStatus(ns string) bgpStatus {
	l.t.Helper()
	out := l.Guestnet(ns, "-o", "json", "bgp")
	var st bgpStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("guestnet -o json bgp: %v\n%s", err, out)
	}
	return st
}

// waitLearned waits until the daemon in ns has learned at least n paths,
// and returns its status.
func waitLearned(t *testing.T, l *Lab, ns string, n int) bgpStatus {
	t.Helper()
	var st bgpStatus
	waitUntil(t, "guestnet bgp lists the paths learned", 30*time.Second, func() bool {
		st = l.BGPStatus(ns)
		return len(st.Learned) >= n
	})
	return st
}

// learnedOf finds prefix among the learned paths.
func learnedOf(st bgpStatus, prefix string) (bgpLearned, bool) {
	for _, l := range st.Learned {
		if l.Prefix == prefix {
			return l, true
		}
	}
	return bgpLearned{}, false
}

// checkHostileReported: `guestnet bgp` and doctor name every refused
// prefix of the hostile peer.
func checkHostileReported(t *testing.T, l *Lab, ns string) {
	t.Helper()
	for _, cmd := range []string{"bgp", "doctor"} {
		out, errs, _ := l.Run(ns, cmd)
		for _, p := range hostilePrefixes {
			if !strings.Contains(out+errs, p.prefix+" ") {
				t.Errorf("guestnet %s does not name the refused %s:\n%s%s", cmd, p.prefix, out, errs)
			}
		}
		t.Logf("guestnet %s:\n%s%s", cmd, out, errs)
	}
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
