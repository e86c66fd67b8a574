package dhcp

import (
	"errors"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// ErrNoQuorum is what a Store returns when it cannot make a lease durable
// now because its cluster is out of reach (a stretched network's etcd lost
// its quorum). The handler then grants no new lease and extends none; it
// ACKs a renewal of a lease this host wrote with the time that lease has
// left, which needs no write: the address is that client's until then.
var ErrNoQuorum = errors.New("the lease cluster has no quorum")

// unstored answers a REQUEST whose lease the store refused. A renewal by
// the client of a live lease this host wrote, from the port that lease is
// bound to (or an unknown one), is ACKed with the lease's remaining time
// when the cluster is out of reach; anything else gets no reply (the
// client retries, and keeps an address it has until its own timer ends).
func (h *Handler) unstored(req *dhcpv4.DHCPv4, mac string, a netip.Addr, port PortID, err error) *dhcpv4.DHCPv4 {
	h.Stats.StoreErrors.Add(1)
	if !errors.Is(err, ErrNoQuorum) {
		h.Log.Error("dhcp lease store", "err", err)
		return nil
	}
	if left := h.Pool.Remaining(mac, a); left >= time.Second {
		if l, _ := h.Pool.Lookup(mac); port.Name == "" || l.Port == port.Name {
			h.Stats.Held.Add(1)
			h.Stats.Ack.Add(1)
			h.Log.Info("dhcp lease renewed without extension: the lease cluster has no quorum",
				"mac", mac, "ip", a, "left", left.Truncate(time.Second).String(), "err", err)
			return h.replyFor(req, dhcpv4.MessageTypeAck, a, left.Truncate(time.Second))
		}
	}
	h.noQuorum("REQUEST", mac, a, err)
	return nil
}

// noQuorum counts and logs (at most once per ForeignLogEvery) a message
// refused because the lease cluster is out of reach: a REQUEST whose
// lease cannot be stored, or a DISCOVER that needed a new block.
func (h *Handler) noQuorum(typ, mac string, a netip.Addr, err error) {
	h.Stats.NoQuorum.Add(1)
	if n, ok := h.quorumWarn.allow(h.now()); ok {
		h.Log.Warn("dhcp: new lease refused: the lease cluster (etcd) is out of reach; only renewals of leases this host wrote are answered, with their remaining time",
			"type", typ, "mac", mac, "ip", a, "err", err, "refused_since_last_warning", n)
	}
}
