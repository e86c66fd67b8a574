package trace

import (
	"net/netip"

	"github.com/guestnet/guestnet/internal/match"
	"github.com/guestnet/guestnet/internal/model"
)

// The switches of the host that differ by family, each with the name a
// person reads and sets.

// l4 is the protocol the rules see: ICMP of an IPv6 packet is ICMPv6
// ("meta l4proto ipv6-icmp"), which a rule for icmp does not match.
func l4(proto string, f model.Family) string {
	switch {
	case f == model.IPv6 && (proto == "icmp" || proto == "icmpv6" || proto == match.ProtoICMPv6):
		return match.ProtoICMPv6
	case proto == "icmpv6":
		return match.ProtoICMPv6
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

// dockerUser are guestnet's rules in the DOCKER-USER chain of family f.
// The model holds those of table ip filter only: guestnet's rules in
// ip6tables' DOCKER-USER (helper fw's) are not in it yet, so for IPv6 none
// let a packet past an ip6 FORWARD drop here.
func dockerUser(h model.Host, f model.Family) []model.Rule {
	if f == model.IPv6 {
		return nil
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
