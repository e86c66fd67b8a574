package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/etcdlease"
	"github.com/guestnet/guestnet/internal/model"
)

// leaseCluster is the daemon's client of the etcd cluster that keeps the
// stretched networks' leases (the others keep theirs in leases.db).
type leaseCluster struct {
	key string // the leases section and host name it was opened with
	c   *etcdlease.Client
}

// leaseHost is this host's name in the lease cluster: leases.host, else
// the VTEP of its stretched networks (the first vxlan.local set), else
// the BGP router ID (bgp.router_id, or the address that reaches the first
// peer). d.mu is held.
func (d *Daemon) leaseHost() (string, error) {
	if l := d.spec.Leases; l != nil && l.Host != "" {
		return l.Host, nil
	}
	for _, n := range d.spec.Networks {
		if n.Stretched() && n.VXLAN.Local.IsValid() {
			return n.VXLAN.Local.String(), nil
		}
	}
	if d.spec.BGP == nil {
		return "", errors.New("leases: no host name: set leases.host (or vxlan.local, or a bgp section with router_id)")
	}
	routes, err := d.Engine.Kernel.Routes()
	if err != nil {
		return "", fmt.Errorf("leases: read the routes to derive the router ID: %w", err)
	}
	id, err := bgp.RouterID(d.spec.BGP.BGP, routes)
	if err != nil {
		return "", fmt.Errorf("leases: no host name (%w); or set leases.host", err)
	}
	return id.String(), nil
}

// stretchedDHCP reports whether a network's leases live in the cluster.
func stretchedDHCP(n model.Network) bool { return n.Stretched() && n.DHCP != nil }

// syncCluster opens the lease cluster's client while a stretched network
// has DHCP, opens it again when the leases section or the host name
// changed (the stretched networks' servers restart with it: their key
// holds the cluster's), and closes it when none is left. It returns the
// client and its key, or why there is none. d.mu is held.
func (d *Daemon) syncCluster() (*etcdlease.Client, string, error) {
	used := false
	for _, n := range d.spec.Networks {
		used = used || stretchedDHCP(n.Network)
	}
	if !used {
		d.closeCluster()
		return nil, "", nil
	}
	if d.spec.Leases == nil {
		d.closeCluster()
		return nil, "", errors.New("leases: a stretched network with dhcp keeps its leases in etcd: add a leases section (leases: {etcd: [http://...:2379]})")
	}
	host, err := d.leaseHost()
	if err != nil {
		d.closeCluster()
		return nil, "", err
	}
	cfg := d.spec.Leases.Leases
	cfg.Host = host
	key := configKeyOf(cfg)
	if d.cluster != nil && d.cluster.key == key {
		return d.cluster.c, key, nil
	}
	d.closeCluster()
	c, err := etcdlease.Open(etcdlease.Config{Leases: cfg, Log: d.Log.With("service", "leases"), Instance: leaseInstance(d.Dir())})
	if err != nil {
		return nil, "", err
	}
	d.cluster = &leaseCluster{key: key, c: c}
	d.Log.Info("leases: stretched networks keep their leases in etcd", "etcd", cfg.Etcd, "host", host)
	return c, key, nil
}

// closeCluster closes the lease cluster's client, if open.
func (d *Daemon) closeCluster() {
	if d.cluster != nil {
		d.cluster.c.Close()
		d.cluster = nil
	}
}

// clusterHealth is the lease cluster's part of the DHCP service's health:
// why new leases of stretched networks are refused. d.mu is held.
func (d *Daemon) clusterHealth() error {
	if d.cluster == nil {
		return nil
	}
	h := d.cluster.c.Health()
	if h.Quorum && h.Error != "" {
		return errors.New("leases: " + h.Error) // the host name is another's
	}
	if h.Quorum || h.Checked.IsZero() {
		return nil
	}
	return fmt.Errorf("etcd has no quorum (%d of %d endpoints answer: %s): new leases of stretched networks are refused, known leases renew with their remaining time",
		len(h.Reachable), len(h.Endpoints), h.Error)
}

// ClusterLeases is GET /v1/leases/cluster's answer: the lease cluster as
// this host sees it; ok false when no stretched network has DHCP.
func (d *Daemon) ClusterLeases() (model.ClusterLeases, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cluster == nil {
		return model.ClusterLeases{}, false
	}
	return d.cluster.c.Cluster(), true
}

// statusNoCluster is GET /v1/leases/cluster's answer when no network
// keeps its leases in etcd.
const statusNoCluster = http.StatusConflict

// ErrNoCluster says the running daemon keeps no lease in etcd.
var ErrNoCluster = errors.New("no stretched network with dhcp here: every lease is in this host's leases.db")

// clusterHandler serves GET /v1/leases/cluster.
func clusterHandler(get func() (model.ClusterLeases, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cl, ok := get()
		if !ok {
			http.Error(w, ErrNoCluster.Error(), statusNoCluster)
			return
		}
		writeJSON(w, cl)
	}
}

// Cluster asks the running daemon of a state folder for its lease
// cluster: ErrNoDaemon, ErrNoCluster, or ErrOldDaemon when it is too old
// to say.
func Cluster(dir string) (model.ClusterLeases, error) {
	var out model.ClusterLeases
	err := call(dir, http.MethodGet, "/v1/leases/cluster", &out)
	switch {
	case refused(err, statusNoCluster):
		return out, ErrNoCluster
	case refused(err, http.StatusNotFound):
		return out, ErrOldDaemon
	}
	return out, err
}

var _ dhcp.Store = (*etcdlease.Client)(nil)

// leaseInstance is this host's instance in the lease cluster, kept in the
// state folder: a run after a crash is the same instance and takes its
// liveness key over at once; another host under the same name is not.
// "" (a random one) when the folder cannot keep it.
func leaseInstance(dir string) string {
	path := filepath.Join(dir, "leases.instance")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	id := rand.Text()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return ""
	}
	return id
}
