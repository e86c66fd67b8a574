package dhcp

import (
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// A client may ask only for itself: a REQUEST, RELEASE or DECLINE naming a
// MAC whose binding another port holds is dropped, so that no guest can
// take, renew, release or decline a neighbour's lease, nor move the
// neighbour's anti-spoofing binding to its own port.
//
// The holder of a MAC is the port attach bound it to, or else the port of
// its lease while that lease binds it (see PortBinder.Holders: not expired,
// and the port still a port of the network's bridge). A MAC whose VM really
// moved (its old TAP deleted or detached, as when QEMU exits after a
// migration) has no holder any more: the message from the new port is
// taken, and its lease and binding follow it there.
//
// This is the second line: table bridge guestnet drops such messages in
// the kernel already, before the bridge learns their source MAC. It also
// catches the one case user space cannot see: a message naming a
// neighbour's MAC (chaddr) sent from the attacker's own MAC, for which the
// bridge's forwarding database still names the neighbour's port.

// ForeignLogEvery bounds the warnings about dropped messages: at most one
// per handler in this time, with the count of the ones in between.
const ForeignLogEvery = 10 * time.Second

// foreignPort locates the sender of a message naming mac and reports
// whether it must be dropped: the sender's port is known and is not among
// the ports holding mac's binding. It counts and logs a drop. port's Name is ""
// when the sender cannot be placed; then nothing is dropped here (and a
// REQUEST keeps the port of the lease it renews).
func (h *Handler) foreignPort(req *dhcpv4.DHCPv4, mac string) (port PortID, foreign bool) {
	if h.Ports == nil {
		return PortID{}, false
	}
	if port = h.locateID(mac); port.Name == "" {
		return PortID{}, false
	}
	l, _ := h.Pool.Lookup(mac)
	holders := h.Ports.Holders(mac, l)
	if len(holders) == 0 || slices.Contains(holders, port.Name) {
		return port, false
	}
	h.Stats.Foreign.Add(1)
	if n, ok := h.foreignWarn.allow(h.now()); ok {
		h.Log.Warn("dhcp: dropped a message naming a MAC bound to another port (a guest asking for a neighbour's lease?)",
			"type", req.MessageType().String(), "mac", mac, "from_port", port.Name, "bound_to", holders[0],
			"dropped_since_last_warning", n)
	}
	return port, true
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// warnLimit lets one warning through per ForeignLogEvery and counts the
// ones it holds back.
type warnLimit struct {
	mu   sync.Mutex
	last time.Time
	held uint64
}

// allow reports whether to warn now, and how many warnings were held back
// since the last one.
func (w *warnLimit) allow(now time.Time) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.last.IsZero() && now.Sub(w.last) < ForeignLogEvery {
		w.held++
		return 0, false
	}
	n := w.held
	w.last, w.held = now, 0
	return n, true
}
