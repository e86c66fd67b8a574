package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Store keeps leases durably: Put and Delete return only once the change
// is on disk.
type Store interface {
	Load(network string) ([]Lease, error)
	Put(network string, l Lease) error
	Delete(network string, ip netip.Addr) error
}

// Stats counts what a handler did.
type Stats struct {
	Discover, Request, Release, Decline, Inform atomic.Uint64
	Offer, Ack, Nak, Exhausted, Ignored         atomic.Uint64
	StoreErrors                                 atomic.Uint64
	Foreign                                     atomic.Uint64 // naming a MAC bound to another port
	// Relayed counts messages with giaddr set: guestnet serves guests on
	// its bridge only and takes no relayed message (they count as Ignored
	// too).
	Relayed atomic.Uint64
	// BadName counts REQUESTs whose host name was refused (CleanHostname):
	// their lease was granted without a name.
	BadName atomic.Uint64
	// PortFull counts DISCOVERs left unanswered and REQUESTs NAKed because
	// the client's port already had its share of the pool (model.DHCP.PerPort).
	PortFull atomic.Uint64
	// NoQuorum counts REQUESTs for a new or extended lease the store
	// could not make durable because its cluster is out of reach
	// (ErrNoQuorum); Held counts the renewals ACKed meanwhile with the
	// lease's remaining time.
	NoQuorum, Held atomic.Uint64
}

// Handler answers the DHCP requests of one network.
type Handler struct {
	Pool  *Pool
	Store Store
	Log   *slog.Logger
	Stats Stats
	// Ports, when set, binds each lease to the port its client sends from.
	Ports PortBinder
	// Prober, when set, checks with ARP an address the pool has no record
	// of before it is offered (probe.go).
	Prober Prober
	Probes ProbeStats
	// prefetching sizes the probes made in advance to the stream of new
	// clients (probe.go).
	prefetching prefetchState

	logMu      sync.Mutex
	warned     time.Time         // when the last "pool exhausted" line was written
	unanswered int               // DISCOVERs left unanswered since that line
	nameLogged map[string]string // MAC -> the taken host name already logged
	expired    expiries          // lease expiries already logged (LogExpired)
	// answers: MAC -> the addresses it answered ARP for, and when (believe)
	answers map[string]map[netip.Addr]time.Time

	// Now is the clock of the warnings about foreign ports (nil: time.Now).
	Now         func() time.Time
	foreignWarn warnLimit
	relayWarn   warnLimit
	nameWarn    warnLimit
	portWarn    warnLimit
	liarWarn    warnLimit
	quorumWarn  warnLimit
}

// ExhaustedEvery is how often at most an exhausted pool is logged.
const ExhaustedEvery = time.Minute

// PortBinder ties leases to bridge ports (anti-spoofing). Locate names the
// port a MAC was last seen on (Name "" if unknown); Holders names the ports
// that hold a MAC's binding (see foreignPort); Bound is told of a stored
// lease before its ACK leaves; Unbound of one that ended.
type PortBinder interface {
	Locate(mac string) PortID
	Holders(mac string, l Lease) []string
	Bound(l Lease)
	Unbound(l Lease)
}

func ip4(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// Handle returns the reply to req, or nil for silence (not for us,
// exhausted pool, RELEASE/DECLINE, or a lease that could not be stored).
func (h *Handler) Handle(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		h.Stats.Ignored.Add(1)
		return nil
	}
	mac := req.ClientHWAddr.String()
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		h.relayed(req, mac)
		return nil
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		h.Stats.Discover.Add(1)
		return h.discover(req, mac)
	case dhcpv4.MessageTypeRequest:
		h.Stats.Request.Add(1)
		return h.request(req, mac)
	case dhcpv4.MessageTypeRelease:
		h.Stats.Release.Add(1)
		if _, foreign := h.foreignPort(req, mac); foreign {
			return nil
		}
		if l, ok := h.Pool.Release(mac, addrOf(req.ClientIPAddr)); ok {
			h.store(func() error { return h.Store.Delete(h.Pool.cfg.Network, l.IP) })
			if h.Ports != nil {
				h.Ports.Unbound(l)
			}
			h.Log.Info("dhcp lease released", "mac", mac, "ip", l.IP, "hostname", l.Hostname, "port", l.Port)
		}
		return nil
	case dhcpv4.MessageTypeDecline:
		h.Stats.Decline.Add(1)
		port, foreign := h.foreignPort(req, mac)
		if foreign {
			return nil
		}
		a := addrOf(req.RequestedIPAddress())
		l, ok := h.Pool.Decline(mac, a)
		if !ok {
			// Only the holder of an address may decline it (as in Kea).
			h.Log.Debug("dhcp decline ignored: the address is not this client's", "mac", mac, "ip", a)
			return nil
		}
		h.store(func() error { return h.Store.Put(h.Pool.cfg.Network, l) })
		if h.Ports != nil {
			h.Ports.Unbound(l)
		}
		h.Log.Warn("dhcp lease declined: address quarantined", "mac", mac, "ip", l.IP, "port", port.Name, "until", l.Expiry.Format(time.RFC3339))
		return nil
	case dhcpv4.MessageTypeInform:
		h.Stats.Inform.Add(1)
		if !h.onLink(req.ClientIPAddr) {
			// The ACK of an INFORM goes to ciaddr (RFC 2131 4.3.5): one
			// outside the subnet would send it off the link, to anyone.
			h.Stats.Ignored.Add(1)
			h.Log.Debug("dhcp inform ignored: ciaddr is not on the network", "mac", mac, "ciaddr", req.ClientIPAddr)
			return nil
		}
		return h.reply(req, dhcpv4.MessageTypeAck, netip.Addr{}, false)
	}
	h.Stats.Ignored.Add(1)
	return nil
}

func (h *Handler) store(f func() error) error {
	err := f()
	if err != nil {
		h.Stats.StoreErrors.Add(1)
		h.Log.Error("dhcp lease store", "err", err)
	}
	return err
}

func (h *Handler) discover(req *dhcpv4.DHCPv4, mac string) *dhcpv4.DHCPv4 {
	requested := addrOf(req.RequestedIPAddress())
	port := h.locate(mac)
	a, ok := h.offer(mac, requested, port)
	if !ok {
		return nil
	}
	if a, ok = h.probed(mac, requested, port, a); !ok {
		return nil // every address tried answers ARP (logged)
	}
	h.Stats.Offer.Add(1)
	return h.reply(req, dhcpv4.MessageTypeOffer, a, true)
}

func (h *Handler) request(req *dhcpv4.DHCPv4, mac string) *dhcpv4.DHCPv4 {
	server := h.Pool.cfg.Server
	if sid := addrOf(req.ServerIdentifier()); sid.IsValid() && sid != server.Addr() {
		return nil // the client chose another server's offer
	}
	a := addrOf(req.RequestedIPAddress())
	if !a.IsValid() {
		a = addrOf(req.ClientIPAddr) // renewing or rebinding
	}
	if !a.IsValid() {
		h.Stats.Ignored.Add(1)
		return nil
	}
	port, foreign := h.foreignPort(req, mac)
	if foreign {
		return nil // not NAKed: a NAK is broadcast, to the holder's port too
	}
	b, ok := h.Pool.BindPort(mac, a, h.hostname(req, mac), port)
	l := b.Lease
	if ok && !server.Masked().Contains(a) {
		h.Pool.Unbind(b)
		ok = false
	}
	if !ok {
		if b.PortFull {
			h.portFull(req, mac, port.Name)
		}
		h.Stats.Nak.Add(1)
		h.Log.Info("dhcp nak", "mac", mac, "ip", a)
		return h.reply(req, dhcpv4.MessageTypeNak, netip.Addr{}, false)
	}
	if err := h.Store.Put(h.Pool.cfg.Network, l); err != nil {
		h.Pool.Unbind(b)
		return h.unstored(req, mac, a, port, err) // never ACK a lease that is not stored
	}
	if b.Ended.IP.IsValid() {
		// The client moved: its old address is free again, on disk too.
		h.store(func() error { return h.Store.Delete(h.Pool.cfg.Network, b.Ended.IP) })
	}
	h.nameTaken(mac, b.NameTaken, l.Hostname)
	if h.Ports != nil {
		h.Ports.Bound(l) // the port may send from its address once the ACK arrives
		if replaced(b) {
			h.Ports.Unbound(b.Prev) // its binding goes, at the next sync
		}
		if b.Ended.IP.IsValid() {
			h.Ports.Unbound(b.Ended)
		}
	}
	h.Stats.Ack.Add(1)
	event := "dhcp lease granted"
	if p := b.Prev; p.MAC == mac && p.IP == a && !p.Declined && p.Expiry.After(l.Expiry.Add(-h.Pool.cfg.Lease)) {
		event = "dhcp lease renewed" // the client's own live lease, extended
	}
	h.Log.Info(event, "mac", mac, "ip", a, "hostname", l.Hostname, "port", l.Port, "until", l.Expiry.Format(time.RFC3339))
	return h.reply(req, dhcpv4.MessageTypeAck, a, true)
}

// replaced reports whether the lease of b took the place of a record
// whose port binding differs from its own: another client's at the same
// address, or the same client's on another port. A new address, or a
// client renewing from its port, replaces no binding.
func replaced(b Binding) bool {
	p := b.Prev
	return p.IP.IsValid() && (p.MAC != b.Lease.MAC || p.Port != b.Lease.Port)
}

// LocateTries and LocateEvery bound the wait for the bridge's forwarding
// database to place a DISCOVER's client: the bridge learns its MAC as the
// frame passes, but the daemon may not have read that yet when a burst of
// new clients arrives. Each request has its own goroutine: the wait holds
// up no one else.
const (
	LocateTries = 5
	LocateEvery = 20 * time.Millisecond
)

// locate names the bridge port mac was last seen on, "" when unknown (no
// PortBinder, or the bridge has not learnt it).
func (h *Handler) locate(mac string) string { return h.locateID(mac).Name }

// locateID is the identity of the port mac was last seen on, waiting up
// to LocateTries*LocateEvery for the forwarding database to place it.
func (h *Handler) locateID(mac string) PortID {
	if h.Ports == nil {
		return PortID{}
	}
	for i := 1; ; i++ {
		if port := h.Ports.Locate(mac); port.Name != "" || i == LocateTries {
			return port
		}
		time.Sleep(LocateEvery)
	}
}

// offer holds an address for a DISCOVER from port. It returns ok false,
// counted and logged, when the pool is exhausted (after trying to reclaim
// an abandoned address) or the port holds its share of the pool (silence:
// the DISCOVER goes unanswered, as with an exhausted pool).
func (h *Handler) offer(mac string, requested netip.Addr, port string) (netip.Addr, bool) {
	a, err := h.Pool.OfferFrom(mac, requested, port)
	if errors.Is(err, ErrExhausted) {
		if a, rerr := h.reclaim(mac, port); rerr == nil || !errors.Is(err, ErrNoQuorum) {
			return h.offered(a, rerr, mac, requested, port)
		}
	}
	return h.offered(a, err, mac, requested, port)
}

// offered sorts out OfferFrom's (or Reclaim's) answer.
func (h *Handler) offered(a netip.Addr, err error, mac string, requested netip.Addr, port string) (netip.Addr, bool) {
	switch {
	case errors.Is(err, ErrPortFull):
		h.portFull(nil, mac, port)
		return a, false
	case errors.Is(err, ErrNoQuorum): // no block could be claimed
		h.noQuorum("DISCOVER", mac, requested, err)
		return a, false
	case err != nil:
		h.Stats.Exhausted.Add(1)
		h.exhausted(mac)
		return a, false
	}
	return a, true
}

// portFull counts and logs (rate-limited) a message refused by the port's
// cap (model.DHCP.PerPort).
func (h *Handler) portFull(req *dhcpv4.DHCPv4, mac, port string) {
	h.Stats.PortFull.Add(1)
	if n, ok := h.portWarn.allow(h.now()); ok {
		typ := "DISCOVER"
		if req != nil {
			typ = req.MessageType().String()
		}
		h.Log.Warn("dhcp: a port asked for more addresses than its share of the pool (a guest inventing client MACs?): refused",
			"type", typ, "mac", mac, "port", port, "per_port", h.Pool.cfg.PerPort, "refused_since_last_warning", n)
	}
}

// reclaim gives an exhausted pool's oldest abandoned address back
// (Pool.Reclaim), to be probed again before it is offered.
func (h *Handler) reclaim(mac, port string) (netip.Addr, error) {
	a, err := h.Pool.Reclaim(mac, port)
	if err == nil {
		// Off the disk too: the pool and the store agree, and a restart
		// does not bring the quarantine back.
		h.store(func() error { return h.Store.Delete(h.Pool.cfg.Network, a) })
		h.Log.Info("dhcp pool exhausted: reclaiming the oldest abandoned address (checked with ARP again before the offer)",
			"ip", a, "client", mac)
	}
	return a, err
}

// relayed drops a message that came through a relay (giaddr set):
// guestnet's server binds to one bridge with its guests directly on it,
// and a guest that sets giaddr itself would make the server send the
// reply to any address it likes (RFC 2131 4.1: replies go to giaddr:67).
func (h *Handler) relayed(req *dhcpv4.DHCPv4, mac string) {
	h.Stats.Relayed.Add(1)
	h.Stats.Ignored.Add(1)
	if n, ok := h.relayWarn.allow(h.now()); ok {
		h.Log.Warn("dhcp: dropped a relayed message (giaddr set): guestnet serves only the guests on its bridge and supports no relay",
			"type", req.MessageType().String(), "mac", mac, "giaddr", req.GatewayIPAddr, "dropped_since_last_warning", n)
	}
}

// onLink reports whether ip is an address of the network's subnet.
func (h *Handler) onLink(ip net.IP) bool {
	a := addrOf(ip)
	return a.IsValid() && h.Pool.cfg.Server.Masked().Contains(a)
}

// hostname is the host name a REQUEST asks for, as guestnet keeps it
// (CleanHostname); a refused one is counted and logged (rate-limited).
func (h *Handler) hostname(req *dhcpv4.DHCPv4, mac string) string {
	asked := req.HostName()
	kept, refused := CleanHostname(asked)
	if refused != "" {
		h.Stats.BadName.Add(1)
		if n, ok := h.nameWarn.allow(h.now()); ok {
			h.Log.Warn("dhcp: host name refused, lease granted without a name: "+refused,
				"mac", mac, "hostname", quoteName(asked), "refused_since_last_warning", n)
		}
	}
	return kept
}

// quoteName shortens a name a client sent for the log: at most 64 bytes
// (slog's handlers quote and escape what is not printable).
func quoteName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// exhausted logs a DISCOVER the pool had no address for: at most one
// line per ExhaustedEvery (by the pool's clock), with the number of
// DISCOVERs left unanswered since the previous line. A flood of clients
// must not turn into a flood of log lines.
func (h *Handler) exhausted(mac string) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	h.unanswered++
	now := h.Pool.now()
	if !h.warned.IsZero() && now.Sub(h.warned) < ExhaustedEvery {
		return
	}
	// h.Log names the network (the daemon gives each handler its own).
	h.Log.Warn("dhcp pool exhausted: no address to offer",
		"unanswered", h.unanswered, "last_mac", mac, "size", h.Pool.Size())
	h.warned, h.unanswered = now, 0
}

// nameTaken logs, once per client and name, that a client did not get
// the host name it asked for because another client holds it.
func (h *Handler) nameTaken(mac, taken, got string) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	if taken == "" {
		if got != "" {
			delete(h.nameLogged, mac)
		}
		return
	}
	if h.nameLogged[mac] == taken {
		return
	}
	if h.nameLogged == nil {
		h.nameLogged = map[string]string{}
	}
	h.nameLogged[mac] = taken
	h.Log.Info("dhcp hostname already in use: lease granted without it", "mac", mac, "hostname", taken)
}

// reply builds an OFFER, ACK or NAK with the network's options; lease
// adds the network's lease time.
func (h *Handler) reply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, yiaddr netip.Addr, lease bool) *dhcpv4.DHCPv4 {
	var d time.Duration
	if lease {
		d = h.Pool.cfg.Lease
	}
	return h.replyFor(req, t, yiaddr, d)
}

// replyFor is reply with a lease time of d (none when 0).
func (h *Handler) replyFor(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, yiaddr netip.Addr, d time.Duration) *dhcpv4.DHCPv4 {
	cfg := h.Pool.cfg
	srv := ip4(cfg.Server.Addr())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srv)),
		dhcpv4.WithServerIP(srv),
	}
	if yiaddr.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(ip4(yiaddr)))
	}
	if t != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithNetmask(net.CIDRMask(cfg.Server.Bits(), 32)),
			dhcpv4.WithOption(dhcpv4.OptRouter(srv)))
		if len(cfg.DNS) > 0 {
			dns := make([]net.IP, len(cfg.DNS))
			for i, d := range cfg.DNS {
				dns[i] = ip4(d)
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
		}
		if cfg.Domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(cfg.Domain)))
		}
		if cfg.MTU != 0 {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(cfg.MTU))))
		}
		if len(cfg.Routes) > 0 {
			// A client that takes option 121 ignores option 3 (RFC 3442):
			// the default route goes in as well.
			rs := []*dhcpv4.Route{{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: srv}}
			for _, r := range cfg.Routes {
				rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: ip4(r.To.Addr()), Mask: net.CIDRMask(r.To.Bits(), 32)}, Router: ip4(r.Via)})
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(rs...)))
		}
	}
	if d > 0 {
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(d)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(d/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(d*7/8)))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		h.Log.Error("dhcp reply", "err", fmt.Errorf("build %s: %w", t, err))
		return nil
	}
	return resp
}
