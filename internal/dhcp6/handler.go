package dhcp6

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/guestnet/guestnet/internal/dhcp"
)

// Store keeps DHCPv6 leases durably (*dhcp.BoltStore).
type Store interface {
	Put6(network string, l dhcp.Lease6) error
	Delete6(network string, ip netip.Addr) error
}

var _ Store = (*dhcp.BoltStore)(nil)

// PortBinder is told where a client sits and which leases begin and end:
// IPv6 anti-spoofing binds a lease's port, MAC and address (the daemon's
// seam for it). nil binds nothing.
type PortBinder interface {
	// Locate is the bridge port a MAC sends from (the forwarding
	// database), the zero PortID when unknown.
	Locate(mac string) dhcp.PortID
	// Bound is called once a lease is on disk, before its Reply leaves.
	Bound(l dhcp.Lease6)
	// Unbound is called when a lease ends (Release, Decline) or is
	// replaced by another.
	Unbound(l dhcp.Lease6)
}

// Stats counts what a handler did.
type Stats struct {
	Advertised, Replied, Released, Declined, NoAddrs, PortFull, Foreign, Dropped, StoreErrors atomic.Uint64
}

// Handler answers one network's DHCPv6 messages.
type Handler struct {
	Pool  *Pool
	Store Store
	Log   *slog.Logger
	Ports PortBinder // nil: no anti-spoofing
	// MACOf is the MAC of the client whose message came from src (its
	// link-local address), when the DUID does not carry one: the
	// kernel's neighbour entry of src on the bridge. nil or "" unknown.
	MACOf func(src netip.Addr) string
	Stats Stats

	lastFull     atomic.Int64 // when "no address left" was last logged (unix ns)
	lastPortFull atomic.Int64 // when a port's cap was last logged
	lastForeign  atomic.Int64 // when a foreign message was last logged
}

// exhausted logs a full pool at most once a minute (a client retries its
// Solicit every few seconds; a flood of them must not flood the log).
func (h *Handler) exhausted(duid string) {
	h.Stats.NoAddrs.Add(1)
	now := time.Now().UnixNano()
	last := h.lastFull.Load()
	if now-last < int64(time.Minute) || !h.lastFull.CompareAndSwap(last, now) {
		return
	}
	h.Log.Warn("dhcp6: no address left in the range; clients go without (see guestnet leases)",
		"network", h.Pool.cfg.Network, "duid", duid, "unanswered", h.Stats.NoAddrs.Load())
}

// locate is the bridge port mac sits on, the zero PortID when unknown.
func (h *Handler) locate(mac string) dhcp.PortID {
	if h.Ports == nil || mac == "" {
		return dhcp.PortID{}
	}
	return h.Ports.Locate(mac)
}

// clientPort is the port of a client with mac (h.mac) whose message came
// from src: where the sender's frames come from, else where mac sits. The
// sender first: a DUID-LLT made on another NIC (of the same guest, or
// copied with a VM image) names a MAC the bridge never saw or saw on
// another port, and the port the lease binds is the one its frames use.
func (h *Handler) clientPort(mac string, src netip.Addr) dhcp.PortID {
	if m := h.senderMAC(src); m != "" {
		if p := h.locate(m); p.Name != "" {
			return p
		}
	}
	return h.locate(mac)
}

// senderMAC is the MAC of the frames src sends from: its modified EUI-64
// interface identifier, else its neighbour entry; "" when unknown. Not
// the DUID's, which the client writes as it likes.
func (h *Handler) senderMAC(src netip.Addr) string {
	if src.IsLinkLocalUnicast() {
		if m := eui64MAC(src); m != "" {
			return m
		}
	}
	if h.MACOf != nil {
		return h.MACOf(src)
	}
	return ""
}

// portFull counts and logs, at most once a minute, an IA refused by the
// port's cap (Config.PerPort).
func (h *Handler) portFull(duid, port string) {
	h.Stats.PortFull.Add(1)
	now := time.Now().UnixNano()
	last := h.lastPortFull.Load()
	if now-last < int64(time.Minute) || !h.lastPortFull.CompareAndSwap(last, now) {
		return
	}
	h.Log.Warn("dhcp6: a port asked for more addresses than its share of the range (a guest inventing DUIDs or IAs?): refused",
		"network", h.Pool.cfg.Network, "duid", duid, "port", port, "per_port", h.Pool.cfg.PerPort, "refused", h.Stats.PortFull.Load())
}

// senderPort is the bridge port a message from src came through (by
// senderMAC), "" when unknown.
func (h *Handler) senderPort(src netip.Addr) string {
	return h.locate(h.senderMAC(src)).Name
}

// foreign is the port msg came through when it speaks for an IA whose
// live lease is bound through another port, holder, whose client still
// sits there: a guest that learnt another's DUID and IAID (Solicits are
// multicast, every guest on the bridge sees them) speaking in its name,
// to end its lease or to move it to its own port (where IPv6
// anti-spoofing would bind the address). A client that moved (its MAC
// is on the new port now) is not foreign. "" when msg is not foreign or
// its port is unknown (no neighbour entry, no EUI-64 source: the server
// cannot tell), except for a Release or Decline, which only a placed
// sender may send for a lease bound to a port.
func (h *Handler) foreign(msg *dhcpv6.Message, cid dhcpv6.DUID, src netip.Addr) (port, holder string) {
	if h.Ports == nil {
		return "", ""
	}
	duid := DUIDString(cid)
	var sender string
	for _, ia := range msg.Options.IANA() {
		l, ok := h.Pool.Lease(duid, iaidOf(ia))
		if !ok || l.Port == "" {
			continue
		}
		if sender == "" {
			if sender = h.senderPort(src); sender == "" {
				if msg.MessageType == dhcpv6.MessageTypeRelease || msg.MessageType == dhcpv6.MessageTypeDecline {
					// Ending a lease bound to a port is for a sender the
					// server can place: an honest client's Release that is
					// ignored costs only the lease running out (and a
					// client declining the address it was just given is
					// placeable: the Reply made its neighbour entry).
					return "(unknown port)", l.Port
				}
				return "", ""
			}
		}
		if l.Port != sender && (l.MAC == "" || h.Ports.Locate(l.MAC).Name == l.Port) {
			return sender, l.Port
		}
	}
	return "", ""
}

// foreignDrop counts and logs, at most once a minute, a message dropped
// by foreign.
func (h *Handler) foreignDrop(msg *dhcpv6.Message, cid dhcpv6.DUID, port, holder string) *dhcpv6.Message {
	h.Stats.Foreign.Add(1)
	now := time.Now().UnixNano()
	last := h.lastForeign.Load()
	if now-last >= int64(time.Minute) && h.lastForeign.CompareAndSwap(last, now) {
		h.Log.Warn("dhcp6: a guest spoke in the name of a client whose lease is bound to another port (a stolen DUID?): dropped",
			"network", h.Pool.cfg.Network, "type", msg.MessageType, "duid", DUIDString(cid), "port", port, "lease_port", holder,
			"dropped", h.Stats.Foreign.Load())
	}
	return nil
}

// ServerDUID is the server's DUID on a network: a DUID-UUID (RFC 6355)
// derived from the network's name, so that it stays the same across
// restarts and bridge re-creations with no state of its own (clients
// renew with the server ID they were given).
func ServerDUID(network string) dhcpv6.DUID {
	sum := sha256.Sum256([]byte("guestnet dhcpv6 server " + network))
	var u [16]byte
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x50 // version 5 (name-based)
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return &dhcpv6.DUIDUUID{UUID: u}
}

// DUIDString is a DUID's bytes in model.StaticHost6's form: lower-case
// hex, colon-separated.
func DUIDString(d dhcpv6.DUID) string {
	b := d.ToBytes()
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(hex.EncodeToString([]byte{x}))
	}
	return sb.String()
}

// duidMAC is the link-layer address a DUID-LLT or DUID-LL carries, for an
// Ethernet client.
func duidMAC(d dhcpv6.DUID) string {
	var hw net.HardwareAddr
	switch d := d.(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet {
			hw = d.LinkLayerAddr
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet {
			hw = d.LinkLayerAddr
		}
	}
	if len(hw) != 6 {
		return ""
	}
	return hw.String()
}

// eui64MAC is the MAC inside a modified EUI-64 interface identifier
// (RFC 4291 Appendix A), "" when a has none (a stable-privacy address).
func eui64MAC(a netip.Addr) string {
	b := a.As16()
	if b[11] != 0xff || b[12] != 0xfe {
		return ""
	}
	return net.HardwareAddr{b[8] ^ 0x02, b[9], b[10], b[13], b[14], b[15]}.String()
}

// mac is the client's MAC: from its DUID (LL or LLT), else from its
// link-local address (modified EUI-64), else the bridge's neighbour entry.
func (h *Handler) mac(duid dhcpv6.DUID, src netip.Addr) string {
	if m := duidMAC(duid); m != "" {
		return m
	}
	if src.IsLinkLocalUnicast() {
		if m := eui64MAC(src); m != "" {
			return m
		}
	}
	if h.MACOf != nil {
		return h.MACOf(src)
	}
	return ""
}

// Handle answers msg, which came from src (the client's link-local
// address); nil means no answer (the message is not for this server or
// is malformed: RFC 8415 §16 says discard).
func (h *Handler) Handle(msg *dhcpv6.Message, src netip.Addr) *dhcpv6.Message {
	cid := msg.Options.ClientID()
	sid := msg.Options.ServerID()
	ours := ServerDUID(h.Pool.cfg.Network)
	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm:
		// §16.2, §16.5, §16.8: a client ID, no server ID.
		if cid == nil || sid != nil {
			return h.drop(msg, "client ID missing or server ID present")
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		// §16.4, §16.6, §16.9, §16.10: both, and the server ID ours.
		if cid == nil || sid == nil || !sid.Equal(ours) {
			return nil // for another server: not ours to answer, nothing wrong
		}
	case dhcpv6.MessageTypeInformationRequest:
		if sid != nil && !sid.Equal(ours) {
			return nil
		}
	default:
		return h.drop(msg, "not a client message")
	}
	if msg.MessageType != dhcpv6.MessageTypeInformationRequest && msg.MessageType != dhcpv6.MessageTypeConfirm {
		if port, holder := h.foreign(msg, cid, src); port != "" {
			return h.foreignDrop(msg, cid, port, holder)
		}
	}
	switch msg.MessageType {
	case dhcpv6.MessageTypeInformationRequest:
		rep := h.reply(msg, dhcpv6.MessageTypeReply, ours)
		h.Stats.Replied.Add(1)
		return rep
	case dhcpv6.MessageTypeConfirm:
		return h.confirm(msg, ours)
	case dhcpv6.MessageTypeSolicit:
		if msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			rep := h.reply(msg, dhcpv6.MessageTypeReply, ours)
			rep.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
			h.bindAll(msg, rep, cid, src, false)
			h.Stats.Replied.Add(1)
			return rep
		}
		rep := h.reply(msg, dhcpv6.MessageTypeAdvertise, ours)
		h.advertise(msg, rep, cid, src)
		h.Stats.Advertised.Add(1)
		return rep
	case dhcpv6.MessageTypeRequest:
		rep := h.reply(msg, dhcpv6.MessageTypeReply, ours)
		h.bindAll(msg, rep, cid, src, false)
		h.Stats.Replied.Add(1)
		return rep
	case dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		rep := h.reply(msg, dhcpv6.MessageTypeReply, ours)
		h.bindAll(msg, rep, cid, src, true)
		h.Stats.Replied.Add(1)
		return rep
	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		return h.release(msg, cid, ours)
	}
	return nil
}

func (h *Handler) drop(msg *dhcpv6.Message, why string) *dhcpv6.Message {
	h.Stats.Dropped.Add(1)
	h.Log.Debug("dhcp6: dropped", "type", msg.MessageType, "why", why)
	return nil
}

// reply starts an answer of type t: the transaction ID, the client's and
// the server's IDs, and DNS servers and search list when the network has
// them (every reply may carry them; clients take what they asked for).
func (h *Handler) reply(msg *dhcpv6.Message, t dhcpv6.MessageType, sid dhcpv6.DUID) *dhcpv6.Message {
	rep := &dhcpv6.Message{MessageType: t, TransactionID: msg.TransactionID}
	if cid := msg.GetOneOption(dhcpv6.OptionClientID); cid != nil {
		rep.AddOption(cid)
	}
	rep.AddOption(dhcpv6.OptServerID(sid))
	cfg := h.Pool.cfg
	if len(cfg.DNS) > 0 {
		var ips []net.IP
		for _, a := range cfg.DNS {
			ips = append(ips, a.AsSlice())
		}
		rep.AddOption(dhcpv6.OptDNS(ips...))
	}
	if cfg.Domain != "" {
		rep.AddOption(dhcpv6.OptDomainSearchList(&rfc1035label.Labels{Labels: []string{cfg.Domain}}))
	}
	return rep
}

func status(code iana.StatusCode, text string) *dhcpv6.OptStatusCode {
	return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: text}
}

// lifetimes are an address's preferred and valid lifetimes and the IA's
// T1 and T2 (RFC 8415 §21.4: 0.5 and 0.8 of the preferred lifetime).
func (h *Handler) lifetimes() (pref, valid, t1, t2 time.Duration) {
	valid = h.Pool.cfg.Lease
	pref = valid * 5 / 8
	return pref, valid, pref / 2, pref * 4 / 5
}

func (h *Handler) ia(iaid [4]byte, a netip.Addr) *dhcpv6.OptIANA {
	pref, valid, t1, t2 := h.lifetimes()
	ia := &dhcpv6.OptIANA{IaId: iaid, T1: t1, T2: t2}
	ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice(), PreferredLifetime: pref, ValidLifetime: valid})
	return ia
}

func iaidOf(ia *dhcpv6.OptIANA) uint32 {
	return uint32(ia.IaId[0])<<24 | uint32(ia.IaId[1])<<16 | uint32(ia.IaId[2])<<8 | uint32(ia.IaId[3])
}

// hint is the address a client asked for in its IA, if any.
func hint(ia *dhcpv6.OptIANA) netip.Addr {
	if a := ia.Options.OneAddress(); a != nil {
		if ip, ok := netip.AddrFromSlice(a.IPv6Addr); ok {
			return ip
		}
	}
	return netip.Addr{}
}

// advertise offers an address for each IA_NA (§18.3.1); NoAddrsAvail in
// the IA when the pool is full.
func (h *Handler) advertise(msg, rep *dhcpv6.Message, cid dhcpv6.DUID, src netip.Addr) {
	duid, mac := DUIDString(cid), h.mac(cid, src)
	port := h.clientPort(mac, src)
	for _, ia := range msg.Options.IANA() {
		a, ok := h.Pool.Offer(duid, iaidOf(ia), mac, hint(ia))
		if ok && h.Pool.PortFull(port.Name, duid, iaidOf(ia), mac, a) {
			h.portFull(duid, port.Name)
			out := &dhcpv6.OptIANA{IaId: ia.IaId}
			out.Options.Add(status(iana.StatusNoAddrsAvail, "this port holds its share of the range"))
			rep.AddOption(out)
			continue
		}
		if !ok {
			h.exhausted(duid)
			out := &dhcpv6.OptIANA{IaId: ia.IaId}
			out.Options.Add(status(iana.StatusNoAddrsAvail, "no addresses available"))
			rep.AddOption(out)
			continue
		}
		rep.AddOption(h.ia(ia.IaId, a))
	}
}

// bindAll grants each IA_NA its address and stores the leases before the
// Reply leaves (§18.3.2 Request, §18.3.4 Renew, §18.3.5 Rebind). renew:
// the client names addresses it holds; one it may not keep (another
// client's now, outside the ranges) comes back with lifetimes 0 and the
// address it may have instead (RFC 8415 §18.3.4).
func (h *Handler) bindAll(msg, rep *dhcpv6.Message, cid dhcpv6.DUID, src netip.Addr, renew bool) {
	duid, mac := DUIDString(cid), h.mac(cid, src)
	port := h.clientPort(mac, src)
	for _, ia := range msg.Options.IANA() {
		iaid := iaidOf(ia)
		want := hint(ia)
		out := &dhcpv6.OptIANA{IaId: ia.IaId}
		a, ok := h.Pool.Offer(duid, iaid, mac, want)
		if ok && h.Pool.PortFull(port.Name, duid, iaid, mac, a) {
			h.portFull(duid, port.Name)
			out.Options.Add(status(iana.StatusNoAddrsAvail, "this port holds its share of the range"))
			rep.AddOption(out)
			continue
		}
		if !ok {
			h.exhausted(duid)
			if renew {
				out.Options.Add(status(iana.StatusNoBinding, "no binding for this IA"))
			} else {
				out.Options.Add(status(iana.StatusNoAddrsAvail, "no addresses available"))
			}
			rep.AddOption(out)
			continue
		}
		l, replaced, ok := h.Pool.Bind(dhcp.Lease6{DUID: duid, IAID: iaid, IP: a, MAC: mac,
			Hostname: h.Pool.hostname(duid, mac, msg), Port: port.Name, PortIndex: port.Index, PortHW: port.HW})
		if !ok {
			out.Options.Add(status(iana.StatusNoAddrsAvail, "the address was taken meanwhile"))
			rep.AddOption(out)
			continue
		}
		if err := h.Store.Put6(h.Pool.cfg.Network, l); err != nil {
			h.Stats.StoreErrors.Add(1)
			h.Log.Error("dhcp6: store the lease; the client is not answered, it asks again", "network", h.Pool.cfg.Network, "ip", l.IP, "err", err)
			out.Options.Add(status(iana.StatusUnspecFail, "the lease could not be stored"))
			rep.AddOption(out)
			continue
		}
		for _, r := range replaced {
			if r.IP != l.IP {
				if err := h.Store.Delete6(h.Pool.cfg.Network, r.IP); err != nil {
					h.Log.Warn("dhcp6: delete the replaced lease", "ip", r.IP, "err", err)
				}
			}
			if h.Ports != nil {
				h.Ports.Unbound(r)
			}
		}
		if h.Ports != nil {
			h.Ports.Bound(l)
		}
		if want.IsValid() && want != a {
			// The client asked for an address it may not have: say so
			// with lifetimes 0 (§18.3.4, §18.3.5), next to the one it gets.
			out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: want.AsSlice()})
		}
		full := h.ia(ia.IaId, a)
		out.T1, out.T2 = full.T1, full.T2
		out.Options.Add(full.Options.OneAddress())
		rep.AddOption(out)
	}
}

// hostname is the name a lease carries in DNS: a static host's, else the
// client's FQDN option's first label (RFC 4704), unless another guest
// holds that name in the other family (Config.NameHeld).
func (p *Pool) hostname(duid, mac string, msg *dhcpv6.Message) string {
	if h, ok := p.Static(duid, mac); ok && h.Name != "" {
		return h.Name
	}
	if f := msg.Options.FQDN(); f != nil && f.DomainName != nil && len(f.DomainName.Labels) > 0 {
		name, _ := dhcp.CleanHostname(f.DomainName.Labels[0])
		if name != "" && p.cfg.NameHeld != nil && p.cfg.NameHeld(name, mac) {
			return "" // another guest's in DHCPv4: its A record, not this one's AAAA
		}
		return name
	}
	return ""
}

// confirm answers whether the client's addresses are on this link (§18.3.3).
func (h *Handler) confirm(msg *dhcpv6.Message, sid dhcpv6.DUID) *dhcpv6.Message {
	var any bool
	for _, ia := range msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			any = true
			ip, ok := netip.AddrFromSlice(a.IPv6Addr)
			if !ok || !h.Pool.cfg.Prefix.Contains(ip) {
				rep := h.reply(msg, dhcpv6.MessageTypeReply, sid)
				rep.AddOption(status(iana.StatusNotOnLink, "not on this link"))
				return rep
			}
		}
	}
	if !any {
		return nil // §18.3.3: no addresses, no reply
	}
	rep := h.reply(msg, dhcpv6.MessageTypeReply, sid)
	rep.AddOption(status(iana.StatusSuccess, "on link"))
	h.Stats.Replied.Add(1)
	return rep
}

// release ends (Release) or quarantines (Decline) the IAs' addresses
// (§18.3.7, §18.3.8); the Reply says Success, and NoBinding in an IA the
// client did not hold.
func (h *Handler) release(msg *dhcpv6.Message, cid dhcpv6.DUID, sid dhcpv6.DUID) *dhcpv6.Message {
	duid := DUIDString(cid)
	rep := h.reply(msg, dhcpv6.MessageTypeReply, sid)
	decline := msg.MessageType == dhcpv6.MessageTypeDecline
	for _, ia := range msg.Options.IANA() {
		iaid := iaidOf(ia)
		for _, a := range ia.Options.Addresses() {
			ip, ok := netip.AddrFromSlice(a.IPv6Addr)
			if !ok {
				continue
			}
			var l dhcp.Lease6
			if decline {
				l, ok = h.Pool.Decline(duid, iaid, ip)
			} else {
				l, ok = h.Pool.Release(duid, iaid, ip)
			}
			if !ok {
				out := &dhcpv6.OptIANA{IaId: ia.IaId}
				out.Options.Add(status(iana.StatusNoBinding, "no binding for this address"))
				rep.AddOption(out)
				continue
			}
			store := func() error { return h.Store.Put6(h.Pool.cfg.Network, l) } // the quarantine
			if !decline {
				store = func() error { return h.Store.Delete6(h.Pool.cfg.Network, ip) }
			}
			if err := store(); err != nil {
				h.Stats.StoreErrors.Add(1)
				h.Log.Warn("dhcp6: store the ended lease", "ip", ip, "err", err)
			}
			if h.Ports != nil {
				h.Ports.Unbound(l)
			}
			if decline {
				h.Stats.Declined.Add(1)
			} else {
				h.Stats.Released.Add(1)
			}
		}
	}
	rep.AddOption(status(iana.StatusSuccess, "done"))
	return rep
}
