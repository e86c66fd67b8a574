package daemon

import (
	"context"
	"testing"

	"github.com/guestnet/guestnet/internal/dhcp"
)

// Two networks with DHCP. (A reload cannot hand a bridge to another
// network: the spec refuses it, "destroy that network first".)
const twoNetsSpec = `networks:
  a:
    mode: isolated
    bridge: ga0
    ipv4: 10.98.1.1/24
    dhcp: {range: 10.98.1.100-10.98.1.199, lease: 1h}
  b:
    mode: isolated
    bridge: gb0
    ipv4: 10.98.2.1/24
    dhcp: {range: 10.98.2.100-10.98.2.199, lease: 1h}
`

// Network a's bridge is renamed.
const renamedSpec = `networks:
  a:
    mode: isolated
    bridge: ga1
    ipv4: 10.98.1.1/24
    dhcp: {range: 10.98.1.100-10.98.1.199, lease: 1h}
  b:
    mode: isolated
    bridge: gb0
    ipv4: 10.98.2.1/24
    dhcp: {range: 10.98.2.100-10.98.2.199, lease: 1h}
`

// checkServed fails unless each network's handler answers on its bridge
// (and only there), and looks up its guests' ports on that bridge.
func (r *rig) checkServed(bridges map[string]string) {
	r.t.Helper()
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	for network, bridge := range bridges {
		l, ok := r.host().Link(bridge)
		if !ok {
			r.t.Fatalf("no bridge %s", bridge)
		}
		s := r.d.servers[network]
		if s == nil {
			r.t.Errorf("network %s: no DHCP server", network)
			continue
		}
		if got := r.d.mux.Handler(l.Index); got != s.handler {
			r.t.Errorf("requests on %s (ifindex %d, network %s's bridge) go to %s", bridge, l.Index, network, nameOf(r.d.servers, got))
		}
		if lr, ok := s.handler.Ports.(learner); !ok || lr.bridge != bridge {
			r.t.Errorf("network %s (bridge %s) looks up its guests' ports on %+v", network, bridge, s.handler.Ports)
		}
	}
}

func nameOf(servers map[string]*server, h *dhcp.Handler) string {
	if h == nil {
		return "no handler: never answered"
	}
	for n, s := range servers {
		if s.handler == h {
			return "network " + n
		}
	}
	return "a stopped handler"
}

// A reload that renames a network's bridge leaves it answered on the new
// bridge, looking up its guests' ports (and probing with ARP) there.
// Before the fix the network kept its server, whose learner and ARP
// prober still named the old bridge (gone: every lease's port unknown,
// every probe failed).
func TestReloadRenamesBridge(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       map[string]string
	}{
		{"renamed", renamedSpec, map[string]string{"a": "ga1", "b": "gb0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, twoNetsSpec)
			r.checkServed(map[string]string{"a": "ga0", "b": "gb0"})
			r.write(tc.spec)
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			r.checkServed(tc.want)
		})
	}
}
