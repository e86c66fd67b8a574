package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/dhcp"
)

// LeaseView is a lease as `guestnet leases` shows it.
type LeaseView struct {
	Network  string    `json:"network"`
	MAC      string    `json:"mac"`
	DUID     string    `json:"duid,omitempty"` // a DHCPv6 lease's client`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expiry   time.Time `json:"expiry"`
	State    string    `json:"state"` // bound, expired, declined, abandoned
	// Host is the host that wrote a stretched network's lease (etcd).
	Host string `json:"host,omitempty"`
}

func view(network string, l dhcp.Lease, now time.Time) LeaseView {
	st := "bound"
	switch {
	case now.After(l.Expiry):
		st = "expired" // a quarantine that ran out too: the address is free again
	case l.Declined && l.MAC == "":
		st = "abandoned" // answered ARP before it was offered
	case l.Declined:
		st = "declined"
	}
	return LeaseView{Network: network, MAC: l.MAC, IP: l.IP.String(), Hostname: l.Hostname, Expiry: l.Expiry, State: st, Host: l.Host}
}

func view6(network string, l dhcp.Lease6, now time.Time) LeaseView {
	st := "bound"
	switch {
	case now.After(l.Expiry):
		st = "expired"
	case l.Declined:
		st = "declined"
	}
	return LeaseView{Network: network, MAC: l.MAC, DUID: l.DUID, IP: l.IP.String(), Hostname: l.Hostname, Expiry: l.Expiry, State: st}
}

// listenAPI serves the CLI on a unix socket only root can reach (the
// folder is 0700 and the socket 0600).
func (d *Daemon) listenAPI() (io.Closer, error) {
	path := SocketPath(d.Dir())
	os.Remove(path) // a stale socket of a daemon that was killed
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.leases(r.URL.Query().Get("network")))
	})
	mux.HandleFunc("GET /v1/leases/cluster", clusterHandler(d.ClusterLeases))
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, ConfigView{Config: absPaths(d.Config)})
	})
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.Status())
	})
	mux.HandleFunc("GET /v1/bgp", bgpHandler(d.BGP))
	mux.HandleFunc("GET /v1/evpn", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, d.EVPN()) })
	// guestnet apply: re-read the config, held-down networks included.
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Apply(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		writeJSON(w, map[string]string{"result": "reloaded"})
	})
	mux.HandleFunc("POST /v1/destroy", func(w http.ResponseWriter, r *http.Request) {
		var req DestroyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "destroy: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := d.destroy(r.Context(), req.Networks); err != nil {
			code := http.StatusUnprocessableEntity
			var unknown *unknownError
			if errors.As(err, &unknown) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, map[string]string{"result": "destroyed"})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// leases lists the live pools' leases, and the stored ones of networks
// held down.
func (d *Daemon) leases(network string) []LeaseView {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	out := []LeaseView{}
	for name, s := range d.servers {
		if network != "" && name != network {
			continue
		}
		for _, l := range s.handler.Pool.Leases() {
			out = append(out, view(name, l, now))
		}
	}
	for name, s := range d.v6.servers {
		if network != "" && name != network {
			continue
		}
		for _, l := range s.handler.Pool.Leases() {
			out = append(out, view6(name, l, now))
		}
	}
	// A network guestnet destroy holds down keeps its leases in the
	// store: they come back with it, so they are listed too.
	for name := range d.held {
		if _, served := d.servers[name]; served || network != "" && name != network {
			continue
		}
		ls, err := d.store.Load(name)
		if err != nil {
			d.Log.Error("leases of a network held down", "network", name, "err", err)
			continue
		}
		for _, l := range ls {
			out = append(out, view(name, l, now))
		}
	}
	sortViews(out)
	return out
}

func sortViews(v []LeaseView) {
	slices.SortFunc(v, func(a, b LeaseView) int {
		if c := strings.Compare(a.Network, b.Network); c != 0 {
			return c
		}
		return strings.Compare(a.IP, b.IP)
	})
}

// client talks to the daemon of a state folder; timeout 0 means none.
func client(dir string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", SocketPath(dir))
		}}}
}

// apiError is the daemon's refusal of a request. Callers branch on Code,
// never on the text.
type apiError struct {
	Code int
	Msg  string
}

func (e *apiError) Error() string { return "daemon: " + e.Msg }

// refused reports whether err is the daemon's answer with HTTP status code.
func refused(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Code == code
}

// call asks the daemon of a state folder; ErrNoDaemon when none listens,
// an *apiError when it answers with another status than 200.
func call(dir, method, path string, out any) error { return callWith(dir, method, path, nil, out) }

// callWith is call with a JSON body (none when body is nil).
func callWith(dir, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://guestnet"+path, rd)
	// A read answers at once; a change (reload, destroy) takes what an
	// apply takes, and removing 1,000 networks takes the kernel over 30 s
	// (bench/bgp): no deadline there, or the CLI would report a failure
	// while the daemon goes on and succeeds.
	timeout := 30 * time.Second
	if method != http.MethodGet {
		timeout = 0
	}
	resp, err := client(dir, timeout).Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) || errors.Is(err, os.ErrNotExist) {
			return ErrNoDaemon
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return &apiError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Reload asks a running daemon to re-read its config. It reports false
// when no daemon runs for the state folder.
func RequestReload(dir string) (bool, error) {
	var out map[string]string
	err := call(dir, http.MethodPost, "/v1/reload", &out)
	if errors.Is(err, ErrNoDaemon) {
		return false, nil
	}
	return err == nil, err
}

// DestroyRequest is the body of POST /v1/destroy.
type DestroyRequest struct {
	Networks []string `json:"networks"`
}

// RequestDestroy asks a running daemon to destroy networks of its config
// and hold them down. It reports false when no daemon runs for the state
// folder.
func RequestDestroy(dir string, networks []string) (bool, error) {
	var out map[string]string
	err := callWith(dir, http.MethodPost, "/v1/destroy", DestroyRequest{Networks: networks}, &out)
	if errors.Is(err, ErrNoDaemon) {
		return false, nil
	}
	return true, err
}

// Leases reads the leases from the running daemon, or from the store when
// no daemon runs.
func Leases(dir, network string) ([]LeaseView, string, error) {
	var out []LeaseView
	err := call(dir, http.MethodGet, "/v1/leases?network="+network, &out)
	if err == nil {
		return out, "daemon", nil
	}
	if !errors.Is(err, ErrNoDaemon) {
		return nil, "", err
	}
	if _, err := os.Lstat(LeasePath(dir)); err != nil {
		return []LeaseView{}, "store", nil // never served: no leases
	}
	st, err := dhcp.OpenBolt(LeasePath(dir), true, time.Second)
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	nets, err := st.Networks()
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	out = []LeaseView{}
	for _, n := range nets {
		if network != "" && n != network {
			continue
		}
		ls, err := st.Load(n)
		if err != nil {
			return nil, "", err
		}
		for _, l := range ls {
			out = append(out, view(n, l, now))
		}
	}
	nets6, err := st.Networks6()
	if err != nil {
		return nil, "", err
	}
	for _, n := range nets6 {
		if network != "" && n != network {
			continue
		}
		ls, err := st.Load6(n)
		if err != nil {
			return nil, "", err
		}
		for _, l := range ls {
			out = append(out, view6(n, l, now))
		}
	}
	sortViews(out)
	return out, "store", nil
}

// ConfigView is the config a daemon serves: its --config paths, absolute.
type ConfigView struct {
	Config []string `json:"config"`
}

func absPaths(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		out = append(out, p)
	}
	return out
}

// ServedConfig asks the running daemon of a state folder for its --config
// paths. ok is false when no daemon runs, or one too old to say.
func ServedConfig(dir string) (paths []string, ok bool, err error) {
	var out ConfigView
	err = call(dir, http.MethodGet, "/v1/config", &out)
	if errors.Is(err, ErrNoDaemon) || refused(err, http.StatusNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out.Config, true, nil
}

// InConfig reports whether every one of files is among the daemon's
// config paths or inside one of its config folders (symbolic links
// resolved): `guestnet apply` of those makes the daemon reload its config,
// which is then what it applies. A file that is not is the user's intent
// the daemon would never see, and undo as drift if applied here.
func InConfig(files, served []string) bool {
	resolve := func(p string) string {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return p
	}
	var roots []string
	for _, c := range served {
		roots = append(roots, resolve(c))
	}
	for _, f := range files {
		f = resolve(f)
		if !slices.ContainsFunc(roots, func(r string) bool {
			rel, err := filepath.Rel(r, f)
			return err == nil && (rel == "." || !strings.HasPrefix(rel, ".."))
		}) {
			return false
		}
	}
	return true
}

// Services reads the running daemon's services; nil when no daemon runs.
func Services(dir string) ([]ServiceStatus, error) {
	var out []ServiceStatus
	err := call(dir, http.MethodGet, "/v1/services", &out)
	if errors.Is(err, ErrNoDaemon) {
		return nil, nil
	}
	return out, err
}

// Running reports whether a daemon answers for the state folder.
func Running(dir string) bool {
	var out []LeaseView
	return call(dir, http.MethodGet, "/v1/leases?network=-", &out) == nil
}

// statusNoBGP is GET /v1/bgp's answer when the config has no bgp section:
// its own code, so that a client tells it from a daemon too old to know
// the path (404) without reading the text.
const statusNoBGP = http.StatusConflict

// ErrNoBGP says the running daemon's config has no bgp section.
var ErrNoBGP = errors.New("the config of guestnet serve has no bgp section: add one (bgp: with asn and peers) to its config and reload it (systemctl reload guestnet-serve, or guestnet apply of that config)")

// ErrOldDaemon says the daemon answering predates the request's path.
var ErrOldDaemon = errors.New("the guestnet serve running here is older than this guestnet and cannot answer: restart it (systemctl restart guestnet-serve)")

// bgpHandler serves GET /v1/bgp: the speaker's status, or statusNoBGP
// when status reports the config has none.
func bgpHandler(status func() (bgp.Status, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st, ok := status()
		if !ok {
			http.Error(w, ErrNoBGP.Error(), statusNoBGP)
			return
		}
		writeJSON(w, st)
	}
}

// BGP asks the running daemon of a state folder for its BGP speaker's
// status: ErrNoDaemon when none runs, ErrNoBGP when its config has no bgp
// section, ErrOldDaemon when it is too old to say.
func BGP(dir string) (bgp.Status, error) {
	var out bgp.Status
	err := call(dir, http.MethodGet, "/v1/bgp", &out)
	switch {
	case refused(err, statusNoBGP):
		return bgp.Status{}, ErrNoBGP
	case refused(err, http.StatusNotFound):
		return bgp.Status{}, ErrOldDaemon
	case err != nil:
		return bgp.Status{}, err
	}
	return out, nil
}
