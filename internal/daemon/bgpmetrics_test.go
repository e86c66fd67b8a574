package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/guestnet/guestnet/internal/bgp"
)

// bgpOnly collects what collectBGP makes of a status.
type bgpOnly struct{ st bgp.Status }

func (c bgpOnly) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBGPSession
	ch <- descBGPPrefixes
	ch <- descBGPAnnounced
}

func (c bgpOnly) Collect(ch chan<- prometheus.Metric) { collectBGP(ch, c.st) }

// exposition gathers c through a registry (which checks the metrics
// against their descriptions) and prints one sorted line per sample:
// name{label="value",...} value.
func exposition(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := mf.GetName()
			if len(ls) > 0 {
				name += "{" + strings.Join(ls, ",") + "}"
			}
			lines = append(lines, fmt.Sprintf("%s %g", name, m.GetGauge().GetValue()))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// One established peer and one that is not: the session gauge says which,
// each direction has its count, and the announced prefixes are counted.
func TestBGPMetrics(t *testing.T) {
	st := bgp.Status{ASN: 65001,
		Peers: []bgp.PeerStatus{
			{Address: netip.MustParseAddr("10.10.0.2"), ASN: 65002, State: bgp.StateEstablished, Sent: 2, Received: 3, Installed: 1},
			{Address: netip.MustParseAddr("10.10.0.254"), ASN: 65100, State: bgp.StateActive},
		},
		Announced: []netip.Prefix{netip.MustParsePrefix("10.71.0.0/24"), netip.MustParsePrefix("203.0.113.7/32")},
	}
	want := `guestnet_bgp_announced 2
guestnet_bgp_prefixes{direction="installed",peer="10.10.0.2"} 1
guestnet_bgp_prefixes{direction="installed",peer="10.10.0.254"} 0
guestnet_bgp_prefixes{direction="received",peer="10.10.0.2"} 3
guestnet_bgp_prefixes{direction="received",peer="10.10.0.254"} 0
guestnet_bgp_prefixes{direction="sent",peer="10.10.0.2"} 2
guestnet_bgp_prefixes{direction="sent",peer="10.10.0.254"} 0
guestnet_bgp_session_established{asn="65002",peer="10.10.0.2"} 1
guestnet_bgp_session_established{asn="65100",peer="10.10.0.254"} 0`
	if got := exposition(t, bgpOnly{st}); got != want {
		t.Errorf("metrics:\n%s\nwant:\n%s", got, want)
	}
	// A speaker with no peer yet still says how much it announces.
	if got := exposition(t, bgpOnly{bgp.Status{}}); got != "guestnet_bgp_announced 0" {
		t.Errorf("metrics of a speaker without peers:\n%s", got)
	}
}
