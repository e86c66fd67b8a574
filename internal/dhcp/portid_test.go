package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// idBinder is a PortBinder whose Locate answers a whole port identity.
type idBinder struct{ where PortID }

func (b *idBinder) Locate(string) PortID           { return b.where }
func (b *idBinder) Holders(string, Lease) []string { return nil }
func (b *idBinder) Bound(Lease)                    {}
func (b *idBinder) Unbound(Lease)                  {}

// TestLeaseKeepsPortIdentity: the lease on disk records the ifindex and
// address of the port it was bound on, beside its name, so that a later
// link of the same name is not taken for it; a renewal the bridge cannot
// place keeps the whole identity, and one from a new link of the same
// name records the new one.
func TestLeaseKeepsPortIdentity(t *testing.T) {
	st := &memStore{leases: map[netip.Addr]Lease{}}
	h := newHandler(t, st, &clock{time.Unix(1e9, 0)})
	first := PortID{Name: "vnet0", Index: 7, HW: "fe:54:00:00:00:01"}
	b := &idBinder{where: first}
	h.Ports = b
	a := lease(t, h, mac(1))
	if got := st.leases[a].PortID(); got != first {
		t.Fatalf("stored port = %+v, want %+v", got, first)
	}
	renew := func() {
		t.Helper()
		req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithClientIP(a.AsSlice()))
		if err != nil {
			t.Fatal(err)
		}
		if ack := h.Handle(req); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("renewal: %v", ack)
		}
	}
	b.where = PortID{}
	renew()
	if got := st.leases[a].PortID(); got != first {
		t.Errorf("unplaced renewal: port = %+v, want %+v kept", got, first)
	}
	second := PortID{Name: "vnet0", Index: 12, HW: "fe:54:00:00:00:01"}
	b.where = second
	renew()
	if got := st.leases[a].PortID(); got != second {
		t.Errorf("renewal from a new vnet0: port = %+v, want %+v", got, second)
	}
}
