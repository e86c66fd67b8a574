// Package daemon is `guestnet serve`: it applies the config, serves DHCP on
// each network that declares it, repairs drift the moment the kernel
// reports it, reloads on SIGHUP or API request, and answers the CLI over a
// root-only unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// Daemon serves one namespace.
type Daemon struct {
	Engine  *engine.Engine
	Config  []string // spec files or directories
	Log     *slog.Logger
	Metrics string // listen address for Prometheus metrics, "" for none
	// RecoverLeases moves a lease store that cannot be read aside and
	// starts with the leases it could still read (dhcp.RecoverBolt);
	// without it such a store stops the daemon with a *dhcp.CorruptError.
	RecoverLeases bool

	mu      sync.Mutex // serialises reload and repair
	spec    *spec.Spec
	store   *dhcp.BoltStore
	servers map[string]*server
	dns     map[string]*dnsServer
	pools   sync.Map // network -> *dhcp.Pool, for name lookups
	repairs atomic.Uint64
	applyNs atomic.Int64 // last apply's duration
	kick    chan struct{}

	fdb       *fdb                                // where leased MACs sit, for anti-spoofing
	view      atomic.Pointer[learnView]           // what DHCP goroutines may bind
	inKernel  atomic.Pointer[map[model.Bind]bool] // the learned set after the last sync
	learnKick chan struct{}
	lastState *state.State // the state file as last read (statekeep.go)
}

// server is one network's DHCP service.
type server struct {
	handler *dhcp.Handler
	conn    net.PacketConn
	key     string // the config it serves, to tell a change on reload
	ifindex int    // the bridge the socket is bound to
	probe   *bridgeProber
}

// Dir is the folder of the namespace's state, lease store and API socket.
func (d *Daemon) Dir() string { return filepath.Dir(d.Engine.StatePath) }

// LeasePath is the lease database of a state folder.
func LeasePath(dir string) string { return filepath.Join(dir, "leases.db") }

// SocketPath is the API socket of a state folder.
func SocketPath(dir string) string { return filepath.Join(dir, "guestnet.sock") }

// Run serves until ctx ends; ready is called once the config is applied
// and DHCP and the API are listening.
func (d *Daemon) Run(ctx context.Context, ready func()) error {
	if err := os.MkdirAll(d.Dir(), 0o700); err != nil {
		return err
	}
	if err := d.claimNamespace(ctx); err != nil { // one daemon per namespace (nslock.go)
		return err
	}
	if d.RecoverLeases {
		if err := d.recoverLeases(); err != nil {
			return err
		}
	}
	st, err := dhcp.OpenBolt(LeasePath(d.Dir()), false, 2*time.Second)
	if err != nil {
		return err
	}
	d.store, d.servers, d.kick, d.learnKick = st, map[string]*server{}, make(chan struct{}, 1), make(chan struct{}, 1)
	d.Engine.Log = d.Log // the engine logs its retries after kernel errors
	if d.fdb, err = newFDB(d.Engine.NS, d.Log); err != nil {
		st.Close()
		return err
	}
	go func() { // before DHCP starts, so that its first clients are located
		if err := d.fdb.watch(ctx, d.Engine.NS); err != nil {
			d.Log.Error("anti-spoofing: watching the bridges' forwarding databases", "err", err)
		}
	}()
	defer d.shutdown()
	if err := d.Reload(); err != nil {
		return err
	}
	api, err := d.listenAPI()
	if err != nil {
		return err
	}
	defer api.Close()
	if d.Metrics != "" {
		m, err := d.serveMetrics(d.Metrics)
		if err != nil {
			return err
		}
		defer m.Close()
	}
	werr := make(chan error, 1)
	go func() { werr <- d.Engine.NS.Watch(ctx, d.changed) }()
	go d.repairLoop(ctx)
	go d.learnLoop(ctx)
	d.Log.Info("serving", "netns", d.Engine.NS.Name, "networks", len(d.spec.Networks), "api", SocketPath(d.Dir()))
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-werr:
		return fmt.Errorf("watch kernel events: %w", err)
	}
}

// recoverLeases is `serve --recover-leases`: it says what it kept and
// what it lost. Guests whose leases were lost keep their addresses only if
// they renew them; until then the ARP check before each offer keeps their
// addresses from going to someone else.
func (d *Daemon) recoverLeases() error {
	path := LeasePath(d.Dir())
	r, err := dhcp.RecoverBolt(path, time.Now(), 2*time.Second)
	if err != nil {
		return fmt.Errorf("recover lease store %s: %w", path, err)
	}
	if r.Problem == "" {
		d.Log.Info("--recover-leases: the lease store reads whole, nothing to recover", "path", path)
		return nil
	}
	d.Log.Warn("--recover-leases: unreadable lease store moved aside; starting with the leases it still held",
		"path", path, "problem", r.Problem, "moved_to", r.MovedTo, "kept", r.Kept, "undecodable_records", r.Bad,
		"lost", "the leases on unreadable pages (not countable)")
	return nil
}

// changed is called for every kernel event; it wakes the repair loop
// without blocking the watcher.
func (d *Daemon) changed() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// repairLoop re-plans after kernel events, a few milliseconds after the
// last one of a burst, and applies whatever brings the host back to the
// spec. guestnet's own writes cause events too; re-planning them finds
// nothing to do. A repair that fails (after the engine's own retries) is
// tried again on a timer, 50 ms doubling up to 5 s, not only on the next
// event: the drift may cause no further event.
func (d *Daemon) repairLoop(ctx context.Context) {
	var retry <-chan time.Time
	var wait time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry:
		case <-d.kick:
			settle := time.NewTimer(10 * time.Millisecond)
		drain:
			for {
				select {
				case <-d.kick:
				case <-settle.C:
					break drain
				case <-ctx.Done():
					return
				}
			}
		}
		retry = nil
		if err := d.repair(); err != nil {
			wait = min(max(2*wait, repairFirstWait), repairMaxWait)
			d.Log.Error("drift repair failed", "err", err, "retry_in", wait)
			retry = time.After(wait)
			continue
		}
		wait = 0
	}
}

// The waits between failed repairs.
const (
	repairFirstWait = 50 * time.Millisecond
	repairMaxWait   = 5 * time.Second
)

// repair brings the host back to the spec (the engine retries kernel
// errors a few times itself) and re-syncs DHCP and the learned bindings.
func (d *Daemon) repair() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	unlock, err := d.Engine.Lock()
	if err != nil {
		return fmt.Errorf("drift check: %w", err)
	}
	defer unlock()
	d.keepState() // a removed state file is written back (statekeep.go)
	p, err := d.Engine.Converge(d.spec)
	if err != nil {
		return err
	}
	if len(p.Actions) > 0 {
		d.repairs.Add(1)
		d.applyNs.Store(int64(time.Since(start)))
		for _, a := range p.Actions {
			d.Log.Warn("repaired drift", "action", a.String())
		}
	}
	d.syncDHCP() // a re-created bridge needs its DHCP socket re-bound
	d.syncLearned()
	return nil
}

// Reload re-reads the config and applies the difference. DHCP keeps
// running, with its leases, on every network whose service is unchanged.
func (d *Daemon) Reload() error {
	s, err := spec.Load(d.Config...)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	unlock, err := d.Engine.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	d.keepState()
	p, err := d.Engine.Plan(s)
	if err != nil {
		return err
	}
	if err := d.Engine.Apply(p); err != nil {
		return err
	}
	d.applyNs.Store(int64(time.Since(start)))
	for _, a := range p.Actions {
		d.Log.Info("applied", "action", a.String())
	}
	d.spec = s
	d.syncDHCP()
	d.syncDNS()
	d.syncLearned()
	return nil
}

func (d *Daemon) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, s := range d.servers {
		s.conn.Close()
		s.probe.set(nil)
		delete(d.servers, name)
	}
	for name, s := range d.dns {
		s.stop()
		delete(d.dns, name)
	}
	if d.store != nil {
		d.store.Close() // every ACKed lease was synced before its ACK
	}
	if d.fdb != nil {
		d.fdb.nl.Close()
	}
	os.Remove(SocketPath(d.Dir()))
	d.Log.Info("stopped")
}

// errNoDaemon says no daemon answers on the API socket.
var errNoDaemon = errors.New("no guestnet daemon answers here")
