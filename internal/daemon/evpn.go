package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/evpn"
	"github.com/guestnet/guestnet/internal/model"
)

// The evpn service runs while a network is stretched: on each pass it
// reads the stretched bridges (the guests learned on their ports, the
// entries guestnet installed), asks the speaker for every EVPN route
// received, decides (evpn.Decide) from that complete state, announces
// this host's set and brings the kernel's entries to the decision. A pass
// follows a change of the bridges' forwarding database or neighbour
// table, a change of the remote routes (the speaker's OnEVPN), a lease,
// an apply, and every evpnEvery in case a notification was lost.

// evpnEvery is the safety net between passes.
const evpnEvery = 5 * time.Second

// evpnSettle gathers a burst of notifications (a guest's ARP and its
// learned MAC, the speaker's updates) into one pass.
const evpnSettle = 20 * time.Millisecond

// evpnHold is how long after its start the service keeps the entries an
// earlier run installed while the speaker's sessions come up: a restart
// of serve must not cut the guests off from the other hosts for the time
// their routes take to come back. It ends earlier once every peer is
// established.
const evpnHold = 30 * time.Second

// evpnService is the evpn service's state.
type evpnService struct {
	kick   chan struct{}
	cancel context.CancelFunc // the loop's, nil when it does not run
	// netsErr is why the last sync found no VTEP (d.mu).
	netsErr error

	// nets is what the last sync made of the spec; speaker and leases
	// are read at each pass (under d.mu).
	nets atomic.Pointer[[]evpn.Network]
	// links are the bridges' and VXLAN devices' indexes of the last pass:
	// the notifications worth a pass.
	links atomic.Pointer[map[int]bool]

	mu        sync.Mutex // one pass at a time
	kernel    evpn.Kernel
	announced model.EVPN
	last      evpn.Decision
	started   time.Time
	err       lastError

	// routes is what the speaker announces in IPv4/IPv6 unicast: the
	// subnets (syncBGP) and this host's guests' host routes (the passes).
	routes unicastRoutes
}

// evpnNets are the stretched networks of the applied spec, with this
// host's VTEP: vxlan.local, else the BGP router ID. d.mu is held.
func (d *Daemon) evpnNets() ([]evpn.Network, error) {
	if d.spec == nil {
		return nil, nil
	}
	var out []evpn.Network
	var routerID netip.Addr
	var idErr error
	for _, n := range d.spec.Models() {
		if !n.Stretched() {
			continue
		}
		vtep := n.VXLAN.Local
		if !vtep.IsValid() && !routerID.IsValid() && idErr == nil {
			routerID, idErr = d.routerID()
		}
		if !vtep.IsValid() {
			vtep = routerID
		}
		out = append(out, evpn.Network{
			Name: n.Name, VNI: n.VXLAN.VNI, Bridge: n.Bridge, VXLAN: model.VXLANName(n.VXLAN.VNI),
			VTEP: vtep, Gateway: n.IPv4.Addr(), GatewayMAC: model.BridgeMAC(n.Name),
			Subnet: n.Subnet(), HostRoutes: announcesSubnet(n),
		})
	}
	if idErr != nil {
		idErr = fmt.Errorf("no VTEP address, so nothing of the stretched networks is announced (set vxlan.local or bgp.router_id): %w", idErr)
	}
	return out, idErr
}

// announcesSubnet is true when BGP announces n's IPv4 subnet (a routed
// network, a nat network with routed_from; not with no_announce): its
// guests' host routes go with it (evpn.HostRoutes).
func announcesSubnet(n model.Network) bool {
	sub := n.Subnet()
	return sub.IsValid() && slices.Contains(model.Announced([]model.Network{n}), sub)
}

// routerID is the speaker's router ID (bgp.RouterID). d.mu is held.
func (d *Daemon) routerID() (netip.Addr, error) {
	if d.spec.BGP == nil {
		return netip.Addr{}, errors.New("no bgp section")
	}
	if d.spec.BGP.BGP.RouterID.IsValid() {
		return d.spec.BGP.BGP.RouterID, nil
	}
	routes, err := d.Engine.Kernel.Routes()
	if err != nil {
		return netip.Addr{}, err
	}
	return bgp.RouterID(d.spec.BGP.BGP, routes)
}

// evpnUsed is true when a network is stretched. d.mu is held.
func (d *Daemon) evpnUsed() bool {
	return d.spec != nil && slices.ContainsFunc(d.spec.Models(), model.Network.Stretched)
}

// syncEVPN follows the spec after each apply: the loop runs while a
// network is stretched, and passes once now (the apply may have made a
// VXLAN device). d.mu is held.
func (d *Daemon) syncEVPN() {
	s := &d.evpn
	nets, err := d.evpnNets()
	s.nets.Store(&nets)
	s.netsErr = err
	if len(nets) == 0 {
		if s.cancel != nil {
			// No network is stretched any more: what this host announced
			// goes (a daemon that stops keeps it: stopEVPN alone).
			// Under s.mu: a pass under way announces before this, or
			// sees the networks changed and announces nothing.
			d.stopEVPN()
			s.mu.Lock()
			if sp := d.evpnSpeaker(); sp != nil {
				if err := sp.AnnounceEVPN(model.EVPN{}); err != nil {
					d.Log.Error("evpn: withdraw the routes of the networks no longer stretched", "err", err)
				}
			}
			s.announced, s.last = model.EVPN{}, evpn.Decision{}
			if err := s.routes.hosts(nil); err != nil {
				d.Log.Error("evpn: withdraw the host routes of the networks no longer stretched", "err", err)
			}
			s.mu.Unlock()
		}
		s.err.set(nil)
		return
	}
	if sp := d.evpnSpeaker(); sp != nil {
		sp.OnEVPN(s.wake)
	}
	if s.cancel == nil {
		if err := d.startEVPN(); err != nil {
			s.err.set(err)
			d.Log.Error("evpn", "err", err)
			return
		}
	}
	s.wake()
}

// startEVPN opens the netlink handle and starts the loop. d.mu is held.
func (d *Daemon) startEVPN() error {
	s := &d.evpn
	if s.kernel == nil && d.EVPNKernel != nil {
		s.kernel = d.EVPNKernel
	}
	if s.kernel == nil {
		if d.Engine.NS == nil {
			return errors.New("evpn: no namespace to sync (a fake kernel)")
		}
		nl, err := d.Engine.NS.Netlink()
		if err != nil {
			return fmt.Errorf("evpn: %w", err)
		}
		s.kernel = evpn.NewLinux(nl)
	}
	ctx, cancel := context.WithCancel(d.ctx)
	s.cancel = cancel
	s.started = time.Now()
	go d.evpnLoop(ctx)
	if d.fdb != nil { // the forwarding database service's subscription
		tap := func(u netlink.NeighUpdate, lost bool) {
			if m := s.links.Load(); lost || m == nil || (*m)[u.LinkIndex] || (*m)[u.MasterIndex] {
				s.wake()
			}
		}
		d.fdb.tap.Store(&tap)
	}
	return nil
}

// stopEVPN ends the loop (a pass under way finishes). The entries stay:
// the speaker keeps its routes on the peers as it stops (graceful
// restart), and a removed network's devices take theirs with them.
// d.mu is held.
func (d *Daemon) stopEVPN() {
	if s := &d.evpn; s.cancel != nil {
		s.cancel()
		s.cancel = nil
		if d.fdb != nil {
			d.fdb.tap.Store(nil)
		}
	}
}

func (s *evpnService) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (d *Daemon) evpnLoop(ctx context.Context) {
	s := &d.evpn
	t := time.NewTicker(evpnEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
			settle := time.NewTimer(evpnSettle)
		drain:
			for {
				select {
				case <-s.kick:
				case <-settle.C:
					break drain
				case <-ctx.Done():
					settle.Stop()
					return
				}
			}
		}
		d.evpnPass()
	}
}

// evpnPass is one pass: read, decide, announce, install.
func (d *Daemon) evpnPass() {
	s := &d.evpn
	d.mu.Lock()
	np := s.nets.Load()
	nets := *np
	sp := d.evpnSpeaker()
	leases := d.leaseIPs(nets)
	hold := d.evpnHolding(s.started)
	netsErr := s.netsErr
	d.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	have, readErr := s.kernel.Read(nets)
	links := map[int]bool{}
	for _, i := range have.Links {
		links[i] = true
	}
	s.links.Store(&links)
	for i, g := range have.Local {
		have.Local[i].IPs = append(g.IPs, leases[g.VNI][g.MAC]...)
	}
	var remote model.EVPN
	if sp != nil {
		remote = sp.RemoteEVPN()
	}
	have.Local = evpn.CarryIPs(have.Local, remote, s.announced)
	dec := evpn.Decide(evpn.Input{Networks: nets, Local: have.Local, Remote: remote, Announced: s.announced})
	errs := []error{netsErr, readErr}
	if s.nets.Load() != np {
		s.wake() // a sync changed the networks meanwhile: a new pass follows
		return
	}
	if sp != nil {
		if err := sp.AnnounceEVPN(dec.Announce); err != nil {
			errs = append(errs, fmt.Errorf("announce: %w", err))
		}
	} else if len(nets) > 0 {
		errs = append(errs, errors.New("no BGP speaker: the stretched networks' guests are neither announced nor learned from the other hosts"))
	}
	s.announced = dec.Announce
	if err := s.routes.hosts(evpn.HostRoutes(nets, dec.Announce)); err != nil {
		errs = append(errs, fmt.Errorf("announce the guests' host routes: %w", err))
	}
	ops := evpn.Plan(dec.Install, have)
	if hold {
		ops = slices.DeleteFunc(ops, func(o evpn.Op) bool { return o.Kind >= evpn.FloodDel })
	}
	done, err := evpn.Apply(s.kernel, ops)
	if err != nil {
		errs = append(errs, fmt.Errorf("install: %w", err))
	}
	for _, op := range done {
		d.Log.Debug("evpn", "applied", op.String())
	}
	if len(done) > 0 {
		d.Log.Info("evpn: entries synced", "changes", len(done), "announced", len(dec.Announce.MACs), "remote_macs", len(dec.Install.MACs))
	}
	if n, was := len(dec.Unannounced), len(s.last.Unannounced); n > 0 && was == 0 {
		d.Log.Warn("evpn: a guest port has more MACs than are announced; the rest reach only this host's guests (a guest sending from random source MACs?)",
			"unannounced", n, "per_port", model.EVPNMaxMACsPerPort, "example", dec.Unannounced[0].MAC)
	}
	s.last = dec
	err = errors.Join(errs...)
	if err != nil && s.err.get() == nil {
		d.Log.Error("evpn", "err", err)
	}
	s.err.set(err)
}

// evpnHolding says whether the entries of an earlier run are kept: less
// than evpnHold since the start and a peer not established yet. d.mu is
// held.
func (d *Daemon) evpnHolding(started time.Time) bool {
	if time.Since(started) >= evpnHold || d.speaker == nil {
		return false
	}
	for _, p := range d.speaker.Status().Peers {
		if p.State != bgp.StateEstablished && p.State != bgp.StateSelf {
			return true
		}
	}
	return false
}

// leaseIPs are the live leases' addresses of nets, by VNI and MAC.
// d.mu is held.
func (d *Daemon) leaseIPs(nets []evpn.Network) map[uint32]map[string][]netip.Addr {
	out := map[uint32]map[string][]netip.Addr{}
	now := time.Now()
	for _, n := range nets {
		srv, ok := d.servers[n.Name]
		if !ok {
			continue
		}
		m := map[string][]netip.Addr{}
		for _, l := range srv.handler.Pool.Leases() {
			if live(l, now) {
				m[l.MAC] = append(m[l.MAC], l.IP)
			}
		}
		out[n.VNI] = m
	}
	return out
}

func live(l dhcp.Lease, now time.Time) bool {
	return !l.Declined && now.Before(l.Expiry) && l.MAC != ""
}

// evpnHealth is the last pass's failure. d.mu is held.
func (d *Daemon) evpnHealth() error { return d.evpn.err.get() }

// evpnNote counts, per stretched network, the guests announced and the
// remote ones installed. d.mu is held.
func (d *Daemon) evpnNote() string {
	var parts []string
	for _, st := range d.EVPN() {
		p := fmt.Sprintf("%s (VNI %d, VTEP %s): %d local MACs announced, %d remote MACs installed, flood to %d VTEPs",
			st.Network, st.VNI, st.VTEP, len(st.Local), len(st.Remote), len(st.Flood))
		if st.Unannounced > 0 {
			p += fmt.Sprintf(", %d local MACs not announced (over %d on one port)", st.Unannounced, model.EVPNMaxMACsPerPort)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// EVPNStatus is one stretched network as the evpn service last left it.
type EVPNStatus struct {
	Network string           `json:"network"`
	VNI     uint32           `json:"vni"`
	VTEP    netip.Addr       `json:"vtep,omitzero"`
	Local   []model.EVPNMAC  `json:"local,omitempty"`  // announced (MAC-only routes)
	Remote  []evpn.RemoteMAC `json:"remote,omitempty"` // installed
	Flood   []netip.Addr     `json:"flood,omitempty"`  // the VTEPs flooded to
	Neighs  []evpn.Neigh     `json:"neighs,omitempty"` // ARP suppression entries
	// Unannounced counts the local MACs left out: their port had
	// model.EVPNMaxMACsPerPort announced already.
	Unannounced int `json:"unannounced,omitempty"`
	// HostRoutes are the /32s announced in IPv4 unicast for the local
	// guests (evpn.HostRoutes): a routed network's, or a nat network's
	// with routed_from.
	HostRoutes []netip.Prefix `json:"host_routes,omitempty"`
}

// EVPN is the evpn service's view of each stretched network.
func (d *Daemon) EVPN() []EVPNStatus {
	s := &d.evpn
	np := s.nets.Load()
	if np == nil {
		return nil
	}
	s.mu.Lock()
	dec := s.last
	s.mu.Unlock()
	var out []EVPNStatus
	for _, n := range *np {
		st := EVPNStatus{Network: n.Name, VNI: n.VNI, VTEP: n.VTEP, HostRoutes: evpn.HostRoutes([]evpn.Network{n}, dec.Announce)}
		for _, r := range dec.Announce.MACs {
			if r.VNI == n.VNI && !r.IP.IsValid() {
				st.Local = append(st.Local, r)
			}
		}
		for _, m := range dec.Install.MACs {
			if m.Device == n.VXLAN {
				st.Remote = append(st.Remote, m)
			}
		}
		for _, f := range dec.Install.Flood {
			if f.Device == n.VXLAN {
				st.Flood = append(st.Flood, f.VTEP)
			}
		}
		for _, e := range dec.Install.Neighs {
			if e.Bridge == n.Bridge {
				st.Neighs = append(st.Neighs, e)
			}
		}
		for _, g := range dec.Unannounced {
			if g.VNI == n.VNI {
				st.Unannounced++
			}
		}
		out = append(out, st)
	}
	return out
}

// evpnSpeaker is the speaker as the evpn service uses it: EVPNSpeaker,
// else the bgp service's; nil without a bgp section. d.mu is held.
func (d *Daemon) evpnSpeaker() evpn.Speaker {
	if d.EVPNSpeaker != nil {
		return d.EVPNSpeaker
	}
	if d.speaker == nil {
		return nil // not a nil *bgp.Speaker in a non-nil interface
	}
	return d.speaker
}

// EVPNOf asks the running daemon of a state folder for its evpn
// service's view (GET /v1/evpn): ErrNoDaemon when none runs.
func EVPNOf(dir string) ([]EVPNStatus, error) {
	var out []EVPNStatus
	err := call(dir, http.MethodGet, "/v1/evpn", &out)
	return out, err
}

var _ evpn.Speaker = (*bgp.Speaker)(nil)
