package dhcp

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// bridge is a PortBinder over a pretend bridge: where says on which port
// the forwarding database last saw each MAC, ports are the bridge's ports,
// declared the ports attach bound a MAC to. Holders follows the daemon's
// rule: the declared ports, else the lease's port while it is a port of
// the bridge.
type bridge struct {
	where    map[string]string
	ports    map[string]bool
	declared map[string][]string
	bound    []string
	unbound  []string
}

func (b *bridge) Locate(mac string) PortID { return PortID{Name: b.where[mac]} }
func (b *bridge) Holders(mac string, l Lease) []string {
	if ps := b.declared[mac]; len(ps) > 0 {
		return ps
	}
	if l.MAC == mac && l.Port != "" && b.ports[l.Port] {
		return []string{l.Port}
	}
	return nil
}
func (b *bridge) Bound(l Lease)   { b.bound = append(b.bound, l.Port+" "+l.MAC+" "+l.IP.String()) }
func (b *bridge) Unbound(l Lease) { b.unbound = append(b.unbound, l.Port+" "+l.MAC+" "+l.IP.String()) }

func message(t *testing.T, typ dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithHwAddr(hw)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestNoStealingFromAnotherPort: a guest on tap2 cannot take, release or
// decline the lease of the guest on tap1, whatever MAC it names, even
// when its spoofed frames moved the forwarding database to tap2; each try
// is dropped (no reply, no NAK), counted, and moves nothing. The victim
// still renews from its own port.
func TestNoStealingFromAnotherPort(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	victim, attacker := mac(1), mac(2)
	br := &bridge{where: map[string]string{victim.String(): "tap1", attacker.String(): "tap2"}, ports: map[string]bool{"tap1": true, "tap2": true}}
	h.Ports = br
	va := lease(t, h, victim)
	lease(t, h, attacker)
	want := st.leases[va]
	if want.Port != "tap1" {
		t.Fatalf("victim's lease on port %q, want tap1", want.Port)
	}
	br.where[victim.String()] = "tap2" // frames with the victim's MAC came from tap2
	br.bound = nil
	for i, m := range []*dhcpv4.DHCPv4{
		message(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(va)))),
		message(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip4(va))), // a "renewal"
		message(t, dhcpv4.MessageTypeRelease, victim, dhcpv4.WithClientIP(ip4(va))),
		message(t, dhcpv4.MessageTypeDecline, victim, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(va)))),
	} {
		if resp := h.Handle(m); resp != nil {
			t.Errorf("%s naming the victim from tap2: answered %s", m.MessageType(), resp.MessageType())
		}
		if got := h.Stats.Foreign.Load(); got != uint64(i+1) {
			t.Errorf("after %s: %d counted as foreign, want %d", m.MessageType(), got, i+1)
		}
		if got := st.leases[va]; got != want {
			t.Errorf("after %s from tap2 the victim's lease is %+v, want %+v", m.MessageType(), got, want)
		}
		if l, ok := h.Pool.Lookup(victim.String()); !ok || l != want {
			t.Errorf("after %s from tap2 the pool holds %+v (%v), want %+v", m.MessageType(), l, ok, want)
		}
	}
	if len(br.bound)+len(br.unbound) > 0 {
		t.Errorf("bindings moved: bound %q, unbound %q", br.bound, br.unbound)
	}

	// The victim renews from its own port.
	br.where[victim.String()] = "tap1"
	c.t = c.t.Add(30 * time.Minute)
	ack := h.Handle(message(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip4(va))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || st.leases[va].Port != "tap1" {
		t.Errorf("the victim's renewal from tap1: %v, lease %+v", ack, st.leases[va])
	}
}

// TestMACMovesWithItsVM: once the holder's port has left the bridge (its
// VM migrated, QEMU exited and its TAP went), the same MAC asking from a
// new port is taken, and the lease and its binding follow it there.
func TestMACMovesWithItsVM(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	vm := mac(1)
	br := &bridge{where: map[string]string{vm.String(): "tap1"}, ports: map[string]bool{"tap1": true, "tap3": true}}
	h.Ports = br
	a := lease(t, h, vm)
	br.where[vm.String()] = "tap3"
	req := message(t, dhcpv4.MessageTypeRequest, vm, dhcpv4.WithClientIP(ip4(a)))
	if resp := h.Handle(req); resp != nil {
		t.Fatalf("a REQUEST from tap3 while tap1 holds the MAC was answered: %s", resp.MessageType())
	}
	delete(br.ports, "tap1") // the old TAP is gone
	ack := h.Handle(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("a REQUEST from tap3 after tap1 left: %v", ack)
	}
	if got := st.leases[a].Port; got != "tap3" {
		t.Errorf("lease port after the move = %q, want tap3", got)
	}
	if want := "tap3 " + vm.String() + " " + a.String(); !slices.Contains(br.bound, want) {
		t.Errorf("bound %q, want %q among them", br.bound, want)
	}
}

// TestDeclaredMACOnlyFromItsPorts: a MAC attach bound to a port (a static
// host's, say) is served only from that port, lease or not.
func TestDeclaredMACOnlyFromItsPorts(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	static, _ := net.ParseMAC("52:54:00:00:00:ff") // testConfig's static host
	br := &bridge{where: map[string]string{static.String(): "tap6"}, ports: map[string]bool{"tap5": true, "tap6": true},
		declared: map[string][]string{static.String(): {"tap5"}}}
	h.Ports = br
	req := message(t, dhcpv4.MessageTypeRequest, static, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10))))
	if resp := h.Handle(req); resp != nil || h.Stats.Foreign.Load() != 1 {
		t.Errorf("the static host's MAC from tap6: answered %v, %d foreign", resp, h.Stats.Foreign.Load())
	}
	br.where[static.String()] = "tap5"
	if ack := h.Handle(req); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("the static host's MAC from its port tap5: %v", ack)
	}
}

// TestUnplacedSenderIsNotDropped: a sender the bridge cache cannot place
// is not judged here (the kernel's check is the guard); its renewal keeps
// the lease's port.
func TestUnplacedSenderIsNotDropped(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	vm := mac(1)
	br := &bridge{where: map[string]string{vm.String(): "tap1"}, ports: map[string]bool{"tap1": true}}
	h.Ports = br
	a := lease(t, h, vm)
	delete(br.where, vm.String())
	ack := h.Handle(message(t, dhcpv4.MessageTypeRequest, vm, dhcpv4.WithClientIP(ip4(a))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || st.leases[a].Port != "tap1" || h.Stats.Foreign.Load() != 0 {
		t.Errorf("unplaced renewal: %v, lease %+v, %d foreign", ack, st.leases[a], h.Stats.Foreign.Load())
	}
}

// TestForeignWarningsAreRateLimited: a flood of stolen requests makes one
// warning per ForeignLogEvery, the next one saying how many it held back.
func TestForeignWarningsAreRateLimited(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	var logs bytes.Buffer
	h.Log = slog.New(slog.NewTextHandler(&logs, nil))
	h.Now = c.now
	victim := mac(1)
	br := &bridge{where: map[string]string{victim.String(): "tap1"}, ports: map[string]bool{"tap1": true, "tap2": true}}
	h.Ports = br
	a := lease(t, h, victim)
	br.where[victim.String()] = "tap2"
	steal := message(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a))))
	warnings := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "bound to another port") {
				out = append(out, l)
			}
		}
		return out
	}
	for range 5 {
		h.Handle(steal)
		c.t = c.t.Add(time.Second)
	}
	if w := warnings(); len(w) != 1 || !strings.Contains(w[0], "from_port=tap2") || !strings.Contains(w[0], "bound_to=tap1") {
		t.Fatalf("after 5 drops in 5 s: warnings %q, want one naming tap2 and tap1", w)
	}
	c.t = c.t.Add(ForeignLogEvery)
	h.Handle(steal)
	if w := warnings(); len(w) != 2 || !strings.Contains(w[1], "dropped_since_last_warning=4") {
		t.Errorf("after the quiet time: warnings %q, want a second one counting 4 held back", w)
	}
	if got := h.Stats.Foreign.Load(); got != 6 {
		t.Errorf("counted %d foreign messages, want 6", got)
	}
}

// TestUnboundOnlyWhatALeaseReplaced: a new guest's lease binds its port
// and replaces no binding, so the handler reports nothing to unbind (the
// daemon then writes one element, without a sync of the learned sets); a
// renewal from the same port neither. A lease that takes the place of
// another binding reports it: the same MAC from another port, and the
// same MAC at another address.
func TestUnboundOnlyWhatALeaseReplaced(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	vm := mac(1)
	br := &bridge{where: map[string]string{vm.String(): "tap1"}, ports: map[string]bool{"tap1": true, "tap2": true}}
	h.Ports = br
	a := lease(t, h, vm)
	renew := func() {
		t.Helper()
		ack := h.Handle(message(t, dhcpv4.MessageTypeRequest, vm, dhcpv4.WithClientIP(ip4(a))))
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("renewal of %s: %v", a, ack)
		}
	}
	renew()
	if len(br.bound) != 2 || len(br.unbound) != 0 {
		t.Fatalf("new lease and renewal: bound %q, unbound %q; want two bound, none unbound", br.bound, br.unbound)
	}

	// The VM's old port left the bridge; it asks again from tap2.
	delete(br.ports, "tap1")
	br.where[vm.String()] = "tap2"
	renew()
	want := "tap1 " + vm.String() + " " + a.String()
	if len(br.unbound) != 1 || br.unbound[0] != want {
		t.Fatalf("after the move to tap2: unbound %q, want [%q]", br.unbound, want)
	}

	// It asks for another address: its old one ends.
	other := addr("10.99.0.102")
	if other == a {
		other = addr("10.99.0.101")
	}
	br.unbound = nil
	ack := h.Handle(message(t, dhcpv4.MessageTypeRequest, vm, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(other)))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("request of %s: %v", other, ack)
	}
	want = "tap2 " + vm.String() + " " + a.String()
	if len(br.unbound) != 1 || br.unbound[0] != want {
		t.Fatalf("after the move to %s: unbound %q, want [%q]", other, br.unbound, want)
	}
}
