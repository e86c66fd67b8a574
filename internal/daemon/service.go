package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
)

// service is one part of the daemon. Every part has the same lifecycle:
// Run starts the services in list order and stops them in reverse; after
// every apply (the first one, a reload, a drift repair) each running
// service syncs to the spec and the host; its health shows in `guestnet
// status` and in the metrics. A new service is one entry in services().
type service struct {
	name string
	// start begins the service; nil when sync alone runs it. An error
	// stops the daemon (services already started are stopped).
	start func(ctx context.Context) error
	// sync follows the spec and the host after each apply; d.mu is held.
	sync func()
	// stop ends what start and sync began; d.mu is held.
	stop func()
	// health says what is wrong, nil when nothing is; d.mu is held.
	health func() error
	// note says what the operator should know that is no fault (nil:
	// nothing); d.mu is held.
	note func() string
	// used says whether the config asks for the service (nil: always);
	// status and metrics leave an unused one out. d.mu is held.
	used func() bool

	running bool
}

// ServiceStatus is a service as `guestnet status` shows it.
type ServiceStatus struct {
	Name    string `json:"name"`
	State   string `json:"state"`             // running, degraded, stopped
	Problem string `json:"problem,omitempty"` // what is wrong, when degraded
	Note    string `json:"note,omitempty"`    // what is so on purpose (networks held down by guestnet destroy)
}

// services lists the daemon's parts, in start order: the networks (the
// first apply), the kernel's forwarding database (before DHCP, so that
// its first clients are located), DHCP, DNS, the leased bindings (after
// DHCP, whose leases they bind), drift repair, the API (last, so that
// a CLI that finds it finds the config applied) and the metrics. BGP
// comes after drift repair (what it announces is applied) and before the
// API; EVPN after BGP (it announces through the speaker).
func (d *Daemon) services() []*service {
	list := []*service{
		{name: "networks", start: d.Reload, health: d.applyHealth, note: d.heldNote},
		{name: "forwarding database", start: d.startFDB, health: d.fdbHealth},
		{name: "dhcp", sync: d.syncDHCP, stop: d.stopDHCP, health: d.dhcpHealth},
		{name: "ra + dhcp6", sync: d.syncV6, stop: d.stopV6, health: d.v6Health, used: d.v6Used},
		{name: "dns", sync: d.syncDNS, stop: d.stopDNS, health: d.dnsHealth},
		{name: "leased bindings", start: d.startLearn, sync: d.syncLearned, health: d.learnHealth},
		{name: "drift repair", start: d.startRepair, health: d.repairHealth},
		{name: "bgp", sync: d.syncBGP, stop: d.stopBGP, health: d.bgpHealth, used: d.bgpUsed},
		{name: "evpn", sync: d.syncEVPN, stop: d.stopEVPN, health: d.evpnHealth, note: d.evpnNote, used: d.evpnUsed},
		{name: "api", start: d.startAPI, stop: d.stopAPI},
	}
	if d.Metrics != "" {
		list = append(list, &service{name: "metrics", start: d.startMetrics, stop: d.stopMetrics})
	}
	return list
}

// startServices starts each service in order; on a failure it stops the
// ones started and returns the error.
func (d *Daemon) startServices(ctx context.Context) error {
	for _, s := range d.svcs {
		if s.start != nil {
			if err := s.start(ctx); err != nil {
				d.stopServices()
				return fmt.Errorf("start %s: %w", s.name, err)
			}
		}
		d.mu.Lock()
		s.running = true
		if s.sync != nil {
			s.sync()
		}
		d.mu.Unlock()
	}
	debug.FreeOSMemory() // the services' first sync read the host too (see syncServices)
	return nil
}

// syncServices runs every running service's sync, in order. The caller
// holds d.mu.
func (d *Daemon) syncServices() {
	for _, s := range d.svcs {
		if s.running && s.sync != nil {
			s.sync()
		}
	}
	// An apply reads the whole host back (at 1,000 networks, tens of MB
	// that are garbage once it is done): give that memory back to the
	// system now, with one forced GC (a few ms: the live heap is small),
	// rather than hold it until the runtime's background scavenger
	// returns it, tens of seconds later (bench/serve, 1,000 networks, 5 s
	// after start: 29 MB RSS with it, 38 MB without).
	debug.FreeOSMemory()
}

// stopServices stops the running services in reverse order.
func (d *Daemon) stopServices() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range slices.Backward(d.svcs) {
		if s.running && s.stop != nil {
			s.stop()
		}
		s.running = false
	}
}

// Status reports every service.
func (d *Daemon) Status() []ServiceStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ServiceStatus
	for _, s := range d.svcs {
		if s.used != nil && !s.used() {
			continue
		}
		st := ServiceStatus{Name: s.name, State: "stopped"}
		if s.note != nil {
			st.Note = s.note()
		}
		if s.running {
			st.State = "running"
			if s.health != nil {
				if err := s.health(); err != nil {
					st.State, st.Problem = "degraded", err.Error()
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// missing names the networks in want that have no running server.
func missing[T any](what string, want []string, running map[string]T) error {
	var out []string
	for _, n := range want {
		if _, ok := running[n]; !ok {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return fmt.Errorf("no %s on %s (see the log)", what, strings.Join(out, ", "))
}

func (d *Daemon) dhcpHealth() error {
	var want []string
	for _, n := range d.spec.Networks {
		if n.DHCP != nil {
			want = append(want, n.Name)
		}
	}
	return errors.Join(missing("DHCP server", want, d.servers), d.clusterHealth())
}

func (d *Daemon) dnsHealth() error {
	var want []string
	for _, n := range d.spec.Networks {
		if n.DNS != nil {
			want = append(want, n.Name)
		}
	}
	return missing("DNS server", want, d.dns)
}

// lastError is a service's last failure, cleared by its next success.
type lastError struct {
	mu  sync.Mutex
	err error
}

func (l *lastError) set(err error) { l.mu.Lock(); l.err = err; l.mu.Unlock() }
func (l *lastError) get() error    { l.mu.Lock(); defer l.mu.Unlock(); return l.err }

func (d *Daemon) applyHealth() error  { return d.applyErr.get() }
func (d *Daemon) learnHealth() error  { return d.learnErr.get() }
func (d *Daemon) repairHealth() error { return errors.Join(d.repairErr.get(), d.watchErr.get()) }
func (d *Daemon) fdbHealth() error    { return d.fdbErr.get() }
