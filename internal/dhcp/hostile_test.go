package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/model"
)

// The findings of a breaker who attacked the DHCP server from a guest:
// each test here failed before its fix.

func TestCleanHostname(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"vm1", "vm1"},
		{"Web-01", "Web-01"},
		{"vm1.lab.internal", "vm1"},     // FQDN: first label, as dnsmasq
		{"vm1.", "vm1"},                 // trailing dot
		{"wpad", ""},                    // WPAD proxy hijack
		{"WPAD", ""},                    // case-insensitive
		{"wpad.lab.internal", ""},       // the first label is what counts
		{"isatap", ""},                  //
		{"localhost", ""},               //
		{"localhost6", ""},              //
		{"evil\n10.99.0.5\x1b[31m", ""}, // forged row in `guestnet leases`
		{"two words", ""},               //
		{"*", ""},                       //
		{"-vm", ""},                     //
		{"vm-", ""},                     //
		{"a\x00b", ""},                  //
		{strings.Repeat("a", 63), strings.Repeat("a", 63)},
		{strings.Repeat("a", 64), ""},  // longer than a label
		{strings.Repeat("a", 300), ""}, // no PTR answer could carry it
		{".vm1", ""},                   // empty first label
		{"", ""},
	} {
		got, why := CleanHostname(c.in)
		if got != c.want {
			t.Errorf("CleanHostname(%q) = %q (%s), want %q", c.in, got, why, c.want)
		}
		if (got == "") != (why != "") && c.in != "" {
			t.Errorf("CleanHostname(%q): kept %q with reason %q", c.in, got, why)
		}
	}
}

func hostileHandler(t *testing.T) (*Handler, *memStore, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	h.Log = slog.New(slog.NewTextHandler(&logs, nil))
	h.Now = c.now
	return h, st, &logs
}

func TestRefusedHostnamesGetNoName(t *testing.T) {
	h, st, logs := hostileHandler(t)
	for i, name := range []string{"evil\nrow\x1b[31m", "wpad", "web.lab.internal", strings.Repeat("x", 300)} {
		a := netip.AddrFrom4([4]byte{10, 99, 0, byte(100 + i%3)})
		if i == 3 {
			a = addr("10.99.0.100") // reuse: client 0's lease is released first
			h.Handle(discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4(a))))
		}
		if typ := ask(t, h, mac(byte(1+i%3)), a, name); typ != dhcpv4.MessageTypeAck {
			t.Fatalf("REQUEST with host name %q: %s, want an ACK without the name", name, typ)
		}
		l := st.leases[a]
		want, _ := CleanHostname(name)
		if l.Hostname != want {
			t.Errorf("host name %q stored as %q, want %q", name, l.Hostname, want)
		}
	}
	if _, ok := h.Pool.Resolve("wpad"); ok {
		t.Error("wpad resolves to a guest")
	}
	if a, ok := h.Pool.Resolve("web"); !ok || a != addr("10.99.0.102") {
		t.Errorf("a guest's FQDN web.lab.internal: web resolves to %v %v, want 10.99.0.102", a, ok)
	}
	if n := h.Stats.BadName.Load(); n != 3 {
		t.Errorf("BadName = %d, want 3 (wpad, the escapes, 300 bytes)", n)
	}
	if strings.Count(logs.String(), "host name refused") != 1 {
		t.Errorf("want one rate-limited warning, logs:\n%s", logs)
	}
	// The one warning is the first refusal, the name with the escapes.
	if strings.Contains(logs.String(), "\x1b") || strings.Contains(logs.String(), "evil\n") || !strings.Contains(logs.String(), `evil\nrow\x1b[31m`) {
		t.Errorf("the refused name is not escaped in the log:\n%q", logs)
	}
}

func TestStoredBadNamesNotServed(t *testing.T) {
	exp := time.Unix(1e9, 0).Add(time.Hour)
	p := NewPool(testConfig(), (&clock{time.Unix(1e9, 0)}).now, []Lease{
		{MAC: mac(1).String(), IP: addr("10.99.0.100"), Hostname: "wpad", Expiry: exp},
		{MAC: mac(2).String(), IP: addr("10.99.0.101"), Hostname: "x\ny", Expiry: exp},
		{MAC: mac(3).String(), IP: addr("10.99.0.102"), Hostname: "web.lab.internal", Expiry: exp},
	})
	if _, ok := p.Resolve("wpad"); ok {
		t.Error("a stored wpad resolves")
	}
	if n, ok := p.Reverse(addr("10.99.0.101")); ok {
		t.Errorf("a stored name with a newline is served: %q", n)
	}
	if n, _ := p.Reverse(addr("10.99.0.102")); n != "web" {
		t.Errorf("stored FQDN served as %q, want web", n)
	}
}

func TestRelayedMessagesIgnored(t *testing.T) {
	h, _, logs := hostileHandler(t)
	free := h.Pool.Free()
	for i := 0; i < 3; i++ {
		r := h.Handle(discover(t, mac(byte(i+1)), dhcpv4.WithGatewayIP(net.IPv4(203, 0, 113, 53))))
		if r != nil {
			t.Fatalf("DISCOVER with giaddr answered: %s", r.Summary())
		}
	}
	if h.Pool.Free() != free {
		t.Errorf("relayed DISCOVERs held offers: free %d -> %d", free, h.Pool.Free())
	}
	if h.Stats.Relayed.Load() != 3 || h.Stats.Ignored.Load() != 3 {
		t.Errorf("Relayed %d Ignored %d, want 3 and 3", h.Stats.Relayed.Load(), h.Stats.Ignored.Load())
	}
	if c := strings.Count(logs.String(), "relayed message"); c != 1 {
		t.Errorf("%d warnings, want 1 (rate-limited):\n%s", c, logs)
	}
}

func TestRepliesStayOnLink(t *testing.T) {
	h, _, _ := hostileHandler(t)
	far := net.IPv4(203, 0, 113, 53)
	inform := discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(far))
	if r := h.Handle(inform); r != nil {
		t.Errorf("INFORM with ciaddr %s answered (it would be unicast there)", far)
	}
	near := net.IPv4(10, 99, 0, 50)
	inform = discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(near))
	r := h.Handle(inform)
	if r == nil {
		t.Fatal("INFORM from an address of the subnet not answered")
	}
	if d := h.destination(inform, r).String(); d != "10.99.0.50:68" {
		t.Errorf("INFORM ACK goes to %s, want 10.99.0.50:68", d)
	}
	// A DISCOVER naming a far ciaddr gets its offer on the bridge: to its
	// own MAC and the address offered (broadcast with the broadcast bit).
	disc := discover(t, mac(2), dhcpv4.WithClientIP(far))
	off := h.Handle(disc)
	if off == nil {
		t.Fatal("no offer")
	}
	if d, want := h.destination(disc, off).String(), off.YourIPAddr.String()+":68 at "+mac(2).String(); d != want {
		t.Errorf("offer to a client naming ciaddr %s goes to %s, want %s", far, d, want)
	}
	disc = discover(t, mac(3), dhcpv4.WithClientIP(far), dhcpv4.WithBroadcast(true))
	if off = h.Handle(disc); off == nil {
		t.Fatal("no offer")
	}
	if d := h.destination(disc, off).String(); d != "255.255.255.255:68" {
		t.Errorf("offer to a client naming ciaddr %s with the broadcast bit goes to %s, want broadcast", far, d)
	}
}

// TestStoreNotAFile: a directory, a dangling link (into a missing folder
// or to a missing file), a link to a sound store and a FIFO where
// leases.db should be are each refused with a *CorruptError (serve exits 3
// on it) that says what is there, and nothing is created through a link.
func TestStoreNotAFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	st, err := OpenBolt(good, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, c := range []struct {
		name, want string
		make       func(p string) error
	}{
		{"directory", "a directory, not a lease database", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"link into a missing folder", "a symbolic link (to " + dir + "/gone/leases.db)", func(p string) error { return os.Symlink(filepath.Join(dir, "gone", "leases.db"), p) }},
		{"link to a missing file", "a symbolic link", func(p string) error { return os.Symlink(filepath.Join(dir, "missing.db"), p) }},
		{"link to a sound store", "a symbolic link", func(p string) error { return os.Symlink(good, p) }},
		{"fifo", "not a regular file", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		if err := c.make(p); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{false, true} {
			st, err := OpenBolt(p, ro, time.Second)
			var bad *CorruptError
			if !errors.As(err, &bad) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "--recover-leases") {
				t.Errorf("%s (read-only %v): %v; want a CorruptError saying %q, without --recover-leases", c.name, ro, err, c.want)
			}
			if st != nil {
				st.Close()
			}
		}
		if _, err := RecoverBolt(p, time.Unix(1e9, 0), time.Second); !strings.Contains(fmt.Sprint(err), c.want) {
			t.Errorf("%s: --recover-leases: %v; want it refused", c.name, err)
		}
		t.Logf("%s: %v", c.name, func() error { _, err := OpenBolt(p, false, time.Second); return err }())
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a store was created through a dangling link: %v", err)
	}
}

// wideConfig is testConfig with ten range addresses, .100 to .109.
func wideConfig(perPort int) Config {
	cfg := testConfig()
	cfg.Ranges = []model.Range{{From: addr("10.99.0.100"), To: addr("10.99.0.109")}}
	cfg.PerPort = perPort
	return cfg
}

// randomMAC is the n-th client MAC a hostile guest invents.
func randomMAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xee, 0, 0, byte(n >> 8), byte(n)}
}

// TestProbeLiarCannotEmptyPool: the breaker's guest answered ARP for every
// address while sending DISCOVERs from random MACs, and the server
// abandoned the whole pool in 6 s. Now only LiarAfter addresses are
// abandoned on its word; after that its answers are not believed (one
// warning naming it), and an honest client is offered an address. Another
// MAC answering for one address is still believed.
func TestProbeLiarCannotEmptyPool(t *testing.T) {
	var logs bytes.Buffer
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := &Handler{Pool: NewPool(wideConfig(0), c.now, nil), Store: st, Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: c.now}
	const liar = "02:00:00:00:0b:ad"
	fp := &fakeProber{by: map[netip.Addr]string{}}
	for a := addr("10.99.0.100"); a.Compare(addr("10.99.0.108")) <= 0; a = a.Next() {
		fp.by[a] = liar
	}
	fp.by[addr("10.99.0.109")] = "02:00:00:00:00:99" // an honest squatter
	h.Prober = fp
	for i := 0; i < 5; i++ {
		h.Handle(discover(t, randomMAC(i)))
	}
	abandoned := func() (n int) {
		for _, l := range h.Pool.Leases() {
			if l.Declined && l.MAC == "" {
				n++
			}
		}
		return n
	}
	if n := abandoned(); n != LiarAfter {
		t.Errorf("%d addresses abandoned on the word of one MAC, want %d", n, LiarAfter)
	}
	if h.Probes.Liar.Load() == 0 {
		t.Error("no answer counted as not believed")
	}
	if n := strings.Count(logs.String(), "answers ARP for many addresses"); n != 1 || !strings.Contains(logs.String(), liar) {
		t.Errorf("%d warnings about the liar, want 1 naming %s:\n%s", n, liar, logs.String())
	}
	// Another host's answer is still believed: the address it holds is
	// abandoned, not offered.
	off := h.Handle(discover(t, mac(9), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(addr("10.99.0.109"))))))
	if off == nil || addrOf(off.YourIPAddr) == addr("10.99.0.109") {
		t.Errorf("the address an honest host answers for was offered: %v", off)
	}
	if n := abandoned(); n != LiarAfter+1 {
		t.Errorf("%d addresses abandoned, want %d (the liar's first ones and 10.99.0.109)", n, LiarAfter+1)
	}
	// An honest client of the first pool still gets an address.
	if a := offered(t, h, mac(1)); !a.IsValid() {
		t.Error("an honest client got no offer after the liar's flood")
	}
}

// TestReclaimAbandonedWhenDry: every address was abandoned (three hosts
// answered); the hosts left. Until ReclaimAfter no address is given back;
// after it, the oldest abandoned address is probed again and offered, and
// its quarantine is off the disk too. One still answered for is abandoned
// again and the next one reclaimed.
func TestReclaimAbandonedWhenDry(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	fp := &fakeProber{by: map[netip.Addr]string{}}
	for i, a := range []string{"10.99.0.100", "10.99.0.101", "10.99.0.102"} {
		fp.by[addr(a)] = fmt.Sprintf("02:00:00:00:0b:%02x", i)
		c.t = c.t.Add(time.Second) // abandoned one after another: .100 first
		h.Pool.Abandon(addr(a))
		st.leases[addr(a)] = Lease{IP: addr(a), Declined: true, Expiry: c.t.Add(Quarantine)}
	}
	h.Prober = fp
	if a := offered(t, h, mac(1)); a.IsValid() {
		t.Fatalf("offered %s while every address is freshly abandoned", a)
	}
	c.t = c.t.Add(ReclaimAfter)
	delete(fp.by, addr("10.99.0.101"))
	fp.probed = nil
	// .100 is the oldest: reclaimed, probed, still answered for, abandoned
	// again; then .101, probed, silent, offered.
	if a := offered(t, h, mac(1)); a != addr("10.99.0.101") {
		t.Fatalf("after %v the client got %v, want 10.99.0.101 (reclaimed; .100 still answers); probed %v", ReclaimAfter, a, fp.probed)
	}
	if !slices.Equal(fp.probed, []netip.Addr{addr("10.99.0.100"), addr("10.99.0.101")}) {
		t.Errorf("probed %v, want .100 then .101 (each reclaimed address checked again)", fp.probed)
	}
	if l, ok := st.leases[addr("10.99.0.101")]; ok {
		t.Errorf("the reclaimed address's quarantine is still on disk: %+v", l)
	}
	if l := st.leases[addr("10.99.0.100")]; !l.Declined || !l.Expiry.Equal(c.t.Add(Quarantine)) {
		t.Errorf(".100 still answered for: %+v, want abandoned again for %v", l, Quarantine)
	}
}

// portRecorder places every MAC on one port, as the bridge's forwarding
// database does for a guest sending from invented MACs.
type portRecorder struct{ where map[string]string }

func (p *portRecorder) Locate(mac string) PortID       { return PortID{Name: p.where[mac]} }
func (p *portRecorder) Holders(string, Lease) []string { return nil }
func (p *portRecorder) Bound(Lease)                    {}
func (p *portRecorder) Unbound(Lease)                  {}

// TestPerPortCap: one guest inventing client MACs took the whole pool (10
// REQUESTs), or emptied it for 60 s with DISCOVERs alone. With per_port 3
// its port holds at most 3 addresses, leases and offers together: the
// fourth DISCOVER is not answered and a REQUEST is NAKed (counted, one
// warning); renewals, static hosts and other ports are not capped;
// clients no port is known for share one share; expired offers free the
// port's share.
func TestPerPortCap(t *testing.T) {
	var logs bytes.Buffer
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := &Handler{Pool: NewPool(wideConfig(3), c.now, nil), Store: st, Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: c.now}
	ports := &portRecorder{where: map[string]string{}}
	h.Ports = ports
	for i := 0; i < 10; i++ {
		ports.where[randomMAC(i).String()] = "tap7"
	}
	a0 := lease(t, h, randomMAC(0))
	lease(t, h, randomMAC(1))
	if offered(t, h, randomMAC(2)) == (netip.Addr{}) {
		t.Fatal("third client of the port got no offer")
	}
	for i := 3; i < 10; i++ {
		if a := offered(t, h, randomMAC(i)); a.IsValid() {
			t.Fatalf("client %d of one port offered %s, over its cap of 3", i+1, a)
		}
	}
	if typ := ask(t, h, randomMAC(3), addr("10.99.0.109"), ""); typ != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST over the port's cap: %s, want NAK", typ)
	}
	if n := h.Stats.PortFull.Load(); n != 8 {
		t.Errorf("PortFull = %d, want 8 (7 DISCOVERs, 1 REQUEST)", n)
	}
	if n := strings.Count(logs.String(), "more addresses than its share"); n != 1 {
		t.Errorf("%d warnings, want 1 (rate-limited):\n%s", n, logs.String())
	}
	if free := h.Pool.Free(); free != 7 {
		t.Errorf("%d addresses free, want 7: the rest of the pool stays for other guests", free)
	}
	// Not capped: a renewal, the static host, another port, an unplaced sender.
	if typ := ask(t, h, randomMAC(0), a0, ""); typ != dhcpv4.MessageTypeAck {
		t.Errorf("renewal on a full port: %s, want ACK", typ)
	}
	ports.where["52:54:00:00:00:ff"] = "tap7"
	if a := offered(t, h, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xff}); a != addr("10.99.0.10") {
		t.Errorf("static host on a full port offered %v, want 10.99.0.10", a)
	}
	ports.where[mac(1).String()] = "tap8"
	if a := offered(t, h, mac(1)); !a.IsValid() {
		t.Error("a client of another port got no offer")
	}
	// Clients the bridge cannot place (a guest sending from its own MAC in
	// the name of invented ones) share one share of the pool.
	for i := 2; i < 5; i++ {
		if a := offered(t, h, mac(byte(i))); !a.IsValid() {
			t.Errorf("unplaced client %d of 3 got no offer", i-1)
		}
	}
	if a := offered(t, h, mac(5)); a.IsValid() {
		t.Errorf("a 4th unplaced client was offered %s: the unplaced share is 3", a)
	}
	// The third client's offer runs out: the port may take another.
	c.t = c.t.Add(OfferHold + time.Second)
	if a := offered(t, h, randomMAC(3)); !a.IsValid() {
		t.Error("no offer after the port's outstanding offer expired")
	}
}
