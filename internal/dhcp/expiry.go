package dhcp

import (
	"net/netip"
	"time"
)

// ExpiryEvery is how often Serve looks for leases that ran out, to log
// them: a lease ends by itself, with no message from its client.
const ExpiryEvery = 15 * time.Second

// expiries remembers which leases' expiry has been logged, by address
// and expiry (a lease renewed later is a new one).
type expiries map[netip.Addr]time.Time

// LogExpired logs, once each, the client leases that have run out since
// the last call (the pool's clock decides), and returns them. Quarantines
// ending are not logged: they are no client's lease.
func (h *Handler) LogExpired() []Lease {
	now := h.Pool.now()
	h.logMu.Lock()
	defer h.logMu.Unlock()
	if h.expired == nil {
		h.expired = expiries{}
	}
	var out []Lease
	seen := map[netip.Addr]bool{}
	for _, l := range h.Pool.Leases() {
		seen[l.IP] = true
		if l.Declined || l.MAC == "" || l.live(now) || h.expired[l.IP].Equal(l.Expiry) {
			continue
		}
		h.expired[l.IP] = l.Expiry
		out = append(out, l)
		h.Log.Info("dhcp lease expired", "mac", l.MAC, "ip", l.IP, "hostname", l.Hostname, "port", l.Port,
			"at", l.Expiry.Format(time.RFC3339))
	}
	for a := range h.expired {
		if !seen[a] {
			delete(h.expired, a) // the record is gone: forget it
		}
	}
	return out
}
