package dhcp

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/model"
)

// twoAddrConfig is the security review's setup: 10.96.0.100-101, lease 1m.
func twoAddrConfig() Config {
	return Config{Network: "default", Server: netip.MustParsePrefix("10.96.0.1/24"), DHCP: model.DHCP{
		Ranges: []model.Range{{From: addr("10.96.0.100"), To: addr("10.96.0.101")}},
		Lease:  time.Minute,
		Hosts:  []model.StaticHost{{MAC: mac(0xaa).String(), IP: addr("10.96.0.10"), Name: "vm1"}},
	}}
}

func newTwoAddr(st *memStore, c *clock) *Handler {
	leases, _ := st.Load("default")
	return &Handler{Pool: NewPool(twoAddrConfig(), c.now, leases), Store: st, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
}

// ask sends a REQUEST for a (INIT-REBOOT: option 50, no server id) with an
// optional host name and returns the reply's type.
func ask(t *testing.T, h *Handler, hw net.HardwareAddr, a netip.Addr, host string) dhcpv4.MessageType {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a)))}
	if host != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(host)))
	}
	r := h.Handle(discover(t, hw, mods...))
	if r == nil {
		t.Fatalf("REQUEST %s from %s: no reply", a, hw)
	}
	return r.MessageType()
}

func liveHolders(p *Pool, now time.Time) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, l := range p.Leases() {
		if !l.Declined && now.Before(l.Expiry) {
			out[l.IP] = append(out[l.IP], l.MAC)
		}
	}
	return out
}

// TestReviewDefect1 replays the review's reproduction: A .100, C .101,
// 62 s later B takes .100 and A moves to .101; D must not get .100 while
// B's lease is valid, and B's lease must survive in memory and on disk.
func TestReviewDefect1(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newTwoAddr(st, c)
	A, B, C, D := mac(1), mac(2), mac(3), mac(4)
	if a := lease(t, h, A); a != addr("10.96.0.100") {
		t.Fatalf("A got %s", a)
	}
	if a := lease(t, h, C); a != addr("10.96.0.101") {
		t.Fatalf("C got %s", a)
	}
	c.t = c.t.Add(62 * time.Second)
	if a := lease(t, h, B); a != addr("10.96.0.100") {
		t.Fatalf("B got %s, want the longest-expired .100", a)
	}
	if got := ask(t, h, A, addr("10.96.0.100"), ""); got != dhcpv4.MessageTypeNak {
		t.Fatalf("A's INIT-REBOOT for B's .100: %s", got)
	}
	if a := lease(t, h, A); a != addr("10.96.0.101") {
		t.Fatalf("A got %s", a)
	}
	if l, ok := st.leases[addr("10.96.0.100")]; !ok || l.MAC != B.String() {
		t.Fatalf("B's lease gone from the store after A moved: %+v", l)
	}
	if r := h.Handle(discover(t, D)); r != nil {
		t.Errorf("D offered %s from a full pool", addrOf(r.YourIPAddr))
	}
	if got := ask(t, h, D, addr("10.96.0.100"), ""); got != dhcpv4.MessageTypeNak {
		t.Errorf("D's REQUEST for B's .100: %s", got)
	}
	if b, ok := h.Pool.Lookup(B.String()); !ok || b.IP != addr("10.96.0.100") {
		t.Errorf("B's lease gone from memory: %+v", b)
	}
	// After a restart (the pool rebuilt from the store) nothing changes.
	h = newTwoAddr(st, c)
	for a, macs := range liveHolders(h.Pool, c.t) {
		if len(macs) != 1 {
			t.Errorf("%s has live leases of %v", a, macs)
		}
	}
	if got := ask(t, h, D, addr("10.96.0.100"), ""); got != dhcpv4.MessageTypeNak {
		t.Errorf("after restart D's REQUEST for B's .100: %s", got)
	}
	renew := discover(t, B, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.IPv4(10, 96, 0, 100)))
	renew.Options.Del(dhcpv4.OptionRequestedIPAddress)
	if r := h.Handle(renew); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("after restart B's renewal: %v", r)
	}
}

// TestQuarantineSurvivesMove: the same stale index once ended a DECLINE
// quarantine nine minutes early, when the client whose old lease sat at
// the declined address moved elsewhere.
func TestQuarantineSurvivesMove(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newTwoAddr(st, c)
	A, B, C, D := mac(1), mac(2), mac(3), mac(4)
	lease(t, h, A) // .100
	lease(t, h, C) // .101
	c.t = c.t.Add(62 * time.Second)
	b := lease(t, h, B) // .100, A's expired lease
	h.Handle(discover(t, B, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(b)))))
	if l := st.leases[b]; !l.Declined {
		t.Fatalf("B's DECLINE of its own %s not stored: %+v", b, l)
	}
	if a := lease(t, h, A); a != addr("10.96.0.101") {
		t.Fatalf("A got %s", a)
	}
	c.t = c.t.Add(time.Minute)
	if l, ok := h.Pool.Lookup(A.String()); !ok || l.IP != addr("10.96.0.101") {
		t.Fatalf("A: %+v", l)
	}
	for _, l := range h.Pool.Leases() {
		if l.IP == b && !l.Declined {
			t.Fatalf("quarantine of %s ended early: %+v", b, l)
		}
	}
	// A's lease expires; D may have .101 but not the quarantined .100.
	c.t = c.t.Add(2 * time.Minute)
	if a := lease(t, h, D); a != addr("10.96.0.101") {
		t.Errorf("D got %s during the quarantine of %s", a, b)
	}
	if got := ask(t, h, mac(5), b, ""); got != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for %s during its quarantine: %s", b, got)
	}
	c.t = c.t.Add(Quarantine)
	if got := ask(t, h, mac(5), b, ""); got != dhcpv4.MessageTypeAck {
		t.Errorf("REQUEST for %s after its quarantine: %s", b, got)
	}
}

func TestDeclineOnlyByHolder(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newTwoAddr(st, c)
	a := lease(t, h, mac(1))
	decline := func(hw net.HardwareAddr, ip netip.Addr) {
		h.Handle(discover(t, hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(ip)))))
	}
	decline(mac(9), a) // a stranger
	if l := st.leases[a]; l.Declined || l.MAC != mac(1).String() {
		t.Fatalf("a stranger's DECLINE changed %s: %+v", a, l)
	}
	if got := ask(t, h, mac(1), a, ""); got != dhcpv4.MessageTypeAck {
		t.Errorf("holder's renewal after a stranger's DECLINE: %s", got)
	}
	// The holder of an outstanding offer may decline it.
	off := h.Handle(discover(t, mac(2)))
	o := addrOf(off.YourIPAddr)
	decline(mac(2), o)
	if l := st.leases[o]; !l.Declined || l.MAC != mac(2).String() {
		t.Errorf("DECLINE of an offered address not quarantined: %+v", l)
	}
	// An address no one holds: nothing happens.
	c.t = c.t.Add(Quarantine + time.Second)
	n := len(st.leases)
	decline(mac(3), addr("10.96.0.100"))
	decline(mac(3), addr("10.96.0.101"))
	if len(st.leases) != n || st.leases[a].Declined {
		t.Errorf("DECLINE of addresses mac 3 does not hold changed the store: %v", st.leases)
	}
}

func TestAbandon(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	p := NewPool(twoAddrConfig(), c.now, nil)
	a, _ := p.Offer(mac(1).String(), netip.Addr{})
	l, ok := p.Abandon(a)
	if !ok || !l.Declined || l.MAC != "" || l.Expiry != c.t.Add(Quarantine) {
		t.Fatalf("Abandon(%s) = %+v, %v", a, l, ok)
	}
	if _, ok := p.Bind(mac(1).String(), a, "", ""); ok {
		t.Errorf("abandoned %s still bindable by the client it was offered to", a)
	}
	if b, _ := p.Offer(mac(1).String(), netip.Addr{}); b == a {
		t.Errorf("abandoned %s offered again", a)
	}
	for _, x := range []string{"10.96.0.10", "10.96.0.1", "10.96.0.50"} { // static, server, outside
		if _, ok := p.Abandon(addr(x)); ok {
			t.Errorf("Abandon(%s) took an address the pool does not hand out", x)
		}
	}
	bd, _ := p.Bind(mac(1).String(), addr("10.96.0.101"), "", "")
	if _, ok := p.Abandon(bd.Lease.IP); ok {
		t.Errorf("Abandon evicted a live lease")
	}
	restarted := NewPool(twoAddrConfig(), c.now, p.Leases())
	if n := restarted.Free(); n != 0 {
		t.Errorf("after restart %d free, want 0 (one abandoned, one leased)", n)
	}
}

func TestHostnameNotTakenOver(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	var log bytes.Buffer
	h := newTwoAddr(st, c)
	h.Log = slog.New(slog.NewTextHandler(&log, nil))
	if ask(t, h, mac(1), addr("10.96.0.100"), "web") != dhcpv4.MessageTypeAck {
		t.Fatal("first client NAKed")
	}
	for range 3 { // renewals: the name is refused each time, logged once
		if ask(t, h, mac(2), addr("10.96.0.101"), "WEB") != dhcpv4.MessageTypeAck {
			t.Fatal("second client NAKed: a name conflict must not cost the address")
		}
	}
	if l := st.leases[addr("10.96.0.101")]; l.Hostname != "" {
		t.Errorf("second client took the name: %+v", l)
	}
	if n := strings.Count(log.String(), "hostname already in use"); n != 1 {
		t.Errorf("name conflict logged %d times, want once:\n%s", n, log.String())
	}
	if a, ok := h.Pool.Resolve("Web"); !ok || a != addr("10.96.0.100") {
		t.Errorf("Resolve(Web) = %s %v", a, ok)
	}
	if n, ok := h.Pool.Reverse(addr("10.96.0.101")); ok {
		t.Errorf("Reverse of the second client = %q", n)
	}
	// A static host's name is not for others either.
	if ask(t, h, mac(2), addr("10.96.0.101"), "VM1") != dhcpv4.MessageTypeAck || st.leases[addr("10.96.0.101")].Hostname != "" {
		t.Errorf("a client took the static host's name: %+v", st.leases[addr("10.96.0.101")])
	}
	if a, _ := h.Pool.Resolve("vm1"); a != addr("10.96.0.10") {
		t.Errorf("Resolve(vm1) = %s", a)
	}
	// The holder's lease ends: the second client's next renewal takes the name.
	c.t = c.t.Add(61 * time.Second)
	if _, ok := h.Pool.Resolve("web"); ok {
		t.Error("an expired lease still resolves")
	}
	if ask(t, h, mac(2), addr("10.96.0.101"), "web") != dhcpv4.MessageTypeAck || st.leases[addr("10.96.0.101")].Hostname != "web" {
		t.Errorf("the freed name was not taken: %+v", st.leases[addr("10.96.0.101")])
	}
	if a, _ := h.Pool.Resolve("WEB"); a != addr("10.96.0.101") {
		t.Errorf("Resolve(WEB) = %s after the name moved", a)
	}
	if n, _ := h.Pool.Reverse(addr("10.96.0.101")); n != "web" {
		t.Errorf("Reverse = %q", n)
	}
	// The first client comes back: it does not get its old name back.
	if ask(t, h, mac(1), addr("10.96.0.100"), "web") != dhcpv4.MessageTypeAck || st.leases[addr("10.96.0.100")].Hostname != "" {
		t.Errorf("the returning client took the name back: %+v", st.leases[addr("10.96.0.100")])
	}
}

// TestNewPoolRepairsOldStore loads what an older guestnet could write: one
// MAC on two records, one name on two live leases.
func TestNewPoolRepairsOldStore(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	exp := c.t.Add(time.Minute)
	p := NewPool(twoAddrConfig(), c.now, []Lease{
		{MAC: mac(1).String(), IP: addr("10.96.0.100"), Hostname: "web", Expiry: exp},
		{MAC: mac(1).String(), IP: addr("10.96.0.101"), Expiry: exp.Add(-time.Second)},
		{MAC: mac(0xaa).String(), IP: addr("10.96.0.10"), Hostname: "WEB", Expiry: exp},
	})
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	// mac 1 keeps its later record; the name stays on the lowest address.
	ls := p.Leases()
	if len(ls) != 2 || ls[1].IP != addr("10.96.0.100") || ls[0].Hostname != "WEB" || ls[1].Hostname != "" {
		t.Errorf("repaired leases: %+v", ls)
	}
}

// TestExhaustedLogLimit: a flood of DISCOVERs at a full pool gives one
// WARN a minute, with the count of the unanswered ones; Free says 0.
func TestExhaustedLogLimit(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	var log bytes.Buffer
	cfg := twoAddrConfig()
	cfg.Lease = time.Hour
	h := &Handler{Pool: NewPool(cfg, c.now, nil), Store: st, Log: slog.New(slog.NewTextHandler(&log, nil))}
	lease(t, h, mac(1))
	if h.Pool.Free() != 1 {
		t.Fatalf("Free = %d with one of two addresses leased", h.Pool.Free())
	}
	if h.Handle(discover(t, mac(2))) == nil {
		t.Fatal("no offer")
	}
	if h.Pool.Free() != 0 {
		t.Errorf("Free = %d with the last address held by an offer", h.Pool.Free())
	}
	for i := range 1000 {
		if r := h.Handle(discover(t, mac(byte(10+i%150)))); r != nil {
			t.Fatalf("full pool offered %s", addrOf(r.YourIPAddr))
		}
		c.t = c.t.Add(10 * time.Millisecond) // 10 s in all
	}
	if n := strings.Count(log.String(), "pool exhausted"); n != 1 || !strings.Contains(log.String(), "unanswered=1 ") {
		t.Errorf("%d WARN lines for 1000 DISCOVERs in 10 s, want 1 (unanswered=1):\n%s", n, log.String())
	}
	if h.Handle(discover(t, mac(2))) == nil { // its client asks again: the hold is renewed
		t.Fatal("no offer to the client that holds it")
	}
	c.t = c.t.Add(ExhaustedEvery - 10*time.Second)
	h.Handle(discover(t, mac(9)))
	if n := strings.Count(log.String(), "pool exhausted"); n != 2 || !strings.Contains(log.String(), "unanswered=1000 ") {
		t.Errorf("after a minute: %d lines, want 2, the second with unanswered=1000:\n%s", n, log.String())
	}
	if h.Stats.Exhausted.Load() != 1001 {
		t.Errorf("exhausted counter %d", h.Stats.Exhausted.Load())
	}
	// The offer's hold has run out: the address is free again, and offered.
	c.t = c.t.Add(OfferHold)
	if h.Pool.Free() != 1 || h.Handle(discover(t, mac(3))) == nil {
		t.Errorf("after the offer hold: Free = %d and no offer", h.Pool.Free())
	}
}

// TestMoveUndoneWhenStoreFails: a client that moves to another address
// while the store refuses writes keeps its old lease, and the new address
// stays free.
func TestMoveUndoneWhenStoreFails(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newTwoAddr(st, c)
	if ask(t, h, mac(1), addr("10.96.0.100"), "web") != dhcpv4.MessageTypeAck {
		t.Fatal("first lease NAKed")
	}
	before := h.Pool.Leases()
	st.fail = true
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 96, 0, 101)))}
	if r := h.Handle(discover(t, mac(1), mods...)); r != nil {
		t.Fatalf("ACKed a move the store refused: %v", r)
	}
	if after := h.Pool.Leases(); len(after) != 1 || after[0] != before[0] {
		t.Errorf("after the refused move the pool holds %+v, want %+v", after, before)
	}
	if err := h.Pool.check(); err != nil {
		t.Error(err)
	}
	if h.Pool.Free() != 1 {
		t.Errorf("Free = %d, want 1", h.Pool.Free())
	}
}

// BenchmarkBindLargePool renews named leases in a pool of 60,000 live
// ones: the name check must not scan every lease under the pool's lock.
func BenchmarkBindLargePool(b *testing.B) {
	c := &clock{time.Unix(1e9, 0)}
	cfg := Config{Network: "big", Server: netip.MustParsePrefix("10.96.0.1/16"), DHCP: model.DHCP{
		Ranges: []model.Range{{From: addr("10.96.1.0"), To: addr("10.96.250.255")}}, Lease: time.Hour}}
	const n = 60000
	var leases []Lease
	a := addr("10.96.1.0")
	for i := range n {
		leases = append(leases, Lease{MAC: net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}.String(), IP: a,
			Hostname: "guest" + strconv.Itoa(i), Expiry: c.t.Add(time.Hour)})
		a = a.Next()
	}
	p := NewPool(cfg, c.now, leases)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l := leases[i%n]
		if _, ok := p.Bind(l.MAC, l.IP, l.Hostname, ""); !ok {
			b.Fatalf("renewal of %s refused", l.IP)
		}
	}
}

// TestPortIndexFollowsMoves: the per-port cap reads the pool's index of
// records and offers by port (portRecs, portOffers); it must follow every
// offer, lease, move to another port and release, or the cap counts
// clients that left or misses ones that came. PerPort 2: a third client
// on port a is refused until one of the two leaves a.
func TestPortIndexFollowsMoves(t *testing.T) {
	cfg := testConfig()
	cfg.PerPort = 2
	cfg.Ranges = []model.Range{{From: addr("10.99.0.100"), To: addr("10.99.0.199")}}
	c := &clock{time.Unix(1e9, 0)}
	p := NewPool(cfg, c.now, nil)
	step := func(what string) {
		t.Helper()
		if err := p.check(); err != nil {
			t.Fatalf("after %s: %v", what, err)
		}
	}
	lease := func(m net.HardwareAddr, port string) netip.Addr {
		t.Helper()
		a, err := p.OfferFrom(m.String(), netip.Addr{}, port)
		if err != nil {
			t.Fatalf("offer to %s on %s: %v", m, port, err)
		}
		step("offer to " + m.String())
		if _, ok := p.BindPort(m.String(), a, "", PortID{Name: port}); !ok {
			t.Fatalf("bind %s on %s refused", m, port)
		}
		step("bind " + m.String())
		return a
	}
	a1 := lease(mac(1), "a")
	a2 := lease(mac(2), "a")
	if _, err := p.OfferFrom(mac(3).String(), netip.Addr{}, "a"); !errors.Is(err, ErrPortFull) {
		t.Fatalf("third client on a full port: err %v, want ErrPortFull", err)
	}
	step("refused offer")
	// Client 1 moves to port b with its address: a has room again.
	if _, ok := p.BindPort(mac(1).String(), a1, "", PortID{Name: "b"}); !ok {
		t.Fatal("client 1 could not renew from port b")
	}
	step("move of client 1 to b")
	lease(mac(3), "a")
	// Client 2 releases: a has room for a fourth.
	if _, ok := p.Release(mac(2).String(), a2); !ok {
		t.Fatal("release of client 2 refused")
	}
	step("release of client 2")
	lease(mac(4), "a")
	if _, err := p.OfferFrom(mac(5).String(), netip.Addr{}, "a"); !errors.Is(err, ErrPortFull) {
		t.Fatalf("fifth client on a full port: err %v, want ErrPortFull", err)
	}
	// Leases that expired hold nothing: the index may keep them, the cap
	// must not count them.
	c.t = c.t.Add(cfg.Lease + time.Second)
	lease(mac(5), "a")
	lease(mac(6), "a")
}
