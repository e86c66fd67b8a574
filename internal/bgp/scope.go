package bgp

import (
	"context"
	"fmt"
	"slices"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/guestnet/guestnet/internal/model"
)

// The export policy, per-peer: GoBGP evaluates an export policy once for
// each peer a path goes to, with that peer as the neighbor a neighbor-set
// condition matches (server.go, PolicyOptions.Info), so one policy on the
// global RIB sends a scoped prefix to the peers inside its To and to no
// one else. For each scoped prefix two statements come first: accept it
// toward a peer in To, then reject it; the last statement accepts this
// host's own paths (nothing learned is re-exported), and the default is
// reject. One prefix set per scoped prefix (GoBGP's prefix sets hold one
// family each), matching it and every prefix inside it: a guest's host
// route (a stretched network's /32, evpn.HostRoutes) has its subnet's
// audience.
func exportPolicyRequest(scoped []model.ScopedPrefix) *api.SetPoliciesRequest {
	var sets []*api.DefinedSet
	var st []*api.Statement
	for i, sp := range scoped {
		name := fmt.Sprintf("%s-scoped-%d", exportPolicy, i)
		bits := uint32(sp.Prefix.Bits())
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name,
			Prefixes: []*api.Prefix{{IpPrefix: sp.Prefix.String(), MaskLengthMin: bits, MaskLengthMax: uint32(sp.Prefix.Addr().BitLen())}}})
		to := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name + "-to"}
		for _, p := range sp.To {
			to.List = append(to.List, p.String())
		}
		sets = append(sets, to)
		prefix := &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
		st = append(st,
			&api.Statement{Name: name + "-to", Conditions: &api.Conditions{PrefixSet: prefix,
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name + "-to"},
				RouteType:   api.Conditions_ROUTE_TYPE_LOCAL},
				Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}},
			&api.Statement{Name: name + "-others", Conditions: &api.Conditions{PrefixSet: prefix},
				Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}})
	}
	st = append(st, &api.Statement{
		Name:       exportPolicy + "-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	})
	return &api.SetPoliciesRequest{DefinedSets: sets, Policies: []*api.Policy{{Name: exportPolicy, Statements: st}}}
}

// Scope sets the announced prefixes that go to some peers only (see
// model.Scoped); call it before Announce, which then adds their paths
// under the policy already. A change to a running speaker replaces the
// export policy and re-sends every peer's routes through it (a soft
// reset out): a prefix whose audience shrank is withdrawn from the peers
// that left it.
func (s *Speaker) Scope(scoped []model.ScopedPrefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	same := slices.EqualFunc(s.scoped, scoped, func(a, b model.ScopedPrefix) bool {
		return a.Prefix == b.Prefix && slices.Equal(a.To, b.To)
	})
	if same {
		return nil
	}
	s.scoped = slices.Clone(scoped)
	if s.srv == nil {
		return nil // startServer sets it
	}
	ctx := context.Background()
	if err := s.srv.SetPolicies(ctx, exportPolicyRequest(s.scoped)); err != nil {
		return fmt.Errorf("bgp: set the export policy for %d scoped prefixes: %w", len(s.scoped), err)
	}
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
		return fmt.Errorf("bgp: send the peers their routes under the new export policy: %w", err)
	}
	return nil
}
