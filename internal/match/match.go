// Package match is the one meaning of a guestnet rule: whether a
// model.Rule matches a packet, and which element of guestnet's maps
// (port forwards, floating addresses) a NAT rule's lookup picks. trace and
// doctor both ask it; its test checks it against the nftables expressions
// internal/nft encodes, evaluated as the kernel evaluates them. A match it
// does not know is an error (cannot simulate), never a guess.
package match

import (
	"fmt"
	"net/netip"

	"github.com/guestnet/guestnet/internal/model"
)

// Packet is one packet at one hook, with what the kernel knows of it there.
type Packet struct {
	Src, Dst netip.Addr
	// IIF and OIF name the input and output interfaces; "" where the hook
	// has none (no input interface for locally generated packets, no output
	// interface before the routing decision and in input). A match on an
	// absent interface does not match, negated or not, as in nftables.
	IIF, OIF string
	IIFGroup uint32 // the input interface's group
	// Proto is tcp, udp, icmp, or ipv6-icmp (ICMPv6, nft's name for it);
	// the packet's family is that of Src and Dst.
	Proto string
	Port  int  // destination port (tcp and udp)
	Reply bool // ct state established or related
	DNAT  bool // ct status dnat: the connection's destination was translated
	Local bool // fib daddr type local: the destination is an address of this host
	RPF   bool // fib saddr . iif oif != 0: the route back to the source leaves by IIF
}

// UnknownError says a rule holds a match the matcher cannot evaluate: the
// caller must say it cannot simulate the rule instead of guessing.
type UnknownError struct {
	Match  model.Match
	Reason string
}

func (e *UnknownError) Error() string {
	return fmt.Sprintf("cannot simulate %q: %s", e.Match, e.Reason)
}

// Rule reports whether every match of r holds for p, in order, as nftables
// evaluates them (the first failing match ends the rule).
func Rule(r model.Rule, p Packet) (bool, error) {
	for _, m := range r.Match {
		ok, err := Match(m, p)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// Match reports whether one match holds for p.
func Match(m model.Match, p Packet) (bool, error) {
	unknown := func(why string) (bool, error) { return false, &UnknownError{m, why} }
	switch m.Kind {
	case model.MatchIIF, model.MatchOIF:
		name := p.IIF
		if m.Kind == model.MatchOIF {
			name = p.OIF
		}
		if name == "" {
			return false, nil // no such interface at this hook: the expression breaks
		}
		return (name == m.Name) != m.Neg, nil
	case model.MatchSAddr, model.MatchDAddr:
		a := p.Src
		if m.Kind == model.MatchDAddr {
			a = p.Dst
		}
		if !a.IsValid() || model.FamilyOf(a) != model.FamilyOf(m.Prefix.Addr()) {
			return false, nil // the nfproto check before the payload load fails
		}
		return m.Prefix.Masked().Contains(a) != m.Neg, nil
	}
	// The rest are encoded without a negation (nft.Encode ignores Neg).
	if m.Neg {
		return unknown("guestnet encodes this match only un-negated")
	}
	switch m.Kind {
	case model.MatchIIFGrp:
		if p.IIF == "" {
			return false, nil
		}
		return p.IIFGroup == uint32(m.Port), nil
	case model.MatchCtReply:
		return p.Reply, nil
	case model.MatchCtDNAT:
		return p.DNAT, nil
	case model.MatchLocal:
		return p.Local, nil
	case model.MatchRPF:
		return p.RPF, nil
	case model.MatchL4:
		switch m.Name {
		case "tcp", "udp", "icmp", "ipv6-icmp":
			return p.Proto == m.Name, nil
		}
		return unknown("unknown protocol")
	case model.MatchNFProto:
		a := p.Src
		if !a.IsValid() {
			a = p.Dst
		}
		if !a.IsValid() {
			return unknown("the packet has no address to tell its family by")
		}
		switch m.Name {
		case "ipv4":
			return model.FamilyOf(a) == model.IPv4, nil
		case "ipv6":
			return model.FamilyOf(a) == model.IPv6, nil
		}
		return unknown("unknown family")
	case model.MatchDPort:
		if p.Proto != "tcp" && p.Proto != "udp" {
			return unknown("th dport of a " + p.Proto + " packet reads no port (put meta l4proto tcp or udp before it)")
		}
		return p.Port == m.Port, nil
	}
	return unknown("unknown match kind")
}

// NAT says what a NAT rule's verdict does to a packet whose matches held:
// the new destination (DNAT) or source (SNAT), and the map element used.
// ok is false when the map lookup misses: nftables then goes on to the
// next rule.
type NAT struct {
	Dst      netip.Addr // DNAT: the new destination
	Port     int        // DNAT by a port forward: the new destination port
	Src      netip.Addr // SNAT: the new source
	Forward  *model.Forward
	Floating *model.Floating
	Map      string // the map looked up
}

// Lookup evaluates the map lookup of a NAT verdict of guestnet's (DNATMap,
// DNATPort, DNATFloat, SNATFloat) against rs's map elements. Masquerade
// has no lookup (its address is the output interface's: the caller's).
func Lookup(rs model.Ruleset, v model.Verdict, p Packet) (NAT, bool, error) {
	switch v {
	case model.DNATFloat:
		if !p.Dst.Is4() {
			return NAT{}, false, nil
		}
		for _, f := range rs.Floating {
			if f.Public == p.Dst {
				return NAT{Dst: f.Guest, Port: p.Port, Floating: &f, Map: model.FloatingIn}, true, nil
			}
		}
		return NAT{}, false, nil
	case model.SNATFloat:
		if !p.Src.Is4() {
			return NAT{}, false, nil
		}
		for _, f := range rs.Floating {
			if f.Guest == p.Src {
				return NAT{Src: f.Public, Floating: &f, Map: model.FloatingOut}, true, nil
			}
		}
		return NAT{}, false, nil
	case model.DNATPort, model.DNATMap:
		if !p.Src.Is4() || (p.Proto != "tcp" && p.Proto != "udp") {
			return NAT{}, false, nil
		}
		for _, f := range rs.Forwards {
			if f.Exact() != (v == model.DNATPort) || f.Proto != p.Proto || f.Port != p.Port {
				continue
			}
			if v == model.DNATMap && (!f.Src.Masked().Contains(p.Src) || !f.Dst.Masked().Contains(p.Dst)) {
				continue
			}
			m := model.ForwardsMap
			if v == model.DNATMap {
				m = model.ForwardsSrcMap
			}
			return NAT{Dst: f.To, Port: f.ToPort, Forward: &f, Map: m}, true, nil
		}
		return NAT{}, false, nil
	}
	return NAT{}, false, fmt.Errorf("cannot simulate verdict %q: not a NAT map guestnet writes", v)
}
