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
	calls   []string
	inStore bool
}

func (r *recorder) Locate(mac string) string { r.calls = append(r.calls, "locate "+mac); return "tap7" }
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
	r := &recorder{st: st}
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
	want := []string{"locate 52:54:00:00:00:01", "bound tap7 " + a.String(), "unbound " + a.String()}
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
