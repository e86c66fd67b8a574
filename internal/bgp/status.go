// Package bgp is guestnet's BGP speaker: GoBGP v4 embedded as a library
// (github.com/osrg/gobgp/v4/pkg/server). It announces what the spec says
// (model.Announced), and installs the best paths its peers announce into
// the main table itself, with protocol bgp (186) and metric 186, under an
// import policy (Importable): GoBGP does not write to the kernel.
//
// The daemon runs it as its "bgp" service: Configure after each apply,
// Announce the spec's prefixes, Protect this host's own networks, Status
// for `guestnet bgp`, status, metrics and doctor.
package bgp

import (
	"net/netip"
	"time"
)

// Status is the speaker as `guestnet bgp` shows it.
type Status struct {
	ASN      uint32       `json:"asn"`
	RouterID netip.Addr   `json:"router_id"`
	Port     int          `json:"port"`
	Peers    []PeerStatus `json:"peers"`
	// Announced is what this host announces (the spec's prefixes).
	Announced []netip.Prefix `json:"announced"`
	// Learned are the best paths learned from peers, installed or not
	// (Why says why not), sorted by prefix.
	Learned []Learned `json:"learned"`
	// EVPN is what this host announces and receives of EVPN (stretched
	// networks); nil when no network is stretched.
	EVPN *EVPNStatus `json:"evpn,omitempty"`
}

// PeerStatus is one session.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is spelled out: idle, connect, active, opensent, openconfirm,
	// established.
	State string `json:"state"`
	// Since is when the session reached State (its uptime when
	// established); zero if never.
	Since time.Time `json:"since,omitzero"`
	// Sent, Received and Installed count prefixes: announced to the peer,
	// accepted from it, and of those, installed in the kernel. Sent and
	// Received count EVPN routes too (every family of the session);
	// those are never installed as routes.
	Sent      int `json:"sent"`
	Received  int `json:"received"`
	Installed int `json:"installed"`
	// LastError is why the last session ended (a notification, the hold
	// timer), when known.
	LastError string `json:"last_error,omitempty"`
}

// Learned is one best path from a peer.
type Learned struct {
	Prefix  netip.Prefix `json:"prefix"`
	NextHop netip.Addr   `json:"next_hop"`
	Peer    netip.Addr   `json:"peer"`
	// Installed is true when the route is in the kernel (protocol bgp);
	// otherwise Why says why not (the import policy, a route of someone
	// else in the way, a kernel error).
	Installed bool   `json:"installed"`
	Why       string `json:"why,omitempty"`
	// Refused is true when the import policy keeps the path out on
	// purpose: outside import:, a default route import does not list,
	// equal to or inside one of this host's own networks or connected
	// subnets. doctor reports it as info (nothing is broken). A path
	// neither installed nor refused should be in the kernel and is not
	// (no directly reachable next hop, someone else's route in the way,
	// a kernel error): doctor warns. A flag rather than Why's text, so
	// that nobody decides by matching strings.
	Refused bool `json:"refused,omitempty"`
	// Stale is true while the path is kept across its peer's restart
	// (graceful restart), until the peer's End-of-RIB or the restart time.
	Stale bool `json:"stale,omitempty"`
}

// States spelled out, as Status shows them.
const (
	StateIdle        = "idle"
	StateConnect     = "connect"
	StateActive      = "active"
	StateOpenSent    = "opensent"
	StateOpenConfirm = "openconfirm"
	StateEstablished = "established"
	// StateSelf is a peer whose address is this host's own: a spec
	// shared by every host lists them all, each leaves itself out.
	StateSelf = "self"
)
