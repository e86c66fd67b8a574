package report

import (
	"cmp"
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
	// MAC and address) or "off" (the network has no anti-spoofing).
	State string `json:"state"`
	// By says where the binding comes from: "attach" (attach --ip/--mac,
	// or a DHCP static host of a bound MAC) and/or "lease" (guestnet serve).
	By    []string     `json:"by,omitempty"`
	MACs  []string     `json:"macs,omitempty"` // "any" when only addresses are bound
	IPs   []netip.Addr `json:"ips,omitempty"`
	AnyIP bool         `json:"any_ip,omitempty"` // a MAC bound alone, on a network without DHCP
}

func portGuard(n model.Network, port string, g model.Guard) PortGuard {
	pg := PortGuard{Port: port, State: "unrestricted"}
	if !n.Guarded() {
		pg.State = "off"
		return pg
	}
	for _, src := range g.Sources() {
		for _, b := range src.Binds {
			if b.Port != port {
				continue
			}
			pg.State = "bound"
			mac := cmp.Or(b.MAC, "any")
			if !slices.Contains(pg.MACs, mac) {
				pg.MACs = append(pg.MACs, mac)
			}
			if !slices.Contains(pg.By, src.By) {
				pg.By = append(pg.By, src.By)
			}
			if !b.IP.IsValid() {
				pg.AnyIP = true
			} else if !b.IP.IsUnspecified() && !slices.Contains(pg.IPs, b.IP) {
				pg.IPs = append(pg.IPs, b.IP)
			}
		}
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
