package bgp

import (
	"context"
	"log/slog"
	"net/netip"

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

// Speaker is the BGP speaker of one namespace. Its methods are safe for
// concurrent use.
type Speaker struct {
	// TODO(speaker helper): GoBGP server, peers, path UUIDs, learned paths,
	// installed routes.
}

// New returns a stopped speaker over k, logging to log.
func New(k Kernel, log *slog.Logger) *Speaker { panic("not yet") }

// Configure starts the speaker with c (the first call) or applies the
// difference: peers added, removed or changed; a changed ASN, router ID,
// listen addresses or port restart it. An unchanged c costs nothing (it
// runs after every apply and drift repair). ctx bounds the speaker's
// life.
func (s *Speaker) Configure(ctx context.Context, c model.BGP) error { panic("not yet") }

// Announce makes prefixes the complete set this host announces: new ones
// are added, missing ones withdrawn (by the UUIDs AddPath returned).
func (s *Speaker) Announce(prefixes []netip.Prefix) error { panic("not yet") }

// Protect sets this host's own prefixes (its networks' subnets): a
// learned route equal to or inside one is never installed.
func (s *Speaker) Protect(own []netip.Prefix) { panic("not yet") }

// Status reports the speaker; zero when stopped.
func (s *Speaker) Status() Status { panic("not yet") }

// Stop ends the sessions. With keepRoutes (the daemon stops: a restart,
// a crash) the installed routes stay in the kernel (graceful restart: the
// peers keep this host's routes meanwhile, and the next speaker takes the
// installed ones over, then removes those its peers do not announce
// again). Without (the bgp section left the config) it removes them.
func (s *Speaker) Stop(keepRoutes bool) { panic("not yet") }
