package trace

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// guard is the bridge's anti-spoofing step for a packet sent from a guest
// port (table bridge guestnet, before any IP hook). It checks the source
// address; a traced packet has no MAC, so the hop names the MACs the port
// is bound to. ok is false when the packet is dropped.
func guard(h model.Host, port string, src netip.Addr) (Hop, bool) {
	pb := h.Guard.Port(port)
	switch {
	case !pb.Bound():
		return Hop{"bridge", "pass", fmt.Sprintf("port %s is unrestricted: no anti-spoofing binding", port)}, true
	case pb.Allows(src):
		return Hop{"bridge", "pass", fmt.Sprintf("table bridge guestnet: port %s may send from %s (MAC %s, bound by %s)",
			port, src, strings.Join(pb.MACs, ", "), strings.Join(pb.By, "+"))}, true
	}
	ips := make([]string, len(pb.IPs))
	for i, a := range pb.IPs {
		ips[i] = a.String()
	}
	bound := cmp.Or(strings.Join(ips, ", "), "no address yet (DHCP only)")
	return Hop{"bridge", "drop", fmt.Sprintf("table bridge guestnet chain check: port %s may send only from %s (MAC %s); %s is dropped as spoofed (guestnet status lists the bindings)",
		port, bound, strings.Join(pb.MACs, ", "), src)}, false
}
