// Package daemon is `guestnet serve`, a list of services over one engine
// (see services): it applies the config, serves DHCP and DNS on each
// network that declares them, binds leased ports (anti-spoofing), repairs
// drift the moment the kernel reports it, reloads on SIGHUP or API
// request, and answers the CLI over a root-only unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/dns"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/evpn"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// Daemon serves one namespace: a list of services (see services) over
// one engine.
type Daemon struct {
	Engine  *engine.Engine
	Config  []string // spec files or directories
	Log     *slog.Logger
	Metrics string // listen address for Prometheus metrics, "" for none
	// MetricsListener, when set, is where Metrics is already listened on
	// (serve opened it before entering the namespace).
	MetricsListener net.Listener
	// RecoverLeases moves a lease store that cannot be read aside and
	// starts with the leases it could still read (dhcp.RecoverBolt);
	// without it such a store stops the daemon with a *dhcp.CorruptError.
	RecoverLeases bool
	// Events are the kernel's notifications and Sockets opens DHCP's and
	// DNS's sockets; nil means Engine.NS's (unit tests bring their own).
	Events  Events
	Sockets Sockets
	// Sockets6 opens the IPv6 services' sockets (v6.go); nil with a
	// Sockets of the caller's serves no RA or DHCPv6.
	Sockets6 Sockets6
	// Guard6 is told of DHCPv6 leases as they begin and end (v6.go,
	// Binder6): IPv6 anti-spoofing. nil binds nothing.
	Guard6 Binder6
	// EVPNKernel holds the evpn service's entries and EVPNSpeaker is its
	// BGP side (evpn.go); nil means the namespace's (netlink) and the bgp
	// service's speaker (unit tests bring fakes).
	EVPNKernel  evpn.Kernel
	EVPNSpeaker evpn.Speaker

	mu      sync.Mutex // serialises reload, repair and the services' sync
	ctx     context.Context
	svcs    []*service
	spec    *spec.Spec
	store   *dhcp.BoltStore
	servers map[string]*server
	dns     map[string]*dnsServer
	pools   sync.Map // network -> *dhcp.Pool, for name lookups
	repairs atomic.Uint64
	applyNs atomic.Int64 // last apply's duration
	kick    chan struct{}
	fatal   chan error // a service that cannot go on stops the daemon
	closers map[string]io.Closer

	mux      *dhcp.Mux // every network's DHCP, served on dhcpConn (dhcp.go)
	dhcpConn dhcp.Conn
	dnsGroup *dns.Group    // every network's DNS (dns.go)
	cluster  *leaseCluster // the stretched networks' lease store (leasecluster.go)
	v6       v6            // router advertisements and DHCPv6 (v6.go)

	applyErr, learnErr, repairErr, watchErr, fdbErr, bgpErr lastError

	speaker *bgp.Speaker    // the bgp service (bgp.go), nil without a bgp section
	evpn    evpnService     // the evpn service (evpn.go)
	held    map[string]bool // networks guestnet destroy removed while serving (destroy.go)

	fdb       *fdb                                // where leased MACs sit, for anti-spoofing
	view      atomic.Pointer[learnView]           // what DHCP goroutines may bind
	inKernel  atomic.Pointer[map[model.Bind]bool] // the learned set after the last sync
	learnKick chan struct{}
	learnQ    learnBatch   // leased bindings, written in groups (learnbatch.go)
	lastState *state.State // the state file as last read (statekeep.go)
}

// Events are the kernel notifications the daemon acts on. *netns.NS has
// them; unit tests send their own.
type Events interface {
	// Watch calls changed after every change that may be drift.
	Watch(ctx context.Context, changed func()) error
	// WatchNeigh passes every forwarding-database change to fn.
	// Whatever ends a subscription, it calls lost with the reason and
	// the wait, and subscribes again (the caller forgets what it knew).
	WatchNeigh(ctx context.Context, fn func(netlink.NeighUpdate), lost func(err error, retryIn time.Duration))
}

// server is one network's DHCP service.
type server struct {
	handler *dhcp.Handler
	key     string // the config it serves, to tell a change on reload
	ifindex int    // the bridge it answers on
	probe   *bridgeProber
}

// Dir is the folder of the namespace's state, lease store and API socket.
func (d *Daemon) Dir() string { return filepath.Dir(d.Engine.StatePath) }

// LeasePath is the lease database of a state folder.
func LeasePath(dir string) string { return filepath.Join(dir, "leases.db") }

// SocketPath is the API socket of a state folder.
func SocketPath(dir string) string { return filepath.Join(dir, "guestnet.sock") }

// Run serves until ctx ends; ready is called once the config is applied
// and every service (DHCP, the API, ...) runs.
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
	if d.held, err = loadHeld(d.Dir()); err != nil {
		st.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx) // ends every service's goroutines on return
	defer cancel()
	d.init(ctx, st)
	defer d.shutdown()
	if err := d.startServices(ctx); err != nil {
		return err
	}
	d.Log.Info("serving", "netns", d.Engine.Name(), "networks", len(d.spec.Networks), "api", SocketPath(d.Dir()))
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-d.fatal:
		return err
	}
}

// init readies the daemon's fields for startServices, with leases kept
// in st.
func (d *Daemon) init(ctx context.Context, st *dhcp.BoltStore) {
	d.mu.Lock() // a reload (SIGHUP) may look at d.ctx meanwhile
	d.ctx = ctx
	if d.Guard6 == nil {
		d.Guard6 = claims6{d} // IPv6 anti-spoofing: DHCPv6 leases are claims (guard.go)
	}
	d.mu.Unlock()
	d.store = st
	d.servers, d.dns, d.closers = map[string]*server{}, map[string]*dnsServer{}, map[string]io.Closer{}
	d.kick, d.learnKick, d.fatal = make(chan struct{}, 1), make(chan struct{}, 1), make(chan error, 1)
	d.evpn.kick = make(chan struct{}, 1)
	if d.Events == nil && d.Engine.NS != nil {
		d.Events = d.Engine.NS
	}
	if d.Sockets == nil && d.Engine.NS != nil {
		d.Sockets = nsSockets{d.Engine.NS}
		if d.Sockets6 == nil {
			d.Sockets6 = newNSSockets6(d.Engine.NS)
		}
	}
	d.Engine.Log = d.Log          // the engine logs its retries after kernel errors
	d.Engine.Locked = d.keepState // a state file removed while serving is written back (statekeep.go)
	d.svcs = d.services()
}

// startFDB follows the bridges' forwarding databases.
func (d *Daemon) startFDB(ctx context.Context) error {
	d.fdb = newFDB(d.Engine.Kernel, d.Log)
	go d.fdb.watch(ctx, d.Events) // subscribes again whatever ends a subscription, until ctx ends
	return nil
}

// startRepair watches the kernel and repairs drift.
func (d *Daemon) startRepair(ctx context.Context) error {
	go func() {
		if err := d.Events.Watch(ctx, d.changed); err != nil {
			d.watchErr.set(err)
			d.fatal <- fmt.Errorf("watch kernel events: %w", err)
		}
	}()
	go d.repairLoop(ctx)
	return nil
}

// startLearn keeps the leased bindings in step with the leases.
func (d *Daemon) startLearn(ctx context.Context) error {
	go d.learnLoop(ctx)
	return nil
}

func (d *Daemon) startAPI(context.Context) error {
	c, err := d.listenAPI()
	d.closers["api"] = c
	return err
}

func (d *Daemon) stopAPI() {
	d.closers["api"].Close()
	os.Remove(SocketPath(d.Dir()))
}

func (d *Daemon) startMetrics(context.Context) error {
	c, err := d.serveMetrics(d.Metrics)
	d.closers["metrics"] = c
	return err
}

func (d *Daemon) stopMetrics() { d.closers["metrics"].Close() }

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
		if err := d.repair(ctx); err != nil {
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
// errors a few times itself) and syncs the services (a re-created bridge
// needs its DHCP socket re-bound, and its learned bindings back).
func (d *Daemon) repair(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	p, err := d.Engine.Repair(ctx, d.spec)
	d.repairErr.set(err)
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
	d.syncServices()
	return nil
}

// Reload re-reads the config and applies the difference, then syncs the
// services. DHCP keeps running, with its leases, on every network whose
// service is unchanged. Networks destroyed with guestnet destroy stay
// down (destroy.go).
func (d *Daemon) Reload(ctx context.Context) error { return d.reload(ctx, false) }

// Apply is Reload that also brings back the networks guestnet destroy
// held down: `guestnet apply` of the served config.
func (d *Daemon) Apply(ctx context.Context) error { return d.reload(ctx, true) }

func (d *Daemon) reload(ctx context.Context, release bool) error {
	d.mu.Lock()
	started := d.ctx != nil
	d.mu.Unlock()
	if !started {
		// A SIGHUP while serve starts: Run has not read destroyed.json
		// yet, and applying the config now would bring back what
		// guestnet destroy removed. The first apply reads the config.
		return fmt.Errorf("guestnet serve is still starting: its first apply reads the config; reload once it serves")
	}
	s, err := spec.Load(d.Config...)
	if err == nil && len(s.Networks) == 0 {
		// An emptied config (a deleted file, a comment left alone) must not
		// remove every network: stop serve and run guestnet destroy --all.
		err = fmt.Errorf("config %s declares no networks; guestnet serve refuses it rather than remove every network "+
			"(to remove them all, stop guestnet serve and run `guestnet destroy --all`)", strings.Join(d.Config, " "))
	}
	if err != nil {
		d.mu.Lock()
		if d.spec != nil { // the networks of the last good config stay
			d.applyErr.set(fmt.Errorf("reload: %w (the previous config is still applied; fix the config, then reload: SIGHUP or guestnet apply)", err))
		}
		d.mu.Unlock()
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	held := d.held
	if release && len(held) > 0 {
		// Forget first: a crash after the networks are back must not
		// hold them down again at the next start.
		if err := saveHeld(d.Dir(), nil); err != nil {
			return fmt.Errorf("apply: forget the destroyed networks: %w", err)
		}
		d.held = nil
	}
	s = d.withoutHeld(s)
	d.withdrawAhead(s)
	d.withdrawRAAhead(s) // while the bridges are still there
	start := time.Now()
	p, err := d.Engine.Converge(ctx, s)
	if err != nil && len(held) > 0 && d.held == nil {
		d.held = held // the networks did not come back: they stay held down
		if serr := saveHeld(d.Dir(), held); serr != nil {
			d.Log.Error("apply failed, and the destroyed networks could not be recorded again", "err", serr, "networks", held)
		}
	}
	if err != nil {
		d.syncBGP() // announce the config still applied again
	}
	if err != nil && d.spec != nil {
		// Nothing of the new config stays (apply is all or nothing): the
		// last good one is what the daemon keeps repairing.
		d.applyErr.set(fmt.Errorf("reload: %w (the previous config is still applied; fix the cause, then reload: SIGHUP or guestnet apply)", err))
	} else {
		d.applyErr.set(err)
	}
	if err != nil {
		return err
	}
	d.applyNs.Store(int64(time.Since(start)))
	for _, a := range p.Actions {
		d.Log.Info("applied", "action", a.String())
	}
	d.spec = s
	d.syncServices()
	return nil
}

// stopDNS stops every name server.
func (d *Daemon) stopDNS() {
	for name, s := range d.dns {
		s.stop()
		delete(d.dns, name)
	}
	if d.dnsGroup != nil {
		d.dnsGroup.Close()
		d.dnsGroup = nil
	}
}

func (d *Daemon) shutdown() {
	d.stopServices()
	if d.store != nil {
		d.store.Close() // every ACKed lease was synced before its ACK
	}
	d.Log.Info("stopped")
}

// ErrNoDaemon says no daemon answers on the API socket (callers that
// need the daemon, such as guestnet bgp, tell the user to start it).
var ErrNoDaemon = errors.New("no guestnet daemon answers here")
