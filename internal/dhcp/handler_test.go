package dhcp

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/model"
)

// memStore is a Store in memory; fail makes Put fail.
type memStore struct {
	mu     sync.Mutex
	leases map[netip.Addr]Lease
	fail   bool
}

var _ Store = (*memStore)(nil)

func (m *memStore) Load(string) ([]Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Lease
	for _, l := range m.leases {
		out = append(out, l)
	}
	return out, nil
}

func (m *memStore) Put(_ string, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	m.leases[l.IP] = l
	return nil
}

func (m *memStore) Delete(_ string, ip netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, ip)
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testConfig() Config {
	return Config{Network: "default", Server: netip.MustParsePrefix("10.99.0.1/24"), DHCP: model.DHCP{
		Ranges: []model.Range{{From: addr("10.99.0.100"), To: addr("10.99.0.102")}},
		Lease:  time.Hour,
		Hosts:  []model.StaticHost{{MAC: "52:54:00:00:00:ff", IP: addr("10.99.0.10"), Name: "vm1"}},
		DNS:    []netip.Addr{addr("10.99.0.1")},
		Domain: "lab.internal",
		MTU:    1400,
		Routes: []model.StaticRoute{{To: netip.MustParsePrefix("172.20.0.0/16"), Via: addr("10.99.0.254")}},
	}}
}

func newHandler(t *testing.T, st *memStore, c *clock) *Handler {
	t.Helper()
	leases, _ := st.Load("default")
	return &Handler{Pool: NewPool(testConfig(), c.now, leases), Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func mac(n byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, n} }

func discover(t testing.TB, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// lease runs DISCOVER then REQUEST and returns the ACKed address.
func lease(t *testing.T, h *Handler, hw net.HardwareAddr) netip.Addr {
	t.Helper()
	off := h.Handle(discover(t, hw))
	if off == nil || off.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("discover from %s: %v", hw, off)
	}
	req, err := dhcpv4.NewRequestFromOffer(off)
	if err != nil {
		t.Fatal(err)
	}
	ack := h.Handle(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("request from %s: %v", hw, ack)
	}
	return addrOf(ack.YourIPAddr)
}

func TestOfferOptions(t *testing.T) {
	h := newHandler(t, &memStore{leases: map[netip.Addr]Lease{}}, &clock{time.Unix(1e9, 0)})
	off := h.Handle(discover(t, mac(1)))
	if off == nil || addrOf(off.YourIPAddr) != addr("10.99.0.100") {
		t.Fatalf("offer: %v", off)
	}
	checks := map[string]bool{
		"router":     len(off.Router()) == 1 && off.Router()[0].Equal(net.IPv4(10, 99, 0, 1)),
		"mask":       off.SubnetMask().String() == "ffffff00",
		"lease":      off.IPAddressLeaseTime(0) == time.Hour,
		"server id":  off.ServerIdentifier().Equal(net.IPv4(10, 99, 0, 1)),
		"dns":        len(off.DNS()) == 1,
		"domain":     off.DomainName() == "lab.internal",
		"mtu":        string(off.GetOneOption(dhcpv4.OptionInterfaceMTU)) == "\x05\x78",
		"routes 121": len(off.ClasslessStaticRoute()) == 2,
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("offer option %s wrong:\n%s", name, off.Summary())
		}
	}
}

func TestLeaseLifecycle(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)

	a1, a2 := lease(t, h, mac(1)), lease(t, h, mac(2))
	if a1 == a2 {
		t.Fatalf("two clients share %s", a1)
	}
	if _, ok := st.leases[a1]; !ok {
		t.Error("ACKed lease not in the store")
	}
	if again := lease(t, h, mac(1)); again != a1 {
		t.Errorf("same MAC got %s, then %s", a1, again)
	}
	if got := lease(t, h, mac(0xff)); got != addr("10.99.0.10") {
		t.Errorf("static host got %s", got)
	}

	// A REQUEST for another client's address, or outside the subnet: NAK.
	for _, bad := range []string{a2.String(), "10.98.0.5", "10.99.0.10"} {
		req := discover(t, mac(3), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(bad))))
		if r := h.Handle(req); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("request of %s by a stranger: %v", bad, r)
		}
	}
	// A REQUEST naming another server is not for us.
	other := discover(t, mac(3), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 2))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 102))))
	if r := h.Handle(other); r != nil {
		t.Errorf("answered a request for another server: %v", r)
	}

	// Renew: ciaddr set, no requested-address option.
	renew := discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip4(a1)))
	renew.Options.Del(dhcpv4.OptionRequestedIPAddress)
	c.t = c.t.Add(30 * time.Minute)
	if r := h.Handle(renew); r == nil || r.MessageType() != dhcpv4.MessageTypeAck || st.leases[a1].Expiry != c.t.Add(time.Hour) {
		t.Errorf("renew: %v, stored expiry %v", r, st.leases[a1].Expiry)
	}

	// Release: the address goes back and a new client can have it.
	rel := discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4(a1)))
	if r := h.Handle(rel); r != nil {
		t.Errorf("release answered: %v", r)
	}
	if _, ok := st.leases[a1]; ok {
		t.Error("released lease still stored")
	}
	if got := lease(t, h, mac(4)); got != a1 && got != addr("10.99.0.102") {
		t.Errorf("after release a new client got %s", got)
	}
}

func TestDeclineQuarantines(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	a := lease(t, h, mac(1))
	dec := discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a))))
	h.Handle(dec)
	if !st.leases[a].Declined {
		t.Fatal("declined address not stored as quarantined")
	}
	for i := byte(2); i < 4; i++ {
		if got := lease(t, h, mac(i)); got == a {
			t.Errorf("quarantined %s handed to another client", a)
		}
	}
	c.t = c.t.Add(Quarantine + time.Second)
	h.Pool.Release(mac(2).String(), lease(t, h, mac(2)))
	if off := h.Handle(discover(t, mac(9))); off == nil {
		t.Error("after the quarantine the pool still has no address")
	}
}

func TestExhaustionIsSilence(t *testing.T) {
	h := newHandler(t, &memStore{leases: map[netip.Addr]Lease{}}, &clock{time.Unix(1e9, 0)})
	for i := byte(1); i <= 3; i++ {
		lease(t, h, mac(i))
	}
	if r := h.Handle(discover(t, mac(4))); r != nil {
		t.Errorf("exhausted pool answered: %v", r)
	}
	if h.Stats.Exhausted.Load() != 1 {
		t.Errorf("exhausted counter %d", h.Stats.Exhausted.Load())
	}
}

func TestNoAckWithoutStore(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	off := h.Handle(discover(t, mac(1)))
	req, _ := dhcpv4.NewRequestFromOffer(off)
	st.fail = true
	if r := h.Handle(req); r != nil {
		t.Fatalf("ACKed a lease the store refused: %v", r)
	}
	if _, ok := h.Pool.Lookup(mac(1).String()); ok {
		t.Error("pool kept a lease the store refused")
	}
}

func TestRestartKeepsLeases(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	a1 := lease(t, h, mac(1))
	h2 := newHandler(t, st, c) // a restarted daemon: only the store survives
	if got := lease(t, h2, mac(1)); got != a1 {
		t.Errorf("after restart the client got %s, had %s", got, a1)
	}
	for i := byte(2); i <= 3; i++ {
		if got := lease(t, h2, mac(i)); got == a1 {
			t.Errorf("after restart %s went to a second client", a1)
		}
	}
}

func TestInform(t *testing.T) {
	h := newHandler(t, &memStore{leases: map[netip.Addr]Lease{}}, &clock{time.Unix(1e9, 0)})
	inf := discover(t, mac(7), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 50)))
	r := h.Handle(inf)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.IsUnspecified() || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("inform: %v", r)
	}
}

func FuzzHandle(f *testing.F) {
	d, _ := dhcpv4.NewDiscovery(mac(1))
	f.Add(d.ToBytes())
	r, _ := dhcpv4.NewDiscovery(mac(2), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 100))))
	f.Add(r.ToBytes())
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := &Handler{Pool: NewPool(testConfig(), c.now, nil), Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		if resp := h.Handle(req); resp != nil {
			if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
		}
	})
}
