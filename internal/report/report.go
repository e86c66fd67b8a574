// Package report turns observed state into what a person or a tool reads:
// the status of guestnet's networks and the return routes other hosts need.
// It is pure.
package report

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// Routes returns the commands a peer host runs so it can reach a routed
// network's guests through this host. via is the host's address facing the
// peers; when it is not valid it is the address on the interface that holds
// peer's subnet, or else on the interface of the default route.
func Routes(n model.Network, h model.Host, via, peer netip.Addr, forOS string) ([]string, error) {
	if !n.IPv4.IsValid() {
		return nil, fmt.Errorf("routes %s: network has no ipv4 subnet", n.Name)
	}
	if !via.IsValid() {
		var err error
		if via, err = facing(h, peer, n.Bridge); err != nil {
			return nil, fmt.Errorf("routes %s: %w", n.Name, err)
		}
	}
	sub := n.Subnet()
	switch forOS {
	case "linux", "":
		return []string{fmt.Sprintf("ip route add %s via %s", sub, via)}, nil
	case "windows":
		return []string{fmt.Sprintf("route -p add %s mask %s %s", sub.Addr(), maskString(sub.Bits()), via)}, nil
	}
	return nil, fmt.Errorf("routes: --for %q: want linux or windows", forOS)
}

func maskString(bits int) string {
	v := ^uint32(0) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func facing(h model.Host, peer netip.Addr, bridge string) (netip.Addr, error) {
	if peer.IsValid() {
		for _, l := range h.Links {
			for _, a := range l.Addrs {
				if a.Masked().Contains(peer) && l.Name != bridge {
					return a.Addr(), nil
				}
			}
		}
		return netip.Addr{}, fmt.Errorf("no interface holds a subnet with %s: give --via", peer)
	}
	for _, r := range h.Routes {
		if r.Dst.Bits() != 0 {
			continue
		}
		if l, ok := h.Link(r.Dev); ok && len(l.Addrs) > 0 {
			return l.Addrs[0].Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no default route to tell which address faces the peers: give --via or --peer")
}

// NetworkStatus is one network as status shows it.
type NetworkStatus struct {
	Name    string         `json:"name"`
	Mode    model.Mode     `json:"mode"`
	Bridge  string         `json:"bridge"`
	Present bool           `json:"present"`
	Up      bool           `json:"up"`
	MTU     int            `json:"mtu,omitempty"`
	Addrs   []netip.Prefix `json:"addrs,omitempty"`
	Ports   []string       `json:"ports,omitempty"`
	Uplink  string         `json:"uplink,omitempty"`
	Rules   int            `json:"rules"`
	// Forwards counts the network's declared forwards and the map elements
	// they are in the kernel (one per source, listen address and port).
	Forwards   int `json:"forwards"`
	ForwardsIn int `json:"forward_elements_in_kernel"`
	// Guard says, for each guest port, what it may send from.
	Guard []PortGuard `json:"port_guard,omitempty"`
}

// Status is guestnet's view of one namespace.
type Status struct {
	Networks   []NetworkStatus      `json:"networks"`
	IPForward  bool                 `json:"ip_forward"`
	BridgeNF   bool                 `json:"bridge_nf_call_iptables"`
	Rules      int                  `json:"rules"`
	DockerUser int                  `json:"docker_user_rules"`
	Foreign    []model.ForeignChain `json:"foreign_drop_chains,omitempty"`
	// SpoofDropped counts frames the anti-spoofing table dropped: spoofed
	// sources, and frames of bound ports that are neither IPv4 nor ARP.
	SpoofDropped uint64 `json:"spoofed_frames_dropped"`
}

// MakeStatus combines the state file and the observed host.
func MakeStatus(st state.State, h model.Host) Status {
	s := Status{IPForward: h.IPForward, BridgeNF: h.BridgeNFCallIPTables, Rules: h.Ruleset.RuleCount(),
		DockerUser: len(h.Ruleset.DockerUser) + len(h.Ruleset.DockerUser6), Foreign: h.Foreign.ForwardDrop, SpoofDropped: h.Guard.Dropped}
	for _, n := range st.Sorted() {
		ns := NetworkStatus{Name: n.Name, Mode: n.Mode, Bridge: n.Bridge, Uplink: n.Uplink}
		if l, ok := h.Link(n.Bridge); ok {
			ns.Present, ns.Up, ns.MTU, ns.Addrs = true, l.Up, l.MTU, l.Addrs
		}
		for _, l := range h.Links {
			if l.Master == n.Bridge {
				ns.Ports = append(ns.Ports, l.Name)
				if l.Name != n.Uplink {
					ns.Guard = append(ns.Guard, portGuard(n, l.Name, h.Guard))
				}
			}
		}
		// The network's rules are those of its own chains (the base
		// chains only dispatch to them).
		for _, name := range []string{model.ChainTo(n.Name), model.ChainFrom(n.Name), model.ChainInput(n.Name), model.ChainDNS(n.Name), model.ChainNAT(n.Name)} {
			if c, ok := h.Ruleset.Chain(name); ok {
				ns.Rules += len(c.Rules)
			}
		}
		ns.Forwards = len(n.Forwards)
		for _, pf := range n.Forwards {
			for _, e := range pf.Elements() {
				if slices.Contains(h.Ruleset.Forwards, e) {
					ns.ForwardsIn++
				}
			}
		}
		s.Networks = append(s.Networks, ns)
	}
	return s
}

// Text renders the status for a person.
func (s Status) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-12s %-9s %-15s %-5s %-20s %-5s %-8s %s\n", "NETWORK", "MODE", "BRIDGE", "STATE", "ADDRESS", "RULES", "FORWARDS", "PORTS")
	for _, n := range s.Networks {
		st := "down"
		switch {
		case !n.Present:
			st = "MISSING"
		case n.Up:
			st = "up"
		}
		addrs := make([]string, len(n.Addrs))
		for i, a := range n.Addrs {
			addrs[i] = a.String()
		}
		ports := strings.Join(n.Ports, ",")
		if ports == "" {
			ports = "-"
		}
		a := strings.Join(addrs, ",")
		if a == "" {
			a = "-"
		}
		fmt.Fprintf(&b, "%-12s %-9s %-15s %-5s %-20s %-5d %-8d %s\n", n.Name, n.Mode, n.Bridge, st, a, n.Rules, n.Forwards, ports)
	}
	onoff := map[bool]string{true: "on", false: "off"}
	fmt.Fprintf(&b, "\nip_forward: %s   bridge-nf-call-iptables: %s   rules owned: %d (table inet %s) + %d (DOCKER-USER)\n",
		onoff[s.IPForward], onoff[s.BridgeNF], s.Rules-s.DockerUser, model.Table, s.DockerUser)
	for _, f := range s.Foreign {
		fmt.Fprintf(&b, "foreign chain that drops by policy: %s\n", f.Name)
	}
	guardText(&b, s)
	return b.String()
}
