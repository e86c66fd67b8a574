package report

import (
	"fmt"
	"net/netip"
	"slices"
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
	// FirstCome says the port claims its IPv6 addresses first-come (RFC
	// 6620); Claims6 are those it holds now.
	FirstCome bool `json:"first_come,omitempty"`
	// IPv6Unchecked: a port of a first-come network that no IPv6 rule
	// checks: guestnet attach did not add it (set guests6) and guestnet
	// serve does not guard it (guests6_learned), e.g. no daemon runs.
	IPv6Unchecked bool         `json:"ipv6_unchecked,omitempty"`
	Claims6       []netip.Addr `json:"claims6,omitempty"`
	// Dropped6 are the port's IPv6 frames dropped lately: for their source,
	// as router advertisements or DHCPv6 server messages, or as neighbour
	// advertisements for an address the port does not hold, each with why.
	Dropped6 []model.Drop6 `json:"dropped6,omitempty"`
}

func portGuard(n model.Network, port string, g model.Guard) PortGuard {
	pg := PortGuard{Port: port, State: "unrestricted", Spoofed: g.SpoofedBy(port), DroppedOther: g.OtherBy(port),
		FirstCome: n.FirstCome() && (slices.Contains(g.Guests6, port) || slices.Contains(g.LearnedGuests6, port)), Claims6: g.ClaimsOf(port), Dropped6: g.Dropped6By(port)}
	pg.IPv6Unchecked = n.FirstCome() && g.On && !pg.FirstCome
	switch pb := g.Port(port); {
	case !n.Guarded():
		return PortGuard{Port: port, State: "off"}
	case pb.Bound():
		pg.State, pg.PortBinding = "bound", pb
	}
	return pg
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
			switch {
			case pg.State == "off":
				what = "anything (the network has anti_spoofing: false or mode open)"
			case pg.State == "unrestricted" && pg.FirstCome:
				what = "UNRESTRICTED IPv4 and ARP: nothing bound (guestnet attach --ip/--mac, or a lease from guestnet serve); IPv6 first-come"
			case pg.State == "unrestricted":
				what = "UNRESTRICTED: nothing bound (guestnet attach --ip/--mac, or a lease from guestnet serve)"
			default:
				what = pg.Sources()
			}
			fmt.Fprintf(b, "%-15s %-12s %s\n", pg.Port, n.Name, what)
			if pg.IPv6Unchecked {
				fmt.Fprintf(b, "%-15s %-12s %s\n", "", "", "IPv6 UNCHECKED (no RA guard, no source check): not attached by guestnet, and guestnet serve, which guards such ports, does not (is it running?)")
			}
			if pg.FirstCome || len(pg.Claims6) > 0 {
				fmt.Fprintf(b, "%-15s %-12s %s\n", "", "", claims6Text(pg))
			}
			for _, x := range pg.Spoofed {
				fmt.Fprintf(b, "%-15s %-12s DROPPED %s\n", "", "", x.Summary())
			}
			for _, x := range pg.Dropped6 {
				fmt.Fprintf(b, "%-15s %-12s DROPPED %s\n", "", "", x.Summary())
			}
			for _, x := range pg.DroppedOther {
				fmt.Fprintf(b, "%-15s %-12s DROPPED %s\n", "", "", x.Summary())
			}
		}
	}
	for _, n := range s.Networks {
		for _, x := range n.VXLANDrops {
			fmt.Fprintf(b, "%-15s %-12s KEPT LOCAL %s\n", n.VXLAN, n.Name, x.Summary())
		}
	}
	if s.VXLANDropped > 0 {
		fmt.Fprintf(b, "frames kept off the VXLAN ports of stretched networks (DHCP, ARP for the gateway, the gateway MAC): %d\n", s.VXLANDropped)
	}
	if s.SpoofDropped > 0 {
		fmt.Fprintf(b, "frames dropped by anti-spoofing (a source not bound or held by another port, a MAC bound to another port, a guest's router advertisement, or neither IPv4, IPv6 nor ARP): %d\n", s.SpoofDropped)
	}
}

// claims6Text says which IPv6 addresses a port holds by first-come claim:
// "IPv6 claimed first (3): fd42:99::5, fe80::1".
func claims6Text(pg PortGuard) string {
	if len(pg.Claims6) == 0 {
		return "IPv6 claimed first: none yet (the port claims the addresses it uses first, RFC 6620)"
	}
	addrs := make([]string, len(pg.Claims6))
	for i, a := range pg.Claims6 {
		addrs[i] = a.String()
	}
	return fmt.Sprintf("IPv6 claimed first (%d): %s", len(addrs), strings.Join(addrs, ", "))
}
