package trace

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// guard is the bridge's anti-spoofing step for a packet sent from a guest
// port (table bridge guestnet, before any IP hook). It checks the source
// address; a traced packet has no MAC, so the hop names the MACs the port
// is bound to. ok is false when the packet is dropped.
func guard(h model.Host, port string, src netip.Addr) (Hop, bool) {
	var ips, macs []string
	for _, s := range h.Guard.Sources() {
		for _, b := range s.Binds {
			if b.Port != port {
				continue
			}
			mac := cmp.Or(b.MAC, "any")
			if !slices.Contains(macs, mac) {
				macs = append(macs, mac)
			}
			if !b.IP.IsValid() || b.IP == src {
				return Hop{"bridge", "pass", fmt.Sprintf("table bridge guestnet: port %s may send from %s (MAC %s, bound by %s)", port, src, mac, s.By)}, true
			}
			if !b.IP.IsUnspecified() && !slices.Contains(ips, b.IP.String()) {
				ips = append(ips, b.IP.String())
			}
		}
	}
	if len(macs) == 0 {
		return Hop{"bridge", "pass", fmt.Sprintf("port %s is unrestricted: no anti-spoofing binding", port)}, true
	}
	bound := cmp.Or(strings.Join(ips, ", "), "no address yet (DHCP only)")
	return Hop{"bridge", "drop", fmt.Sprintf("table bridge guestnet chain check: port %s may send only from %s (MAC %s); %s is dropped as spoofed (guestnet status lists the bindings)",
		port, bound, strings.Join(macs, ", "), src)}, false
}
