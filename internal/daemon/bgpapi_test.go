package daemon

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/guestnet/guestnet/internal/bgp"
)

// serveAPI serves mux on the API socket of a fresh state folder, as the
// daemon does, and returns the folder.
func serveAPI(t *testing.T, mux *http.ServeMux) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return dir
}

// GET /v1/bgp over the real socket: the status travels whole; a config
// without a bgp section, a daemon too old to know the path and no daemon
// at all are three errors a caller tells apart with errors.Is.
func TestBGPClient(t *testing.T) {
	want := bgp.Status{ASN: 65001, RouterID: netip.MustParseAddr("10.10.0.1"), Port: 179,
		Peers: []bgp.PeerStatus{{Address: netip.MustParseAddr("10.10.0.2"), ASN: 65002, State: bgp.StateEstablished,
			Since: time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC), Sent: 1, Received: 2, Installed: 1}},
		Announced: []netip.Prefix{netip.MustParsePrefix("10.71.0.0/24")},
		Learned: []bgp.Learned{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("10.10.0.2"),
			Peer: netip.MustParseAddr("10.10.0.2"), Why: "a default route: import does not list 0.0.0.0/0"}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bgp", bgpHandler(func() (bgp.Status, bool) { return want, true }))
	got, err := BGP(serveAPI(t, mux))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("BGP() = %+v, %v; want %+v", got, err, want)
	}

	mux = http.NewServeMux()
	mux.HandleFunc("GET /v1/bgp", bgpHandler(func() (bgp.Status, bool) { return bgp.Status{}, false }))
	if _, err := BGP(serveAPI(t, mux)); !errors.Is(err, ErrNoBGP) {
		t.Errorf("no bgp section: err %v, want ErrNoBGP", err)
	}
	if _, err := BGP(serveAPI(t, http.NewServeMux())); !errors.Is(err, ErrOldDaemon) {
		t.Errorf("a daemon without /v1/bgp: err %v, want ErrOldDaemon", err)
	}
	if _, err := BGP(t.TempDir()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: err %v, want ErrNoDaemon", err)
	}
}

// A daemon whose config has no bgp section answers GET /v1/bgp with
// ErrNoBGP over its real socket, and exports no guestnet_bgp_* metric.
func TestDaemonWithoutBGP(t *testing.T) {
	r := start(t, natSpec)
	if _, err := BGP(r.d.Dir()); !errors.Is(err, ErrNoBGP) {
		t.Errorf("GET /v1/bgp of a daemon without a bgp section: %v, want ErrNoBGP", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{r.d})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if strings.HasPrefix(mf.GetName(), "guestnet_bgp_") {
			t.Errorf("metric %s without a bgp section", mf.GetName())
		}
	}
	if !slices.Contains(names, "guestnet_service_up") {
		t.Errorf("the collector gathered %v: not the daemon's metrics", names)
	}
}
