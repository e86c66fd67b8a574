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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
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
	for i, name := range []string{"wpad", "evil\nrow\x1b[31m", "web.lab.internal", strings.Repeat("x", 300)} {
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
	if strings.Contains(logs.String(), "\x1b") {
		t.Errorf("an escape byte reached the log:\n%q", logs)
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
	// A DISCOVER naming a far ciaddr gets its offer broadcast on the bridge.
	disc := discover(t, mac(2), dhcpv4.WithClientIP(far))
	off := h.Handle(disc)
	if off == nil {
		t.Fatal("no offer")
	}
	if d := h.destination(disc, off).String(); d != "255.255.255.255:68" {
		t.Errorf("offer to a client naming ciaddr %s goes to %s, want broadcast", far, d)
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
