package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// loop is the install loop: the one goroutine that writes routes. It
// makes a pass when woken (GoBGP's events, Configure, Protect) and on a
// slow timer, until ctx ends; then it closes done.
func (s *Speaker) loop(ctx context.Context, srv *server.BgpServer, kick <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(recheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
		if err := s.pass(ctx, srv); err != nil && ctx.Err() == nil {
			s.log.Error("bgp: install pass", "err", err)
		}
	}
}

// logEachUpTo is the most route writes of one pass logged one by one at
// info level.
const logEachUpTo = 16

// pass reads GoBGP's sessions and paths and the kernel's routes, decides
// what is installed and repairs the difference: one Kernel.Routes, one
// write per route that differs.
func (s *Speaker) pass(ctx context.Context, srv *server.BgpServer) error {
	infos, err := listPeers(ctx, srv)
	if err != nil {
		return fmt.Errorf("list peers: %w", err)
	}
	dests, err := candidates(srv)
	if err != nil {
		return fmt.Errorf("list paths: %w", err)
	}
	routes, err := s.k.Routes()
	if err != nil {
		return fmt.Errorf("read the routes: %w", err)
	}
	evpn, err := receivedEVPN(srv)
	if err != nil {
		return fmt.Errorf("list EVPN paths: %w", err)
	}

	s.mu.Lock()
	if s.srv != srv { // stopped meanwhile
		s.mu.Unlock()
		return nil
	}
	s.notePeersLocked(infos)
	pol := Policy{Import: s.cfg.Import, Protect: slices.Clone(s.protect), Own: append(slices.Clone(s.cfg.Listen), s.id)}
	for _, in := range infos {
		if in.local.IsValid() {
			pol.Own = append(pol.Own, in.local)
		}
	}
	gone := map[netip.Addr]string{}
	for a, p := range s.peers {
		if p.gone != "" {
			gone[a] = p.gone
		}
	}
	keep := s.takeoverLocked()
	var onEVPN func()
	if remote := evpnSet(evpn, gone); !sameEVPN(remote, s.evpnRemote) {
		s.evpnRemote, onEVPN = remote, s.onEVPN
	}
	s.mu.Unlock()
	if onEVPN != nil {
		onEVPN() // no lock held; it does not block
	}

	learned, want := decide(dests, pol, routes, gone)
	failed := map[netip.Prefix]string{}
	acts := reconcile(want, routes, func(r model.Route) bool { return keep[r.Dst] })
	// Each write is named at info when a pass makes few; a flood of them
	// (a peer's 100,000 prefixes) is one line, the routes at debug.
	each := slog.LevelInfo
	if len(acts) > logEachUpTo {
		each = slog.LevelDebug
	}
	var wrote [2]int // replaced, deleted
	defer func() {
		if len(acts) > logEachUpTo {
			s.log.Info("bgp: routes written", "installed", wrote[0], "removed", wrote[1], "failed", len(failed))
		}
	}()
	for _, a := range acts {
		if ctx.Err() != nil {
			// Stopped: Stop waits for this loop with the daemon's lock
			// held, and 100,000 writes after a flood take a minute.
			// Stop(true) leaves the routes to the next speaker, which
			// writes the rest; Stop(false) removes them.
			return nil
		}
		err := s.k.Do(a)
		if apply.Done(a, err) {
			s.log.Log(ctx, each, "bgp: "+a.String(), "op", a.Op)
			if a.Op == plan.OpRouteDel {
				wrote[1]++
			} else {
				wrote[0]++
			}
			continue
		}
		why := fmt.Sprintf("the kernel refused it (%s): %v", a, err)
		if s.refused[a.Route.Dst] != why { // said once, not at every pass
			s.log.Error("bgp: route write failed", "route", a.String(), "err", err)
		}
		failed[a.Route.Dst] = why
	}
	s.refused = failed
	installed := map[netip.Addr]int{}
	for i := range learned {
		l := &learned[i]
		if _, ok := want[l.Prefix]; !ok {
			continue
		}
		if why := failed[l.Prefix]; why != "" {
			l.Why = why
			continue
		}
		l.Installed = true
		installed[l.Peer]++
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == srv {
		s.learned = learned
		for a, p := range s.peers {
			p.installed = installed[a]
		}
	}
	return nil
}

// notePeersLocked takes what ListPeer says of each session: its counts,
// and whether it ended by this side's hold timer. GoBGP treats a hold timer expiry like a restart
// when graceful restart is on (its paths kept, stale, for the restart
// time); but a host whose link went down is no restarting host, and
// routes through it lead nowhere, so its stale paths are not installed.
// The sign: the session ended gracefully and this side had sent a
// notification since it was last seen up (the hold-timer one; a peer
// that restarts closes the connection, and a reset by either side is a
// Hard Reset that drops the paths anyway).
func (s *Speaker) notePeersLocked(infos map[netip.Addr]peerInfo) {
	for a, p := range s.peers {
		in, ok := infos[a]
		if !ok {
			continue
		}
		switch {
		case in.overLimit:
			// GoBGP sent a Cease, which graceful restart (RFC 8538) takes
			// for a restart and keeps the paths: they must go.
			p.gone = fmt.Sprintf("sent more than its max_prefixes (%d): session shut down, its routes removed; "+
				"raise max_prefixes for the peer in the bgp section and reload (or restart guestnet serve)", maxPrefixes(p.conf))
			p.eor = false
		case in.state == StateEstablished && p.state == StateEstablished && !p.graceful:
			p.notesUp = in.notificationsSent
		case p.graceful && p.gone == "" && in.notificationsSent > p.notesUp:
			h := in.negotiatedHold
			if h == 0 {
				h = hold(p.conf)
			}
			p.gone = fmt.Sprintf("the session ended by this host's hold timer (nothing heard from the peer for %s): its routes are removed, not kept as for a restart", h)
			p.eor = false
			s.log.Warn("bgp: peer silent: its routes are removed", "peer", a)
		}
		if in.state == StateEstablished && p.eor {
			p.gone = ""
		}
		p.info = in // the state stays the events': they come in order, with the reason
	}
}

// takeoverLocked returns the inherited routes still kept, or nil once the
// takeover is over: every configured peer sent its End-of-RIB since it
// established, or the restart time passed.
func (s *Speaker) takeoverLocked() map[netip.Prefix]bool {
	if s.inherited == nil {
		return nil
	}
	all := true
	for _, p := range s.peers {
		all = all && p.eor
	}
	if all || time.Now().After(s.takeoverBy) {
		s.log.Info("bgp: takeover done: routes not learned again are removed", "every_peer_eor", all)
		s.inherited = nil
		return nil
	}
	return s.inherited
}
