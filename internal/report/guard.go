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
	// MAC and address, except a MAC bound to another port) or "off" (the
	// network has no anti-spoofing).
	State string `json:"state"`
	model.PortBinding
	// Spoofed are the sources of the port's frames dropped lately (an
	// unrestricted port's too: those that used a MAC bound elsewhere).
	Spoofed []model.Spoofed `json:"spoofed,omitempty"`
	// DroppedOther are the port's frames dropped lately that were neither
	// IPv4 nor ARP (IPv6, VLAN-tagged), by MAC and ether type.
	DroppedOther []model.OtherDrop `json:"dropped_other,omitempty"`
}

func portGuard(n model.Network, port string, g model.Guard) PortGuard {
	switch pb := g.Port(port); {
	case !n.Guarded():
		return PortGuard{Port: port, State: "off"}
	case pb.Bound():
		return PortGuard{Port: port, State: "bound", PortBinding: pb, Spoofed: g.SpoofedBy(port), DroppedOther: g.OtherBy(port)}
	}
	return PortGuard{Port: port, State: "unrestricted", Spoofed: g.SpoofedBy(port), DroppedOther: g.OtherBy(port)}
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
				what = pg.Sources()
			}
			fmt.Fprintf(b, "%-15s %-12s %s\n", pg.Port, n.Name, what)
			for _, x := range pg.Spoofed {
				fmt.Fprintf(b, "%-15s %-12s DROPPED %s\n", "", "", x.Summary())
			}
			for _, x := range pg.DroppedOther {
				fmt.Fprintf(b, "%-15s %-12s DROPPED %s\n", "", "", x.Summary())
			}
		}
	}
	if s.SpoofDropped > 0 {
		fmt.Fprintf(b, "frames dropped by anti-spoofing (a source not bound, a MAC bound to another port, or neither IPv4 nor ARP): %d\n", s.SpoofDropped)
	}
}
