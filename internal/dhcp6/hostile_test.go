package dhcp6

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// hostileHandler serves a /64 range (as an operator may write it: the
// pool never runs dry, so nothing but a per-port cap bounds the leases a
// guest collects, in memory and in leases.db) with a cap of perPort.
func hostileHandler(t *testing.T, perPort int) (*Handler, *fakeStore) {
	t.Helper()
	c := &clock{time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
	cfg := Config{Network: "six", Prefix: prefix, PerPort: perPort,
		DHCP6: model.DHCP6{Ranges: []model.Range{{From: netip.MustParseAddr("fd42:61::"), To: netip.MustParseAddr("fd42:61::ffff:ffff:ffff:ffff")}},
			Lease: time.Hour}}
	st := &fakeStore{m: map[netip.Addr]dhcp.Lease6{}}
	h := &Handler{Pool: NewPool(cfg, c.now, nil), Store: st, Ports: &fakePorts{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return h, st
}

// granted counts the IAs of rep that carry an address with a lifetime.
func granted(rep *dhcpv6.Message) int {
	n := 0
	for _, ia := range rep.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if a.ValidLifetime > 0 {
				n++
			}
		}
	}
	return n
}

// TestPerPortCap: one guest inventing DUIDs (all its messages come from
// its own link-local address, whose neighbour entry is its MAC on port
// vnet-aa), or asking for many IAs in one Request, holds at most PerPort
// addresses; its first clients renew, and a guest on another port is
// served.
func TestPerPortCap(t *testing.T) {
	h, st := hostileHandler(t, 8)
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:00:aa" }
	sid := ServerDUID("six")
	got := 0
	var first dhcpv6.DUID
	for i := range 100 {
		cid := &dhcpv6.DUIDUUID{UUID: [16]byte{0: 1, 14: byte(i >> 8), 15: byte(i)}}
		if i == 0 {
			first = cid
		}
		got += granted(roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1))))
	}
	if got != 8 || len(st.m) != 8 {
		t.Errorf("100 invented DUIDs from one port got %d addresses (%d stored), want 8", got, len(st.m))
	}
	// Rapid commit is no way around it.
	rc := msg(dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDUUID{UUID: [16]byte{0: 2}}, nil, iaNA(1), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	if n := granted(roundTrip(t, h, rc)); n != 0 {
		t.Errorf("a rapid-commit Solicit past the cap got %d addresses", n)
	}
	// Nor is the Advertise a promise: it says NoAddrsAvail.
	adv := roundTrip(t, h, msg(dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDUUID{UUID: [16]byte{0: 3}}, nil, iaNA(1)))
	if s := adv.Options.OneIANA().Options.Status(); s == nil || s.StatusCode != iana.StatusNoAddrsAvail {
		t.Errorf("Solicit past the cap: %s, want NoAddrsAvail", adv.Summary())
	}
	// A client that holds its address renews it.
	if n := granted(roundTrip(t, h, msg(dhcpv6.MessageTypeRenew, first, sid, iaNA(1)))); n != 1 {
		t.Errorf("the first client's Renew got %d addresses, want its own", n)
	}
	// Many IAs in one message: the same cap.
	h2, st2 := hostileHandler(t, 8)
	h2.MACOf = h.MACOf
	var ias []dhcpv6.Option
	for i := range 50 {
		ias = append(ias, iaNA(byte(i)))
	}
	if n := granted(roundTrip(t, h2, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:00:bb"), sid, ias...))); n != 8 || len(st2.m) != 8 {
		t.Errorf("a Request with 50 IA_NAs got %d addresses (%d stored), want 8", n, len(st2.m))
	}
	// Another guest, on another port, is served.
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:00:cc" }
	if n := granted(roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, &dhcpv6.DUIDUUID{UUID: [16]byte{0: 4}}, sid, iaNA(1)))); n != 1 {
		t.Errorf("a guest on another port got %d addresses, want 1", n)
	}
}

// eui64LL is the link-local address a guest with mac forms (modified
// EUI-64), the source of its DHCPv6 messages.
func eui64LL(mac string) netip.Addr {
	hw, _ := net.ParseMAC(mac)
	return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: hw[0] ^ 2, 9: hw[1], 10: hw[2], 11: 0xff, 12: 0xfe, 13: hw[3], 14: hw[4], 15: hw[5]})
}

func answerFrom(t *testing.T, h *Handler, m *dhcpv6.Message, src netip.Addr) *dhcpv6.Message {
	t.Helper()
	b := Answer(h, m.ToBytes(), src)
	if b == nil {
		return nil
	}
	rep, err := dhcpv6.MessageFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestStealLease6: guest B (port vnet-bb) learnt guest A's DUID and IAID
// from A's multicast Solicit. Speaking in A's name from its own port, B
// neither ends A's lease (Release, Decline) nor moves it to its port
// (Request, Renew, Rebind: IPv6 anti-spoofing would bind A's address to
// B). A, from its own port, still renews; whatever its DUID's kind.
func TestStealLease6(t *testing.T) {
	for _, victim := range []struct {
		name string
		duid dhcpv6.DUID
	}{
		{"DUID-LL", duidLL("02:00:00:00:00:aa")},
		{"DUID-UUID", &dhcpv6.DUIDUUID{UUID: [16]byte{0: 0xaa}}},
	} {
		t.Run(victim.name, func(t *testing.T) {
			h, st, ports, _ := testHandler(t)
			sid := ServerDUID("six")
			srcA, srcB := eui64LL("02:00:00:00:00:aa"), eui64LL("02:00:00:00:00:bb")
			addr, _ := addrOf(t, answerFrom(t, h, msg(dhcpv6.MessageTypeRequest, victim.duid, sid, iaNA(1)), srcA))
			if p := st.m[addr].Port; p != "vnet-aa" {
				t.Fatalf("A's lease is bound through %q, want vnet-aa", p)
			}
			for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRequest,
				dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline} {
				answerFrom(t, h, msg(typ, victim.duid, sid, iaNA(1, addr)), srcB)
				if !h.Pool.Holds(DUIDString(victim.duid), 1, addr) {
					t.Fatalf("after B's %s in A's name, A no longer holds %v", typ, addr)
				}
				if l := st.m[addr]; l.Port != "vnet-aa" || l.Declined {
					t.Errorf("after B's %s in A's name, the stored lease is %+v, want A's through vnet-aa", typ, l)
				}
			}
			answerFrom(t, h, msg(dhcpv6.MessageTypeRebind, victim.duid, nil, iaNA(1, addr)), srcB)
			for _, l := range ports.bound {
				if l.Port != "vnet-aa" {
					t.Errorf("anti-spoofing was told to bind %v through %s", l.IP, l.Port)
				}
			}
			if ports.unbound != nil {
				t.Errorf("anti-spoofing was told to unbind %v", ports.unbound)
			}
			// A itself renews.
			if got, _ := addrOf(t, answerFrom(t, h, msg(dhcpv6.MessageTypeRenew, victim.duid, sid, iaNA(1, addr)), srcA)); got != addr {
				t.Errorf("A's own Renew: %v, want %v", got, addr)
			}
		})
	}
}

func fqdn(name string) *dhcpv6.OptFQDN {
	return &dhcpv6.OptFQDN{DomainName: &rfc1035label.Labels{Labels: []string{name}}}
}

// TestNameHijackAcrossFamilies: guest A holds the name "web" by its
// DHCPv4 lease (its A record). Guest B asking for "web" in its DHCPv6
// FQDN gets its address but not the name: else AAAA web would point to B,
// and a client preferring IPv6 (every getaddrinfo) would talk to B. A
// itself takes its name for its IPv6 address too. Odd names are cleaned
// or refused as in DHCPv4.
func TestNameHijackAcrossFamilies(t *testing.T) {
	h, st := hostileHandler(t, 0)
	h.Pool.cfg.NameHeld = func(name, mac string) bool { return name == "web" && mac != "02:00:00:00:00:aa" }
	sid := ServerDUID("six")
	b, _ := addrOf(t, roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:00:bb"), sid, iaNA(1), fqdn("web"))))
	if n := st.m[b].Hostname; n != "" {
		t.Errorf("guest B took the name %q that guest A holds over DHCPv4", n)
	}
	if a, ok := h.Pool.Resolve("web"); ok {
		t.Errorf("AAAA web resolves to %v (guest B's)", a)
	}
	a, _ := addrOf(t, roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:00:aa"), sid, iaNA(1), fqdn("web"))))
	if got, ok := h.Pool.Resolve("web"); !ok || got != a {
		t.Errorf("AAAA web of guest A itself: %v %v, want %v", got, ok, a)
	}
	// What the DHCPv4 pool asks in turn (dhcp.Config.NameHeld).
	if !h.Pool.NameHeld("web", "02:00:00:00:00:bb") || h.Pool.NameHeld("web", "02:00:00:00:00:aa") || !h.Pool.NameHeld("WEB", "") {
		t.Errorf("NameHeld(web): held for B, not for A, held for an unknown MAC: want true, false, true")
	}
	for _, c := range []struct{ ask, want string }{{"wpad", ""}, {"localhost", ""}, {"a b", ""}, {"x\x00y", ""}, {"ok-name", "ok-name"}} {
		ip, _ := addrOf(t, roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:00:c"+string(rune('0'+len(c.ask)%10))), sid, iaNA(1), fqdn(c.ask))))
		if got := st.m[ip].Hostname; got != c.want {
			t.Errorf("FQDN %q: host name %q, want %q", c.ask, got, c.want)
		}
	}
}

// TestStaticHostUnderLiveLease: the operator adds a static host for an
// address another client holds a live lease of. The static host does not
// get it while that lease lives (two guests would use one address: the
// other client is not told until it renews); the other client's Renew
// moves it (its old address with lifetimes 0), and then the static host
// gets its address. Nor does a static host get an address in quarantine.
func TestStaticHostUnderLiveLease(t *testing.T) {
	h, st, _, c := testHandler(t)
	sid := ServerDUID("six")
	dyn := duidLL("02:00:00:00:00:d1")
	x, _ := addrOf(t, roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, dyn, sid, iaNA(1))))

	static := duidLL("02:00:00:00:00:51")
	cfg := h.Pool.Config()
	cfg.Hosts = []model.StaticHost6{{DUID: DUIDString(static), IP: x, Name: "fixed"}}
	var leases []dhcp.Lease6
	for _, l := range st.m {
		leases = append(leases, l)
	}
	h.Pool = NewPool(cfg, c.now, leases) // the reload

	rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, static, sid, iaNA(1)))
	if n := granted(rep); n != 0 {
		t.Fatalf("the static host got %v while %s's lease of it lives: two guests on one address", x, DUIDString(dyn))
	}
	// The dynamic client renews: it is moved.
	rep = roundTrip(t, h, msg(dhcpv6.MessageTypeRenew, dyn, sid, iaNA(1, x)))
	moved, _ := addrOf(t, rep)
	if moved == x {
		t.Fatalf("the dynamic client keeps %v, now a static host's", x)
	}
	rep = roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, static, sid, iaNA(1)))
	if got, _ := addrOf(t, rep); got != x {
		t.Errorf("the static host after the other client moved: %v, want %v", got, x)
	}
	if l := st.m[x]; l.DUID != DUIDString(static) {
		t.Errorf("stored lease of %v: %+v", x, l)
	}
}

// TestDeclineLoop: a guest that declines every address it gets (Request,
// Decline, again, with fresh DUIDs) quarantines at most PerPort addresses
// of a small range; the others stay for its neighbours.
func TestDeclineLoop(t *testing.T) {
	h, _, _, _ := testHandler(t)
	h.Pool.cfg.PerPort = 2
	h.Pool.cfg.Ranges = []model.Range{{From: netip.MustParseAddr("fd42:61::100"), To: netip.MustParseAddr("fd42:61::107")}}
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:00:aa" }
	sid := ServerDUID("six")
	for i := range 20 {
		cid := &dhcpv6.DUIDUUID{UUID: [16]byte{0: 9, 15: byte(i)}}
		rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1)))
		if granted(rep) == 0 {
			continue
		}
		a, _ := addrOf(t, rep)
		roundTrip(t, h, msg(dhcpv6.MessageTypeDecline, cid, sid, iaNA(1, a)))
	}
	quarantined := 0
	for _, l := range h.Pool.Leases() {
		if l.Declined {
			quarantined++
		}
	}
	if quarantined > 2 {
		t.Errorf("one port quarantined %d of 8 addresses by declining, want at most its share (2)", quarantined)
	}
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:00:cc" }
	if n := granted(roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:00:cc"), sid, iaNA(1)))); n != 1 {
		t.Errorf("a neighbour after the decline loop got %d addresses, want 1", n)
	}
}

// knownPorts places only the MACs the bridge has learnt.
type knownPorts struct{ fakePorts }

func (k *knownPorts) Locate(mac string) dhcp.PortID {
	if strings.HasPrefix(mac, "02:00:00:00:00:") {
		return k.fakePorts.Locate(mac)
	}
	return dhcp.PortID{}
}

// TestDUIDOfAnotherNIC: clients whose DUID-LLT names a MAC the bridge
// never saw (made on another NIC, or copied with a VM image) are placed
// by their frames' MAC (their EUI-64 link-local source), each on its own
// port: twelve such guests on twelve ports all get addresses, none shares
// the cap of the clients no port is known for, and each lease binds its
// sender's port.
func TestDUIDOfAnotherNIC(t *testing.T) {
	h, st := hostileHandler(t, 8)
	h.Ports = &knownPorts{}
	sid := ServerDUID("six")
	for i := range 12 {
		cid := &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 1, LinkLayerAddr: net.HardwareAddr{0x52, 0x54, 0, 0, 0x10, byte(i)}}
		src := eui64LL(fmt.Sprintf("02:00:00:00:00:%02x", 0x10+i))
		rep := answerFrom(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1)), src)
		if granted(rep) != 1 {
			t.Errorf("guest %d (its own port) got no address: %s", i, rep.Summary())
			continue
		}
		a, _ := addrOf(t, rep)
		if want := fmt.Sprintf("vnet-%02x", 0x10+i); st.m[a].Port != want {
			t.Errorf("guest %d's lease is bound through %q, want its sender's port %s", i, st.m[a].Port, want)
		}
	}
	// One guest, two NICs on the bridge, one DUID-LLT (of the first
	// NIC): each NIC's IA is bound through its own port and renews.
	two := duidLL("02:00:00:00:00:a1")
	nic1, nic2 := eui64LL("02:00:00:00:00:a1"), eui64LL("02:00:00:00:00:a2")
	a1, _ := addrOf(t, answerFrom(t, h, msg(dhcpv6.MessageTypeRequest, two, sid, iaNA(1)), nic1))
	a2, _ := addrOf(t, answerFrom(t, h, msg(dhcpv6.MessageTypeRequest, two, sid, iaNA(2)), nic2))
	if st.m[a1].Port != "vnet-a1" || st.m[a2].Port != "vnet-a2" {
		t.Errorf("two NICs' leases bound through %q and %q, want vnet-a1 and vnet-a2", st.m[a1].Port, st.m[a2].Port)
	}
	for _, c := range []struct {
		iaid byte
		a    netip.Addr
		src  netip.Addr
	}{{1, a1, nic1}, {2, a2, nic2}} {
		if rep := answerFrom(t, h, msg(dhcpv6.MessageTypeRenew, two, sid, iaNA(c.iaid, c.a)), c.src); rep == nil || granted(rep) != 1 {
			t.Errorf("NIC %d's Renew went unanswered or ungranted", c.iaid)
		}
	}
}

// TestStealLease6UnknownSender: B sends its Release in A's name from a
// link-local address of its own making, neither modified EUI-64 nor in the
// host's neighbour table (it never answers the host's neighbour
// solicitation): the server cannot tell the port it came from, so it does
// not end a lease bound to a port on its word (an honest client whose
// neighbour entry the kernel collected loses nothing but its courtesy:
// the lease runs out).
func TestStealLease6UnknownSender(t *testing.T) {
	h, _, _, _ := testHandler(t)
	sid := ServerDUID("six")
	victim := duidLL("02:00:00:00:00:aa")
	addr, _ := addrOf(t, answerFrom(t, h, msg(dhcpv6.MessageTypeRequest, victim, sid, iaNA(1)), eui64LL("02:00:00:00:00:aa")))
	answerFrom(t, h, msg(dhcpv6.MessageTypeRelease, victim, sid, iaNA(1, addr)), netip.MustParseAddr("fe80::1:2:3:4"))
	if !h.Pool.Holds(DUIDString(victim), 1, addr) {
		t.Errorf("a Release from an unplaced source ended A's lease of %v", addr)
	}
}

// TestReleaseLoop: a guest that takes an address and releases it, again
// and again with fresh DUIDs, stays within its port's cap at every
// moment; the released records must not pile up either (a /64 range
// never gives an address twice: each would stay in memory and in
// leases.db for ever).
func TestReleaseLoop(t *testing.T) {
	h, st := hostileHandler(t, 8)
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:00:aa" }
	sid := ServerDUID("six")
	for i := range 300 {
		cid := &dhcpv6.DUIDUUID{UUID: [16]byte{0: 7, 14: byte(i >> 8), 15: byte(i)}}
		rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1)))
		if granted(rep) != 1 {
			t.Fatalf("round %d: no address", i)
		}
		a, _ := addrOf(t, rep)
		roundTrip(t, h, msg(dhcpv6.MessageTypeRelease, cid, sid, iaNA(1, a)))
	}
	if n, m := len(h.Pool.Leases()), len(st.m); n > 8 || m > 8 {
		t.Errorf("300 take-and-release rounds left %d records in the pool and %d in the store, want at most 8", n, m)
	}
}
