package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// recorder is a PortBinder that remembers its calls and what the store
// held when Bound was called.
type recorder struct {
	st      *memStore
	where   string // what Locate answers
	calls   []string
	inStore bool
}

func (r *recorder) Locate(mac string) PortID {
	r.calls = append(r.calls, "locate "+mac)
	return PortID{Name: r.where}
}
func (r *recorder) Holders(string, Lease) []string { return nil }
func (r *recorder) Bound(l Lease) {
	r.calls = append(r.calls, "bound "+l.Port+" "+l.IP.String())
	_, r.inStore = r.st.leases[l.IP]
}
func (r *recorder) Unbound(l Lease) { r.calls = append(r.calls, "unbound "+l.IP.String()) }

// TestLeaseBindsItsPort: the port a client sends from goes into its lease
// on disk, Bound hears of it only once it is stored (before the ACK is
// returned), and a RELEASE unbinds it.
func TestLeaseBindsItsPort(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	r := &recorder{st: st, where: "tap7"}
	h.Ports = r
	a := lease(t, h, mac(1))
	if got := st.leases[a].Port; got != "tap7" {
		t.Errorf("stored lease port = %q, want tap7", got)
	}
	if !r.inStore {
		t.Error("Bound was called before the lease was on disk")
	}
	rel, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithClientIP(a.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	h.Handle(rel)
	// The DISCOVER is located (the per-port cap), the REQUEST and the
	// RELEASE too: only the lease's own port may end it.
	want := []string{"locate 52:54:00:00:00:01", "locate 52:54:00:00:00:01", "bound tap7 " + a.String(), "locate 52:54:00:00:00:01", "unbound " + a.String()}
	if len(r.calls) != len(want) {
		t.Fatalf("calls = %q, want %q", r.calls, want)
	}
	for i := range want {
		if r.calls[i] != want[i] {
			t.Errorf("call %d = %q, want %q", i, r.calls[i], want[i])
		}
	}

	// A store that fails: no ACK, and no binding either.
	st.fail = true
	r.calls = nil
	off := h.Handle(discover(t, mac(2)))
	req, _ := dhcpv4.NewRequestFromOffer(off)
	if ack := h.Handle(req); ack != nil {
		t.Fatalf("ACK without a stored lease: %v", ack)
	}
	for _, c := range r.calls {
		if c[:5] == "bound" {
			t.Errorf("bound a lease that is not on disk: %s", c)
		}
	}
}

// TestRenewalKeepsPortWhenUnlocated: a renewal whose sender the bridge
// cache cannot place (its entry aged out and the notification of its
// return is not read yet) keeps the port of the lease it renews, rather
// than losing the binding; a new client that cannot be placed gets none.
func TestRenewalKeepsPortWhenUnlocated(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	c := &clock{time.Unix(1e9, 0)}
	h := newHandler(t, st, c)
	r := &recorder{st: st, where: "tap7"}
	h.Ports = r
	a := lease(t, h, mac(1))
	r.where = ""
	c.t = c.t.Add(30 * time.Minute)
	renew := discover(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip4(a)))
	renew.Options.Del(dhcpv4.OptionRequestedIPAddress)
	if ack := h.Handle(renew); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renewal: %v", ack)
	}
	if got := st.leases[a].Port; got != "tap7" {
		t.Errorf("renewed lease port = %q, want tap7 (kept)", got)
	}
	b := lease(t, h, mac(2))
	if got := st.leases[b].Port; got != "" {
		t.Errorf("unplaced new client got port %q", got)
	}
}
