package report

import (
	"fmt"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// PortGuard is what one guest port may send from.
type PortGuard struct {
	Port string `json:"port"`
	// State is "bound", "unrestricted" (nothing bound: it may send from any
	// MAC and address) or "off" (the network has no anti-spoofing).
	State string `json:"state"`
	model.PortBinding
}

func portGuard(n model.Network, port string, g model.Guard) PortGuard {
	switch pb := g.Port(port); {
	case !n.Guarded():
		return PortGuard{Port: port, State: "off"}
	case pb.Bound():
		return PortGuard{Port: port, State: "bound", PortBinding: pb}
	}
	return PortGuard{Port: port, State: "unrestricted"}
}

// guardText lists every guest port and what it may send from.
func guardText(b *strings.Builder, s Status) {
	first := true
	for _, n := range s.Networks {
		for _, pg := range n.Guard {
			if first {
				fmt.Fprintf(b, "\n%-15s %-12s %s\n", "GUEST PORT", "NETWORK", "MAY SEND FROM")
				first = false
			}
			var what string
			switch pg.State {
			case "off":
				what = "anything (the network has anti_spoofing: false or mode open)"
			case "unrestricted":
				what = "UNRESTRICTED: nothing bound (guestnet attach --ip/--mac, or a lease from guestnet serve)"
			default:
				ips := make([]string, len(pg.IPs))
				for i, a := range pg.IPs {
					ips[i] = a.String()
				}
				addrs := strings.Join(ips, ",")
				switch {
				case pg.AnyIP:
					addrs = "any address"
				case addrs == "":
					addrs = "no address yet (DHCP only, until guestnet serve leases it one)"
				}
				what = fmt.Sprintf("MAC %s, %s (bound by %s)", strings.Join(pg.MACs, ","), addrs, strings.Join(pg.By, "+"))
			}
			fmt.Fprintf(b, "%-15s %-12s %s\n", pg.Port, n.Name, what)
		}
	}
	if s.SpoofDropped > 0 {
		fmt.Fprintf(b, "frames dropped by anti-spoofing (a source not bound, or neither IPv4 nor ARP): %d\n", s.SpoofDropped)
	}
}
