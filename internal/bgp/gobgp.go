package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/guestnet/guestnet/internal/model"
)

// Timers of every session, chosen for hosts that restart and links that
// come back (the issue: a peer back is re-established within 30 s, a
// restart outlasts the reconnect).
const (
	// connectRetry is how often a peer not connected is dialled (GoBGP's
	// default, 120 s, would leave a peer that came back alone for 2
	// minutes).
	connectRetry = 5 // s
	// idleHoldAfterReset is how long a session that ended stays idle
	// (refusing connections) before it is tried again (GoBGP: 30 s).
	idleHoldAfterReset = 2 // s
	// restartTime is how long peers keep this host's routes while it
	// restarts (graceful restart, RFC 4724): a crash, an upgrade, a
	// config change that restarts the speaker. The speaker's own kernel
	// routes stay meanwhile.
	restartTime = 120 // s
	// deferralTime bounds how long a restarted speaker waits for every
	// peer's End-of-RIB before it announces again (RFC 4724 selection
	// deferral): a peer that stays down delays the others this long, well
	// inside the peers' restartTime.
	deferralTime = 30 // s
)

// exportPolicy lets only this host's own paths (AddPath) out: a guestnet
// host is no transit. Without it GoBGP re-announces what it learned,
// next hop itself, including paths it refused to install (a default
// route, a prefix outside import): a black hole for whoever believes it.
const exportPolicy = "guestnet-own-only"

// The families the speaker negotiates: a session carries its
// address's own, IPv4 unicast with an IPv4 peer and IPv6 unicast with an
// IPv6 one (no IPv4 over IPv6 sessions, RFC 8950, nor the reverse).
var (
	ipv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	ipv6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// families are the unicast families whose paths the speaker reads.
var families = []gobgp.Family{gobgp.RF_IPv4_UC, gobgp.RF_IPv6_UC}

// peerFamily is the family a session with a carries.
func peerFamily(a netip.Addr) *api.Family {
	if model.FamilyOf(a) == model.IPv6 {
		return ipv6
	}
	return ipv4
}

// levelHandler passes on the records at or above its level: GoBGP logs
// every session event at info, the speaker's own lines say what matters.
type levelHandler struct {
	slog.Handler
	lvl *slog.LevelVar
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.lvl.Level() && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as), h.lvl}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(name), h.lvl}
}

// startServer starts a GoBGP server for c with router ID id.
func startServer(ctx context.Context, c model.BGP, id netip.Addr, s *Speaker) (*server.BgpServer, error) {
	log := slog.New(levelHandler{s.log.Handler(), s.lvl}).With("gobgp", true)
	srv := server.NewBgpServer(server.LoggerOption(log, s.lvl))
	go srv.Serve()
	g := &api.Global{Asn: c.ASN, RouterId: id.String(), ListenPort: int32(port(c))}
	for _, a := range c.Listen {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: g})
	if err != nil {
		err = fmt.Errorf("bgp: start the speaker (AS %d, router ID %s, port %d): %w", c.ASN, id, port(c), err)
	}
	if err == nil {
		err = srv.SetPolicies(ctx, exportPolicyRequest(s.scoped))
	}
	if err == nil {
		err = srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
			Policies:      []*api.Policy{{Name: exportPolicy}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
		if err != nil {
			err = fmt.Errorf("bgp: set the export policy: %w", err)
		}
	}
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}

func port(c model.BGP) int {
	if c.Port == 0 {
		return model.BGPPort
	}
	return c.Port
}

func maxPrefixes(p model.BGPPeer) int {
	if p.MaxPrefixes == 0 {
		return model.BGPMaxPrefixes
	}
	return p.MaxPrefixes
}

func hold(p model.BGPPeer) time.Duration {
	if p.Hold == 0 {
		return model.BGPHold
	}
	return p.Hold
}

// apiPeer is p as GoBGP takes it. restarting sets the Restart State and
// Forwarding bits of graceful restart: this speaker restarted and kept
// the routes it had installed.
func apiPeer(c model.BGP, p model.BGPPeer, restarting bool) *api.Peer {
	h := uint64(hold(p) / time.Second)
	fam := peerFamily(p.Address)
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           connectRetry,
			HoldTime:               h,
			KeepaliveInterval:      max(h/3, 1),
			IdleHoldTimeAfterReset: idleHoldAfterReset,
		}},
		Transport: &api.Transport{RemotePort: uint32(port(c))},
		GracefulRestart: &api.GracefulRestart{
			Enabled:             true,
			RestartTime:         restartTime,
			DeferralTime:        deferralTime,
			NotificationEnabled: true, // RFC 8538: a removed peer or section is a Hard Reset, the rest graceful
			LocalRestarting:     restarting,
		},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
			// One prefix over the limit shuts the session down (GoBGP's
			// administrative state PFX_CT: no reconnect, so no churn),
			// and its paths go.
			PrefixLimits: &api.PrefixLimit{Family: fam, MaxPrefixes: uint32(maxPrefixes(p)), ShutdownThresholdPct: 90},
		}},
	}
	if c.EVPN {
		// EVPN beside the unicast family. Its routes are counted against
		// max_prefixes on their own (a limit per family): a peer may send
		// max_prefixes prefixes and max_prefixes EVPN routes (one per
		// guest MAC and MAC+IP, one per stretched network).
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: l2vpnEVPN, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
			PrefixLimits:      &api.PrefixLimit{Family: l2vpnEVPN, MaxPrefixes: uint32(maxPrefixes(p)), ShutdownThresholdPct: 90},
		})
	}
	// Sessions leave from the address the speaker listens on (of the
	// peer's family), so the peer sees the address it is configured with.
	for _, a := range c.Listen {
		if a.Is4() == p.Address.Is4() {
			ap.Transport.LocalAddress = a.String()
			break
		}
	}
	return ap
}

// ownPath is a path this host originates for prefix: next hop 0.0.0.0
// (an IPv4 prefix) or :: (an IPv6 one, in MP_REACH_NLRI), which GoBGP
// sends as this host's address on each session, eBGP and iBGP alike
// (next-hop-self for local paths). GoBGP sends a path only on the
// sessions that negotiated its family.
func ownPath(prefix netip.Prefix) (*apiutil.Path, error) {
	nlri, err := gobgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, err
	}
	origin := gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if model.FamilyOf(prefix.Addr()) == model.IPv6 {
		mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_IPv6_UC, []gobgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}
		return &apiutil.Path{Family: gobgp.RF_IPv6_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, mp}}, nil
	}
	nh, err := gobgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{Family: gobgp.RF_IPv4_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, nh}}, nil
}

// candidates lists, per prefix of both unicast families, the paths
// learned from peers, best first (GoBGP's order); this host's own paths
// are left out.
func candidates(srv *server.BgpServer) ([][]candidate, error) {
	var out [][]candidate
	for _, f := range families {
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(nlri gobgp.NLRI, paths []*apiutil.Path) {
				pfx, ok := nlri.(*gobgp.IPAddrPrefix)
				if !ok {
					return
				}
				var cs []candidate
				for _, p := range paths {
					if p.PeerASN == 0 || p.Withdrawal { // a local path: ours
						continue
					}
					nh, ll := nextHops(p)
					cs = append(cs, candidate{Prefix: pfx.Prefix, NextHop: nh, LinkLocal: ll, Peer: p.PeerAddress, Stale: p.Stale})
				}
				if len(cs) > 0 {
					out = append(out, cs)
				}
			})
		if err != nil {
			return out, fmt.Errorf("%s: %w", f, err)
		}
	}
	return out, nil
}

// nextHops are a path's next hop and, for IPv6, the link-local one the
// peer sent beside it (RFC 2545), if any.
func nextHops(p *apiutil.Path) (nh, ll netip.Addr) {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			return a.Value, netip.Addr{}
		case *gobgp.PathAttributeMpReachNLRI:
			return a.Nexthop, a.LinkLocalNexthop
		}
	}
	return netip.Addr{}, netip.Addr{}
}

// peerInfo is what the speaker reads of a session with ListPeer.
type peerInfo struct {
	state             string
	overLimit         bool // shut down for sending more than max_prefixes
	sent, accepted    int
	notificationsSent uint64
	negotiatedHold    time.Duration
	// local is this host's end of the session (its address on the
	// peer's subnet), when GoBGP knows it: never a next hop.
	local netip.Addr
}

func listPeers(ctx context.Context, srv *server.BgpServer) (map[netip.Addr]peerInfo, error) {
	out := map[netip.Addr]peerInfo{}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := p.GetState()
		a, err := netip.ParseAddr(st.GetNeighborAddress())
		if err != nil {
			a, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
		}
		pi := peerInfo{
			state:             sessionState(st.GetSessionState()),
			notificationsSent: st.GetMessages().GetSent().GetNotification(),
			negotiatedHold:    time.Duration(p.GetTimers().GetState().GetNegotiatedHoldTime()) * time.Second,
			overLimit:         st.GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT,
		}
		if l, err := netip.ParseAddr(p.GetTransport().GetLocalAddress()); err == nil && !l.IsUnspecified() {
			pi.local = l.WithZone("")
		}
		for _, af := range p.GetAfiSafis() {
			pi.sent += int(af.GetState().GetAdvertised())
			pi.accepted += int(af.GetState().GetAccepted())
		}
		out[a] = pi
	})
	return out, err
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}

func fsmState(s gobgp.FSMState) string {
	switch s {
	case gobgp.BGP_FSM_CONNECT:
		return StateConnect
	case gobgp.BGP_FSM_ACTIVE:
		return StateActive
	case gobgp.BGP_FSM_OPENSENT:
		return StateOpenSent
	case gobgp.BGP_FSM_OPENCONFIRM:
		return StateOpenConfirm
	case gobgp.BGP_FSM_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}

// disconnectText says why a session ended, from GoBGP's reason code and
// its message (shown, never matched).
func disconnectText(r api.PeerState_DisconnectReason, msg string) string {
	var s string
	switch r {
	case api.PeerState_DISCONNECT_REASON_UNSPECIFIED:
		return msg
	case api.PeerState_DISCONNECT_REASON_ADMIN_DOWN:
		s = "shut down by this host"
	case api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:
		s = "hold timer expired: nothing heard from the peer"
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:
		s = "this host sent a notification"
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		s = "the peer sent a notification"
	case api.PeerState_DISCONNECT_REASON_READ_FAILED, api.PeerState_DISCONNECT_REASON_WRITE_FAILED:
		s = "the connection broke"
	case api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART:
		s = "session lost; graceful restart: the peer's routes are kept until it is back or its restart time ends"
	case api.PeerState_DISCONNECT_REASON_RESTART_TIMER_EXPIRED:
		s = "the peer did not come back within its graceful restart time"
	case api.PeerState_DISCONNECT_REASON_HARD_RESET:
		s = "the peer reset the session (hard reset)"
	case api.PeerState_DISCONNECT_REASON_DECONFIGURED:
		s = "peer removed from the config"
	case api.PeerState_DISCONNECT_REASON_BAD_PEER_AS:
		s = "the peer's AS number is not the configured one"
	case api.PeerState_DISCONNECT_REASON_INVALID_MSG:
		s = "the peer sent an invalid message"
	default:
		s = r.String()
	}
	switch r {
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT, api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED, api.PeerState_DISCONNECT_REASON_INVALID_MSG:
		if msg != "" { // the notification's code, which the reason alone does not say
			s += " (" + msg + ")"
		}
	}
	return s
}
