package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// Kernel is what the speaker reads and writes of the served namespace:
// engine.Kernel has it (the daemon passes its engine's, so writes are
// counted and tests can use internal/fake).
type Kernel interface {
	// Routes lists the main table's IPv4 routes: connected subnets
	// (protocol kernel, with their source address) tell which next hops
	// are directly reachable; protocol 186 ones are the speaker's own,
	// found again after a restart.
	Routes() ([]model.Route, error)
	// Do writes one route: plan.OpRouteReplace or plan.OpRouteDel of a
	// model.Route with Proto ProtoBGP.
	Do(a plan.Action) error
}

// recheckEvery is the slow timer of the install loop: the kernel's BGP
// routes are compared with the wanted ones (someone deleted one; a next
// hop became reachable) and the status refreshed, besides the passes
// GoBGP's events and each Configure or Protect start.
const recheckEvery = 10 * time.Second

// Speaker is the BGP speaker of one namespace. Its methods are safe for
// concurrent use; none waits on the network. GoBGP's callbacks only note
// what happened and wake the install loop, the one goroutine that writes
// routes.
type Speaker struct {
	k   Kernel
	log *slog.Logger
	lvl *slog.LevelVar // GoBGP's log level

	mu      sync.Mutex
	srv     *server.BgpServer // nil: stopped
	cfg     model.BGP         // what srv runs
	id      netip.Addr        // its router ID
	protect []netip.Prefix
	// announce is the complete set Announce was given; paths the UUIDs
	// AddPath returned for those srv carries.
	announce []netip.Prefix
	// scoped are the announced prefixes only some peers receive (Scope):
	// the export policy's statements.
	scoped []model.ScopedPrefix
	paths  map[netip.Prefix]uuid.UUID
	peers  map[netip.Addr]*peer
	// inherited are the BGP routes found in the kernel at start (a
	// previous speaker's): kept until takeoverBy or every peer's
	// End-of-RIB, then those not learned again go. nil when done.
	inherited  map[netip.Prefix]bool
	takeoverBy time.Time
	learned    []Learned
	// refused are the writes the kernel refused at the last pass, by
	// destination (the install loop's own: it logs a refusal once).
	refused map[netip.Prefix]string
	// evpnWant is the complete EVPN set AnnounceEVPN was given, by NLRI
	// key; evpnHave what srv carries of it. evpnRemote is what the last
	// pass read of the peers' EVPN routes; onEVPN is told when it changes.
	evpnWant   map[string]evpnRoute
	evpnHave   map[string]evpnRoute
	evpnRemote model.EVPN
	onEVPN     func()
	started    time.Time          // of srv
	stop       context.CancelFunc // ends the loop and GoBGP's watch
	done       chan struct{}      // closed when the loop ended
	kick       chan struct{}
}

// peer is what the speaker knows of one session.
type peer struct {
	conf      model.BGPPeer
	info      peerInfo // from the last ListPeer
	state     string   // from the last event or ListPeer
	since     time.Time
	lastError string
	// eor: End-of-RIB received since the session was established;
	// evpnEOR: the same of the EVPN family.
	eor, evpnEOR bool
	// graceful: the last session ended and GoBGP keeps its paths (stale)
	// as for a graceful restart.
	graceful bool
	// notesUp is the count of notifications this host sent the peer, as
	// read while the session was up: one more when it ended gracefully
	// means this side's hold timer ended it.
	notesUp uint64
	// gone says why this peer's stale paths are not installed (the
	// session ended by the hold timer, not a restart); "" keeps them.
	gone      string
	installed int
	// self: the address is this host's own (a spec shared by every
	// host lists them all); never given to GoBGP.
	self bool
}

// New returns a stopped speaker over k, logging to log.
func New(k Kernel, log *slog.Logger) *Speaker {
	lvl := new(slog.LevelVar)
	lvl.Set(slog.LevelWarn)
	return &Speaker{k: k, log: log, lvl: lvl}
}

// Configure starts the speaker with c (the first call) or applies the
// difference: peers added, removed or changed; a changed ASN, router ID,
// listen addresses or port restart it. An unchanged c costs nothing (it
// runs after every apply and drift repair). ctx bounds the speaker's
// life.
func (s *Speaker) Configure(ctx context.Context, c model.BGP) error {
	s.mu.Lock()
	if s.srv != nil && sameGlobal(s.cfg, c) {
		var self map[netip.Addr]string
		if !slices.Equal(c.Peers, s.cfg.Peers) { // new peers: is one this host?
			if routes, err := s.k.Routes(); err == nil {
				self = selfPeers(c, routes)
			}
		}
		err := s.syncPeersLocked(ctx, c, self)
		s.cfg = c
		s.mu.Unlock()
		s.wake()
		return err
	}
	if s.srv != nil { // a restart: the routes stay, taken over by the new server
		s.mu.Unlock()
		s.Stop(true)
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	return s.startLocked(ctx, c)
}

// sameGlobal reports whether a and b run the same server: what StartBgp
// takes, and the families of every session (EVPN on or off: a restart
// renegotiates them all at once). A router ID left out stays the one
// derived at start.
func sameGlobal(a, b model.BGP) bool {
	return a.ASN == b.ASN && a.RouterID == b.RouterID && port(a) == port(b) && slices.Equal(a.Listen, b.Listen) && a.EVPN == b.EVPN
}

func (s *Speaker) startLocked(ctx context.Context, c model.BGP) error {
	routes, err := s.k.Routes()
	if err != nil {
		return fmt.Errorf("bgp: read the routes: %w", err)
	}
	id, err := RouterID(c, routes)
	if err != nil {
		return err
	}
	inherited := map[netip.Prefix]bool{}
	for _, r := range routes {
		if ours(r) {
			inherited[r.Dst] = true
		}
	}
	srv, err := startServer(ctx, c, id, s)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	s.srv, s.cfg, s.id, s.stop = srv, c, id, cancel
	s.paths, s.peers, s.learned = map[netip.Prefix]uuid.UUID{}, map[netip.Addr]*peer{}, nil
	s.evpnHave, s.started = map[string]evpnRoute{}, time.Now()
	s.inherited, s.takeoverBy = nil, time.Time{}
	if len(inherited) > 0 {
		s.inherited, s.takeoverBy = inherited, time.Now().Add(restartTime*time.Second)
		s.log.Info("bgp: taking over the routes of a previous speaker", "routes", len(inherited))
	}
	s.kick, s.done = make(chan struct{}, 1), make(chan struct{})
	err = srv.WatchEvent(lctx, server.WatchEventMessageCallbacks{
		OnBestPath:   func([]*apiutil.Path, time.Time) { s.wake() },
		OnPathEor:    s.onEOR,
		OnPeerUpdate: s.onPeer,
	}, server.WatchBestPath(false), server.WatchPeer(), server.WatchEor(false))
	if err == nil { // a peer refused does not keep the others from the paths
		err = errors.Join(s.syncPeersLocked(ctx, c, selfPeers(c, routes)), s.syncPathsLocked(), s.syncEVPNLocked())
	}
	go s.loop(lctx, srv, s.kick, s.done)
	s.kick <- struct{}{} // the first pass: a fresh channel has room
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	s.log.Info("bgp: speaker started", "asn", c.ASN, "router_id", id, "port", port(c), "peers", len(c.Peers))
	return nil
}

// selfPeers are the peers of c whose address is this host's own (the
// source of a connected subnet), with its link: GoBGP would dial itself
// and close what it accepts, every few seconds, a peer idle for good.
func selfPeers(c model.BGP, routes []model.Route) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, p := range c.Peers {
		for _, r := range routes {
			if connected(r) && r.Src == p.Address {
				out[p.Address] = r.Dev
			}
		}
	}
	return out
}

// syncPeersLocked adds, removes and replaces GoBGP's peers to match c;
// the peers in self (this host's own addresses, by link) are listed with
// state "self" and not started: one spec shared by every host lists them
// all as peers, each host leaves itself out (no error).
func (s *Speaker) syncPeersLocked(ctx context.Context, c model.BGP, self map[netip.Addr]string) error {
	var errs []error
	want := map[netip.Addr]model.BGPPeer{}
	for _, p := range c.Peers {
		want[p.Address] = p
	}
	for a, p := range s.peers {
		if w, ok := want[a]; ok && w.ASN == p.conf.ASN && hold(w) == hold(p.conf) && maxPrefixes(w) == maxPrefixes(p.conf) {
			continue
		}
		if p.self {
			delete(s.peers, a)
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove peer %s: %w", a, err))
			continue
		}
		delete(s.peers, a)
	}
	restarting := s.inherited != nil
	for _, p := range c.Peers {
		if _, ok := s.peers[p.Address]; ok {
			continue
		}
		if dev, ok := self[p.Address]; ok {
			why := fmt.Sprintf("%s is this host's own address (dev %s): left out of the sessions", p.Address, dev)
			s.peers[p.Address] = &peer{conf: p, state: StateSelf, since: time.Now(), lastError: why, self: true}
			s.log.Info("bgp: peer left out: it is this host", "peer", p.Address, "dev", dev)
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(c, p, restarting)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s (AS %d): %w", p.Address, p.ASN, err))
			continue
		}
		s.peers[p.Address] = &peer{conf: p, state: StateIdle, since: time.Now()}
	}
	return errors.Join(errs...)
}

// Announce makes prefixes the complete set this host announces: new ones
// are added, missing ones withdrawn (by the UUIDs AddPath returned).
func (s *Speaker) Announce(prefixes []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announce = nil
	for _, p := range prefixes {
		if p.IsValid() && !p.Addr().Is4In6() { // IPv4 ones go to IPv4 peers, IPv6 ones to IPv6 peers
			s.announce = append(s.announce, p.Masked())
		}
	}
	slices.SortFunc(s.announce, model.ComparePrefix)
	s.announce = slices.Compact(s.announce)
	if s.srv == nil {
		return nil
	}
	return s.syncPathsLocked()
}

// byPathAbove is the number of withdrawals above which they are named by
// their paths rather than their UUIDs (see syncPathsLocked).
const byPathAbove = 16

// syncPathsLocked adds the announced prefixes srv lacks and withdraws
// those no longer announced.
func (s *Speaker) syncPathsLocked() error {
	var add []netip.Prefix
	var paths []*apiutil.Path
	for _, p := range s.announce {
		if _, ok := s.paths[p]; ok {
			continue
		}
		ap, err := ownPath(p)
		if err != nil {
			return fmt.Errorf("announce %s: %w", p, err)
		}
		add, paths = append(add, p), append(paths, ap)
	}
	var gone []uuid.UUID
	var goneP []netip.Prefix
	for p, id := range s.paths {
		if _, ok := slices.BinarySearchFunc(s.announce, p, model.ComparePrefix); !ok {
			gone, goneP = append(gone, id), append(goneP, p)
		}
	}
	var errs []error
	if len(paths) > 0 {
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: paths})
		for i, r := range res {
			if r.Error == nil {
				s.paths[add[i]] = r.UUID
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %d prefixes: %w", len(paths), err))
		}
	}
	if len(gone) > 0 {
		req := apiutil.DeletePathRequest{UUIDs: gone}
		if len(gone) > byPathAbove {
			// GoBGP finds UUIDs by scanning every path for each one: 1,000
			// withdrawn at once took 1.8 s (BenchmarkConverge1000), with
			// the daemon's lock held. The paths themselves take one pass.
			req.UUIDs = nil
			for _, p := range goneP {
				ap, err := ownPath(p)
				if err != nil {
					return fmt.Errorf("withdraw %s: %w", p, err)
				}
				req.Paths = append(req.Paths, ap)
			}
		}
		if err := s.srv.DeletePath(req); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", goneP, err))
		} else {
			for _, p := range goneP {
				delete(s.paths, p)
			}
		}
	}
	return errors.Join(errs...)
}

// Protect sets this host's own prefixes (its networks' subnets): a
// learned route equal to or inside one is never installed.
func (s *Speaker) Protect(own []netip.Prefix) {
	s.mu.Lock()
	s.protect = slices.Clone(own)
	s.mu.Unlock()
	s.wake()
}

// wake asks the install loop for a pass; it never blocks.
func (s *Speaker) wake() {
	s.mu.Lock()
	k := s.kick
	s.mu.Unlock()
	if k == nil {
		return
	}
	select {
	case k <- struct{}{}:
	default:
	}
}

// onPeer notes a session's new state (GoBGP's event goroutine).
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	s.mu.Lock()
	if p := s.peers[ev.Peer.Conf.NeighborAddress]; p != nil {
		next := fsmState(st.SessionState)
		if p.state == StateEstablished && next != StateEstablished {
			p.lastError = disconnectText(st.DisconnectReason, st.DisconnectMessage)
			p.graceful = st.DisconnectReason == api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART
			s.log.Warn("bgp: session down", "peer", p.conf.Address, "why", p.lastError)
		}
		if next == StateEstablished && p.state != StateEstablished {
			p.graceful = false
			s.log.Info("bgp: session established", "peer", p.conf.Address)
		}
		if next != StateEstablished {
			p.eor, p.evpnEOR = false, false
		}
		if next != p.state {
			p.state, p.since = next, at
		}
	}
	s.mu.Unlock()
	s.wake()
}

// onEOR notes a peer's End-of-RIB (GoBGP's event goroutine).
func (s *Speaker) onEOR(path *apiutil.Path, _ time.Time) {
	evpn := path.Family == gobgp.RF_EVPN
	if !evpn && !slices.Contains(families, path.Family) {
		return
	}
	s.mu.Lock()
	if p := s.peers[path.PeerAddress]; p != nil {
		if evpn {
			p.evpnEOR = true
		} else {
			p.eor = true
		}
	}
	s.mu.Unlock()
	s.wake()
}

// Status reports the speaker; zero when stopped.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return Status{}
	}
	st := Status{ASN: s.cfg.ASN, RouterID: s.id, Port: port(s.cfg), Announced: slices.Clone(s.announce), Learned: slices.Clone(s.learned)}
	if s.cfg.EVPN || len(s.evpnWant) > 0 || len(s.evpnRemote.Flood)+len(s.evpnRemote.MACs) > 0 {
		st.EVPN = evpnStatus(s.localEVPNLocked(), s.remoteEVPNLocked())
		st.EVPN.Ready = s.evpnReadyLocked()
	}
	for _, c := range s.cfg.Peers {
		p := s.peers[c.Address]
		if p == nil {
			continue
		}
		ps := PeerStatus{Address: c.Address, ASN: c.ASN, State: p.state, Since: p.since, LastError: p.lastError,
			Sent: p.info.sent, Received: p.info.accepted, Installed: p.installed}
		if p.gone != "" {
			ps.LastError = p.gone
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// Stop ends the sessions. With keepRoutes (the daemon stops: a restart,
// a crash) the installed routes stay in the kernel (graceful restart: the
// peers keep this host's routes meanwhile, and the next speaker takes the
// installed ones over, then removes those its peers do not announce
// again). Without (the bgp section left the config) it removes them.
func (s *Speaker) Stop(keepRoutes bool) {
	s.mu.Lock()
	srv, stop, done := s.srv, s.stop, s.done
	s.srv, s.stop, s.done, s.kick = nil, nil, nil, nil
	s.paths, s.peers, s.learned, s.inherited = nil, nil, nil, nil
	// The remote EVPN routes go with the sessions; the set to announce
	// stays for the next start.
	s.evpnHave = nil
	hadRemote, onEVPN := len(s.evpnRemote.Flood)+len(s.evpnRemote.MACs) > 0, s.onEVPN
	s.evpnRemote = model.EVPN{}
	s.mu.Unlock()
	if hadRemote && onEVPN != nil {
		defer onEVPN() // once the loop ended: RemoteEVPN is empty for good
	}
	if srv == nil {
		return
	}
	stop()
	<-done // the loop wrote its last route
	if keepRoutes {
		// No notification: the peers see the connection close and keep
		// this host's routes for restartTime.
		if err := srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
			s.log.Warn("bgp: stop", "err", err)
		}
		s.lvl.Set(slog.LevelError + 1) // srv.Stop stops BFD too, and says the server had stopped already
		srv.Stop()
		s.lvl.Set(slog.LevelWarn)
		s.log.Info("bgp: speaker stopped; its routes stay for the next one")
		return
	}
	// Withdrawn first, then a Hard Reset (RFC 8538 maps "peer
	// de-configured" to it): the peers drop this host's routes now.
	if err := srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
		s.log.Debug("bgp: withdraw all", "err", err)
	}
	srv.Stop()
	n, err := RemoveRoutes(s.k, s.log)
	if err != nil {
		s.log.Error("bgp: remove the speaker's routes", "err", err)
	}
	s.log.Info("bgp: speaker stopped, its routes removed", "routes", n)
}

// RemoveRoutes removes every route a speaker installed (protocol bgp,
// metric 186) from k, and returns how many went: what Stop(false) does,
// for a daemon that starts without a bgp section after one that had a
// speaker stopped with its routes kept (a crash, a restart). It goes on
// past a route the kernel refuses to delete, and says which.
func RemoveRoutes(k Kernel, log *slog.Logger) (int, error) {
	routes, err := k.Routes()
	if err != nil {
		return 0, fmt.Errorf("read the routes to remove them: %w", err)
	}
	n := 0
	var errs []error
	for _, a := range reconcile(nil, routes, func(model.Route) bool { return false }) {
		if err := k.Do(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		log.Debug("bgp: "+a.String(), "op", a.Op)
		n++
	}
	return n, errors.Join(errs...)
}
