package dhcp6

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// fakeStore is a Store in memory; fail makes Put6 fail.
type fakeStore struct {
	mu   sync.Mutex
	m    map[netip.Addr]dhcp.Lease6
	fail bool
}

var _ Store = (*fakeStore)(nil)

func (f *fakeStore) Put6(_ string, l dhcp.Lease6) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("disk full")
	}
	f.m[l.IP] = l
	return nil
}

func (f *fakeStore) Delete6(_ string, ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, ip)
	return nil
}

// fakePorts records what the handler tells anti-spoofing.
type fakePorts struct {
	bound, unbound []dhcp.Lease6
}

func (f *fakePorts) Locate(mac string) dhcp.PortID {
	return dhcp.PortID{Name: "vnet-" + mac[len(mac)-2:], Index: 7, HW: "fe:00:00:00:00:07"}
}
func (f *fakePorts) Bound(l dhcp.Lease6)   { f.bound = append(f.bound, l) }
func (f *fakePorts) Unbound(l dhcp.Lease6) { f.unbound = append(f.unbound, l) }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var (
	prefix = netip.MustParsePrefix("fd42:61::/64")
	gw     = netip.MustParseAddr("fd42:61::1")
)

func testHandler(t *testing.T, hosts ...model.StaticHost6) (*Handler, *fakeStore, *fakePorts, *clock) {
	t.Helper()
	c := &clock{time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
	cfg := Config{Network: "six", Prefix: prefix, DNS: []netip.Addr{gw}, Domain: "six.test",
		DHCP6: model.DHCP6{Ranges: []model.Range{{From: netip.MustParseAddr("fd42:61::100"), To: netip.MustParseAddr("fd42:61::103")}},
			Lease: time.Hour, Hosts: hosts}}
	st, ports := &fakeStore{m: map[netip.Addr]dhcp.Lease6{}}, &fakePorts{}
	h := &Handler{Pool: NewPool(cfg, c.now, nil), Store: st, Ports: ports, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return h, st, ports, c
}

func duidLL(mac string) dhcpv6.DUID {
	hw, _ := net.ParseMAC(mac)
	return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw}
}

var ll = netip.MustParseAddr("fe80::1234")

func msg(t dhcpv6.MessageType, cid dhcpv6.DUID, sid dhcpv6.DUID, opts ...dhcpv6.Option) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
	m.AddOption(dhcpv6.OptClientID(cid))
	if sid != nil {
		m.AddOption(dhcpv6.OptServerID(sid))
	}
	for _, o := range opts {
		m.AddOption(o)
	}
	return m
}

func iaNA(iaid byte, addrs ...netip.Addr) *dhcpv6.OptIANA {
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, iaid}}
	for _, a := range addrs {
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice()})
	}
	return ia
}

// roundTrip sends m through the wire format both ways, as a client would.
func roundTrip(t *testing.T, h *Handler, m *dhcpv6.Message) *dhcpv6.Message {
	t.Helper()
	b := Answer(h, m.ToBytes(), ll)
	if b == nil {
		return nil
	}
	rep, err := dhcpv6.MessageFromBytes(b)
	if err != nil {
		t.Fatalf("the answer does not parse: %v", err)
	}
	return rep
}

func addrOf(t *testing.T, rep *dhcpv6.Message) (netip.Addr, *dhcpv6.OptIAAddress) {
	t.Helper()
	ia := rep.Options.OneIANA()
	if ia == nil {
		t.Fatalf("no IA_NA in %s", rep.Summary())
	}
	for _, a := range ia.Options.Addresses() {
		if a.ValidLifetime > 0 {
			ip, _ := netip.AddrFromSlice(a.IPv6Addr)
			return ip, a
		}
	}
	t.Fatalf("no address with a lifetime in %s", rep.Summary())
	return netip.Addr{}, nil
}

func TestSolicitRequestRenewRelease(t *testing.T) {
	h, st, ports, c := testHandler(t)
	cid := duidLL("02:00:00:00:61:02")
	sid := ServerDUID("six")

	adv := roundTrip(t, h, msg(dhcpv6.MessageTypeSolicit, cid, nil, iaNA(1)))
	if adv.Type() != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("Solicit: %s, want an Advertise", adv.Type())
	}
	a, _ := addrOf(t, adv)
	if !h.Pool.cfg.Ranges[0].Contains(a) {
		t.Errorf("advertised %v, outside the range", a)
	}
	if !adv.Options.ServerID().Equal(sid) {
		t.Errorf("server ID %v, want %v", adv.Options.ServerID(), sid)
	}
	if dns := adv.Options.DNS(); len(dns) != 1 || !dns[0].Equal(gw.AsSlice()) {
		t.Errorf("DNS servers %v, want [%v]", dns, gw)
	}
	if len(st.m) != 0 {
		t.Errorf("an Advertise stored %d leases; only a Reply binds", len(st.m))
	}

	rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1, a)))
	got, ia := addrOf(t, rep)
	if rep.Type() != dhcpv6.MessageTypeReply || got != a {
		t.Fatalf("Request: %s with %v, want a Reply with %v", rep.Type(), got, a)
	}
	if ia.ValidLifetime != time.Hour || ia.PreferredLifetime != time.Hour*5/8 {
		t.Errorf("lifetimes: preferred %v valid %v, want 37m30s and 1h", ia.PreferredLifetime, ia.ValidLifetime)
	}
	if one := rep.Options.OneIANA(); one.T1 != time.Hour*5/16 || one.T2 != time.Hour/2 {
		t.Errorf("T1 %v T2 %v, want 0.5 and 0.8 of the preferred lifetime", one.T1, one.T2)
	}
	if l := st.m[a]; l.DUID != DUIDString(cid) || l.MAC != "02:00:00:00:61:02" || l.Port != "vnet-02" || l.IAID != 1 {
		t.Errorf("stored lease %+v: want the DUID, the DUID-LL's MAC, its port and IAID 1", l)
	}
	if len(ports.bound) != 1 || ports.bound[0].IP != a {
		t.Errorf("anti-spoofing told %v, want one Bound of %v", ports.bound, a)
	}

	// A Renew after half the lease keeps the address and moves the expiry.
	c.t = c.t.Add(30 * time.Minute)
	rep = roundTrip(t, h, msg(dhcpv6.MessageTypeRenew, cid, sid, iaNA(1, a)))
	if got, _ := addrOf(t, rep); got != a {
		t.Errorf("Renew gave %v, want %v kept", got, a)
	}
	if want := c.t.Add(time.Hour); !st.m[a].Expiry.Equal(want) {
		t.Errorf("stored expiry %v after the Renew, want %v", st.m[a].Expiry, want)
	}

	// A Renew for another server's ID is not ours to answer.
	if rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRenew, cid, ServerDUID("other"), iaNA(1, a))); rep != nil {
		t.Errorf("answered a Renew to another server: %s", rep.Summary())
	}
	// A Solicit carrying a server ID is malformed (RFC 8415 §16.2).
	if rep := roundTrip(t, h, msg(dhcpv6.MessageTypeSolicit, cid, sid, iaNA(1))); rep != nil {
		t.Errorf("answered a Solicit with a server ID: %s", rep.Summary())
	}

	// The Release comes from the client's EUI-64 link-local address: a
	// lease bound to a port is ended only by a sender the server places
	// there (TestStealLease6UnknownSender).
	rep = answerFrom(t, h, msg(dhcpv6.MessageTypeRelease, cid, sid, iaNA(1, a)), eui64LL("02:00:00:00:61:02"))
	if s := rep.Options.Status(); s == nil || s.StatusCode != iana.StatusSuccess {
		t.Errorf("Release: status %v, want Success", s)
	}
	if len(ports.unbound) != 1 || st.m[a].Expiry.After(c.t) {
		t.Errorf("after the Release: unbound %v, stored %+v; want it ended", ports.unbound, st.m[a])
	}
	// The same client soliciting again gets the same address back.
	if got, _ := addrOf(t, roundTrip(t, h, msg(dhcpv6.MessageTypeSolicit, cid, nil, iaNA(1)))); got != a {
		t.Errorf("after its Release the client is offered %v, want %v again", got, a)
	}
}

func TestRapidCommitInfoRequestConfirm(t *testing.T) {
	h, st, _, _ := testHandler(t)
	cid := duidLL("02:00:00:00:61:05")
	sol := msg(dhcpv6.MessageTypeSolicit, cid, nil, iaNA(9), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	rep := roundTrip(t, h, sol)
	if rep.Type() != dhcpv6.MessageTypeReply || rep.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatalf("rapid-commit Solicit: %s, want a Reply with rapid commit", rep.Summary())
	}
	a, _ := addrOf(t, rep)
	if _, ok := st.m[a]; !ok {
		t.Errorf("the rapid-commit Reply's lease %v is not stored", a)
	}

	info := roundTrip(t, h, msg(dhcpv6.MessageTypeInformationRequest, cid, nil))
	if info.Type() != dhcpv6.MessageTypeReply || len(info.Options.DNS()) != 1 ||
		info.Options.DomainSearchList() == nil || info.Options.DomainSearchList().Labels[0] != "six.test" {
		t.Errorf("Information-Request: %s; want a Reply with the DNS server and six.test", info.Summary())
	}

	ok := roundTrip(t, h, msg(dhcpv6.MessageTypeConfirm, cid, nil, iaNA(9, a)))
	if s := ok.Options.Status(); s == nil || s.StatusCode != iana.StatusSuccess {
		t.Errorf("Confirm of %v: %v, want Success", a, s)
	}
	off := roundTrip(t, h, msg(dhcpv6.MessageTypeConfirm, cid, nil, iaNA(9, netip.MustParseAddr("fd00:bad::1"))))
	if s := off.Options.Status(); s == nil || s.StatusCode != iana.StatusNotOnLink {
		t.Errorf("Confirm of another link's address: %v, want NotOnLink", s)
	}
}

func TestStaticHostsAndExhaustion(t *testing.T) {
	byDUID := duidLL("02:00:00:00:61:10")
	h, st, _, _ := testHandler(t,
		model.StaticHost6{DUID: DUIDString(byDUID), IP: netip.MustParseAddr("fd42:61::10"), Name: "fixed"},
		model.StaticHost6{MAC: "02:00:00:00:61:11", IP: netip.MustParseAddr("fd42:61::11"), Name: "bymac"},
		model.StaticHost6{MAC: "02:00:00:00:61:12", IP: netip.MustParseAddr("fd42:61::12")})
	sid := ServerDUID("six")
	for _, c := range []struct {
		name string
		cid  dhcpv6.DUID
		src  netip.Addr
		want string
	}{
		{"by DUID", byDUID, ll, "fd42:61::10"},
		// A DUID-EN carries no MAC: the MAC of a modified EUI-64
		// link-local source tells.
		{"by MAC of an EUI-64 link-local", &dhcpv6.DUIDEN{EnterpriseNumber: 1, EnterpriseIdentifier: []byte{1}},
			netip.MustParseAddr("fe80::ff:fe00:6111"), "fd42:61::11"},
	} {
		m := msg(dhcpv6.MessageTypeRequest, c.cid, sid, iaNA(1))
		b := Answer(h, m.ToBytes(), c.src)
		rep, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got, _ := addrOf(t, rep); got.String() != c.want {
			t.Errorf("%s: %v, want %s", c.name, got, c.want)
		}
	}
	if st.m[netip.MustParseAddr("fd42:61::10")].Hostname != "fixed" {
		t.Errorf("static lease's name %q, want fixed", st.m[netip.MustParseAddr("fd42:61::10")].Hostname)
	}
	// MACOf (the neighbour table) names a client whose DUID and address
	// say nothing.
	h.MACOf = func(netip.Addr) string { return "02:00:00:00:61:12" }
	rep := roundTrip(t, h, msg(dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDEN{EnterpriseNumber: 2, EnterpriseIdentifier: []byte{2}}, nil, iaNA(1)))
	if got, _ := addrOf(t, rep); got.String() != "fd42:61::12" {
		t.Errorf("by the neighbour's MAC: %v, want fd42:61::12", got)
	}
	h.MACOf = nil

	// Four addresses in the range: the fifth client gets NoAddrsAvail.
	for i := range 5 {
		cid := duidLL("02:00:00:00:70:0" + string(rune('0'+i)))
		rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, cid, sid, iaNA(1)))
		ia := rep.Options.OneIANA()
		st := ia.Options.Status()
		if i < 4 && (st != nil || len(ia.Options.Addresses()) != 1) {
			t.Errorf("client %d: %s, want an address", i, rep.Summary())
		}
		if i == 4 && (st == nil || st.StatusCode != iana.StatusNoAddrsAvail) {
			t.Errorf("client 5 of a range of 4: %s, want NoAddrsAvail", rep.Summary())
		}
	}
}

func TestStoreFailureGrantsNothing(t *testing.T) {
	h, st, ports, _ := testHandler(t)
	st.fail = true
	rep := roundTrip(t, h, msg(dhcpv6.MessageTypeRequest, duidLL("02:00:00:00:61:20"), ServerDUID("six"), iaNA(1)))
	ia := rep.Options.OneIANA()
	if s := ia.Options.Status(); s == nil || s.StatusCode != iana.StatusUnspecFail || len(ia.Options.Addresses()) != 0 {
		t.Errorf("with the store failing: %s, want UnspecFail and no address", rep.Summary())
	}
	if len(ports.bound) != 0 {
		t.Errorf("a lease not on disk was bound: %v", ports.bound)
	}
}

// FuzzAnswer: a guest controls every byte of a message; Answer never
// panics, and whatever it answers parses.
func FuzzAnswer(f *testing.F) {
	cid := duidLL("02:00:00:00:61:02")
	for _, m := range []*dhcpv6.Message{
		msg(dhcpv6.MessageTypeSolicit, cid, nil, iaNA(1)),
		msg(dhcpv6.MessageTypeRequest, cid, ServerDUID("six"), iaNA(1, netip.MustParseAddr("fd42:61::100"))),
		msg(dhcpv6.MessageTypeRelease, cid, ServerDUID("six"), iaNA(1, netip.MustParseAddr("fd42:61::100"))),
		msg(dhcpv6.MessageTypeInformationRequest, cid, nil),
	} {
		f.Add(m.ToBytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _, _, _ := testHandler(&testing.T{})
		if out := Answer(h, b, ll); out != nil {
			if _, err := dhcpv6.MessageFromBytes(out); err != nil {
				t.Errorf("the answer to %x does not parse: %v", b, err)
			}
		}
	})
}
