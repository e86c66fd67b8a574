package daemon

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
)

// unicastRoutes is what the speaker announces in IPv4/IPv6 unicast, from
// two sources: the networks' prefixes (syncBGP, withdrawAhead, under
// d.mu) and the host routes of this host's guests on stretched networks
// (the evpn passes, under the evpn service's mu). Speaker.Announce takes
// the complete set, so both go through here. Its mu is taken last (no
// other lock is taken under it but the speaker's), so both callers may
// hold theirs.
type unicastRoutes struct {
	mu      sync.Mutex
	speaker *bgp.Speaker
	subnets []netip.Prefix
	guests  []netip.Prefix
}

// prefixes sets the speaker and the networks' prefixes and announces them
// with the host routes inside them; a nil speaker (none runs) forgets
// both. d.mu is held.
func (u *unicastRoutes) prefixes(sp *bgp.Speaker, prefixes []netip.Prefix) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.speaker, u.subnets = sp, slices.Clone(prefixes)
	return u.announceLocked()
}

// hosts sets the host routes of this host's guests (evpn.HostRoutes) and
// announces them when they changed.
func (u *unicastRoutes) hosts(guests []netip.Prefix) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if slices.Equal(u.guests, guests) {
		return nil
	}
	u.guests = slices.Clone(guests)
	return u.announceLocked()
}

func (u *unicastRoutes) announceLocked() error {
	if u.speaker == nil {
		return nil
	}
	return u.speaker.Announce(withHostRoutes(u.subnets, u.guests))
}

// withHostRoutes is prefixes and the host routes inside one of them: a
// guest's /32 goes out only while its network's subnet does (a network
// about to be removed, withdrawn ahead, takes its guests' routes along;
// one with no_announce has none). Sorted, without duplicates.
func withHostRoutes(prefixes, hosts []netip.Prefix) []netip.Prefix {
	out := slices.Clone(prefixes)
	for _, h := range hosts {
		if slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Bits() <= h.Bits() && p.Contains(h.Addr()) }) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, model.ComparePrefix)
	return slices.Compact(out)
}
