package evpn

import "github.com/guestnet/guestnet/internal/model"

// Speaker is the BGP side of EVPN as the daemon's evpn service uses it
// (internal/bgp's Speaker has these methods).
type Speaker interface {
	// AnnounceEVPN makes e the complete set this host announces.
	AnnounceEVPN(e model.EVPN) error
	// RemoteEVPN is every EVPN route received from the peers.
	RemoteEVPN() model.EVPN
	// OnEVPN sets f, called (without blocking) when RemoteEVPN changed.
	OnEVPN(f func())
}
