package trace

import (
	"net/netip"

	"github.com/guestnet/guestnet/internal/model"
)

// The switches of the host that differ by family, each with the name a
// person reads and sets.

// icmpv6 is ICMPv6 as nft names it in "meta l4proto ipv6-icmp" (and
// package match's Packet.Proto with it).
const icmpv6 = "ipv6-icmp"

// l4 is the protocol the rules see: ICMP of an IPv6 packet is ICMPv6,
// which a rule for icmp (protocol 1) does not match.
func l4(proto string, f model.Family) string {
	switch {
	case f == model.IPv6 && (proto == "icmp" || proto == "icmpv6" || proto == icmpv6):
		return icmpv6
	case proto == "icmpv6":
		return icmpv6
	}
	return proto
}

// forwarding reports whether the host routes packets of family f.
func forwarding(h model.Host, f model.Family) (bool, string) {
	if f == model.IPv6 {
		return h.IP6Forward, "net.ipv6.conf.all.forwarding"
	}
	return h.IPForward, "net.ipv4.ip_forward"
}

// brNetfilter reports whether br_netfilter sends bridged frames of family
// f through the IP hooks.
func brNetfilter(h model.Host, f model.Family) (bool, string) {
	if f == model.IPv6 {
		return h.BridgeNFCallIP6Tables, "bridge-nf-call-ip6tables"
	}
	return h.BridgeNFCallIPTables, "bridge-nf-call-iptables"
}

// foreignDrops are the foreign forward chains dropping by policy that see
// packets of family f (iptables' for IPv4, ip6tables' for IPv6, inet
// tables' for both).
func foreignDrops(h model.Host, f model.Family) []model.ForeignChain {
	var out []model.ForeignChain
	for _, fc := range h.Foreign.ForwardDrop {
		if fc.Sees(f) {
			out = append(out, fc)
		}
	}
	return out
}

// dockerUser are guestnet's rules in the DOCKER-USER chain of family f
// (iptables' or ip6tables').
func dockerUser(h model.Host, f model.Family) []model.Rule {
	if f == model.IPv6 {
		return h.Ruleset.DockerUser6
	}
	return h.Ruleset.DockerUser
}

// policyRules are the policy routing rules of family f the walk does not
// simulate.
func policyRules(d model.Diag, f model.Family) []string {
	if f == model.IPv6 {
		return d.PolicyRules6
	}
	return d.PolicyRules
}

// ipCmd is the ip command that shows family f's routes and rules.
func ipCmd(f model.Family) string {
	if f == model.IPv6 {
		return "ip -6"
	}
	return "ip"
}

// masqAddr is the source masquerade gives a packet of family f leaving
// dev: the interface's first address of that family that is not
// link-local (a global address for a global destination, as the kernel's
// source address selection picks).
func masqAddr(h model.Host, dev string, f model.Family) (netip.Addr, bool) {
	l, ok := h.Link(dev)
	if !ok {
		return netip.Addr{}, false
	}
	for _, p := range l.Addrs {
		if a := p.Addr(); model.FamilyOf(a) == f && !a.IsLinkLocalUnicast() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func famName(f model.Family) string {
	if f == model.IPv6 {
		return "IPv6"
	}
	return "IPv4"
}
