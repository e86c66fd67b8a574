// Package trace walks one packet through an observed host as the kernel
// would: ingress, routing decision, guestnet's and foreign forward chains,
// masquerade, egress; then the reply. Each hop has a verdict; the walk stops
// at the first drop and names the rule, policy or missing route. It is a
// simulation over model.Host (pure): it covers what guestnet's model can
// express, and says so where it cannot decide.
package trace

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// Packet is what is traced.
type Packet struct {
	Src, Dst netip.Addr
	Proto    string // tcp, udp, icmp
	Port     int
	// InDev names the interface the packet arrives on, when the source's
	// subnet is not one the host has an address in (an isolated bridge).
	InDev string
	// GuestPort names the guest's bridge port (its TAP), when known: the
	// packet then first meets the port's anti-spoofing binding.
	GuestPort string `json:"guest_port,omitempty"`
}

// Hop is one step of the walk.
type Hop struct {
	Stage   string `json:"stage"`   // ingress, route, forward, input, postrouting, egress, reply
	Verdict string `json:"verdict"` // pass, accept, drop, deliver, note
	Detail  string `json:"detail"`
}

// Result is the whole walk.
type Result struct {
	Packet    Packet `json:"packet"`
	Hops      []Hop  `json:"hops"`
	Delivered bool   `json:"delivered"`
	// Ingress and Egress are the first direction's interfaces ("" when
	// the walk stopped before deciding them); Local means delivered to
	// the host itself.
	Ingress string `json:"ingress,omitempty"`
	Egress  string `json:"egress,omitempty"`
	Local   bool   `json:"local,omitempty"`
}

// flow is a packet's state as it crosses the host.
type flow struct {
	src, dst netip.Addr
	iif, oif string
	iifGroup uint32
	reply    bool   // conntrack state established (the reply direction)
	proto    string // tcp, udp, icmp; "" matches no protocol rule
	port     int    // destination port; 0 (unknown) in the reply direction
}

// Walk traces p through h; d gives the foreign masquerade rules.
func Walk(h model.Host, d model.Diag, p Packet) Result {
	r := Result{Packet: p}
	if p.GuestPort != "" {
		hop, ok := guard(h, p.GuestPort, p.Src)
		r.Hops = append(r.Hops, hop)
		if !ok {
			return r // dropped at the bridge: no route decision to check
		}
		if l, ok := h.Link(p.GuestPort); ok && p.InDev == "" {
			p.InDev = l.Master // routed on from the port's bridge
		}
	}
	f := flow{src: p.Src, dst: p.Dst, iif: p.InDev, proto: p.Proto, port: p.Port}
	ok := walk(h, d, &f, &r)
	r.Ingress, r.Egress, r.Local = f.iif, f.oif, isLocal(h, p.Dst)
	if !ok {
		return r
	}
	// The reply: back from the destination to the (translated) source.
	if isLocal(h, p.Dst) {
		r.Delivered = true
		return r
	}
	back := flow{src: p.Dst, dst: f.src, reply: true, proto: p.Proto}
	r.Hops = append(r.Hops, Hop{"reply", "note", fmt.Sprintf("%s answers %s", back.src, back.dst)})
	if !isLocal(h, back.dst) {
		if _, ok := lookup(h, back.dst); !ok {
			r.Hops = append(r.Hops, Hop{"reply", "drop", "no route back to " + back.dst.String()})
			return r
		}
	}
	if f.src != p.Src { // masqueraded: conntrack maps the reply back to the guest
		r.Hops = append(r.Hops, Hop{"reply", "pass", fmt.Sprintf("conntrack un-NATs %s to %s", back.dst, p.Src)})
		back.dst = p.Src
	} else if br := bridgeOf(h, p.Src); br != "" && bridgeOf(h, p.Dst) == "" {
		r.Hops = append(r.Hops, Hop{"reply", "note", fmt.Sprintf("no NAT: %s must route %s back via this host (guestnet routes)", p.Dst, p.Src.String())})
	}
	if !walk(h, d, &back, &r) {
		return r
	}
	r.Delivered = true
	return r
}

// walk moves f through the host, appending hops; false when dropped.
func walk(h model.Host, d model.Diag, f *flow, r *Result) bool {
	add := func(stage, verdict, format string, a ...any) {
		r.Hops = append(r.Hops, Hop{stage, verdict, fmt.Sprintf(format, a...)})
	}
	if f.iif == "" {
		f.iif = ingress(h, f.src)
	}
	if f.iif == "" {
		add("ingress", "drop", "no interface of this host faces %s (give the interface it arrives on)", f.src)
		return false
	}
	if l, ok := h.Link(f.iif); ok {
		f.iifGroup = l.Group
	}
	if f.iif == "lo" {
		add("output", "pass", "%s is this host's own address: locally generated", f.src)
	} else {
		add("ingress", "pass", "%s arrives on %s", f.src, f.iif)
	}
	if isLocal(h, f.dst) {
		if rule, v, ok := firstMatch(h, "input", f); ok && v != model.Accept {
			add("input", "drop", "table inet guestnet chain input: %s", rule)
			return false
		}
		add("input", "deliver", "%s is an address of this host", f.dst)
		return true
	}
	rt, ok := lookup(h, f.dst)
	if !ok {
		add("route", "drop", "no route to %s (ip route get %s: unreachable)", f.dst, f.dst)
		return false
	}
	f.oif = rt.Dev
	add("route", "pass", "ip route get %s: dev %s%s", f.dst, rt.Dev, via(rt))
	if f.iif == "lo" { // locally generated: no forward hook
		add("egress", "deliver", "out of %s to %s", f.oif, f.dst)
		return true
	}
	if f.oif != f.iif && !h.IPForward {
		add("forward", "drop", "net.ipv4.ip_forward = 0: the host does not route between %s and %s", f.iif, f.oif)
		return false
	}
	if f.oif == f.iif && !h.BridgeNFCallIPTables {
		add("forward", "pass", "bridged within %s (br_netfilter off: no IP hooks)", f.iif)
		add("egress", "deliver", "out of %s to %s", f.oif, f.dst)
		return true
	}
	if rule, v, ok := firstMatch(h, "forward", f); ok {
		if v != model.Accept {
			add("forward", "drop", "table inet guestnet chain forward: %s", rule)
			return false
		}
		add("forward", "accept", "table inet guestnet chain forward: %s", rule)
	} else {
		add("forward", "pass", "no rule of guestnet's matches (policy accept)")
	}
	for _, fc := range h.Foreign.ForwardDrop {
		ours := slices.ContainsFunc(h.Ruleset.DockerUser, func(r model.Rule) bool { return matches(r, f) })
		bridged := f.iif == f.oif
		if !ours && !fc.Lets(f.iif, bridged) && !fc.Lets(f.oif, bridged) {
			add("forward", "drop", "%s: policy drop, no rule accepts %s -> %s", fc.Name, f.iif, f.oif)
			return false
		}
	}
	if !f.reply {
		masq(h, d, f, add)
	}
	add("egress", "deliver", "out of %s to %s (source %s)", f.oif, f.dst, f.src)
	return true
}

func via(r model.Route) string {
	if r.Gw.IsValid() {
		return " via " + r.Gw.String()
	}
	return ""
}

// masq applies the first masquerade rule (guestnet's, then foreign) that matches.
func masq(h model.Host, d model.Diag, f *flow, add func(string, string, string, ...any)) {
	try := func(where string, r model.Rule) bool {
		if r.Verdict != model.Masquerade || !matches(r, f) {
			return false
		}
		if l, ok := h.Link(f.oif); ok && len(l.Addrs) > 0 {
			add("postrouting", "pass", "%s: %s: source %s becomes %s", where, r, f.src, l.Addrs[0].Addr())
			f.src = l.Addrs[0].Addr()
		}
		return true
	}
	for _, c := range h.Ruleset.Chains {
		for _, r := range c.Rules {
			if try("table inet guestnet chain "+c.Name, r) {
				return
			}
		}
	}
	for _, fr := range d.ForeignNAT {
		if try(fr.Chain, fr.Rule) {
			return
		}
	}
}

// firstMatch evaluates guestnet's chain in order.
func firstMatch(h model.Host, chain string, f *flow) (model.Rule, model.Verdict, bool) {
	for _, c := range h.Ruleset.Chains {
		if c.Name != chain {
			continue
		}
		for _, r := range c.Rules {
			if matches(r, f) {
				return r, r.Verdict, true
			}
		}
	}
	return model.Rule{}, "", false
}

func matches(r model.Rule, f *flow) bool {
	for _, m := range r.Match {
		var ok bool
		switch m.Kind {
		case model.MatchIIFGrp:
			ok = f.iifGroup == uint32(m.Port)
		case model.MatchIIF:
			ok = f.iif == m.Name
		case model.MatchOIF:
			ok = f.oif == m.Name
		case model.MatchSAddr:
			ok = m.Prefix.Contains(f.src)
		case model.MatchDAddr:
			ok = m.Prefix.Contains(f.dst)
		case model.MatchCtReply:
			ok = f.reply
		case model.MatchL4:
			ok = f.proto == m.Name
		case model.MatchDPort:
			ok = f.port == m.Port
		}
		if m.Neg && m.Kind != model.MatchCtReply {
			ok = !ok
		}
		if !ok {
			return false
		}
	}
	return true
}

func isLocal(h model.Host, a netip.Addr) bool {
	for _, l := range h.Links {
		for _, p := range l.Addrs {
			if p.Addr() == a {
				return true
			}
		}
	}
	return false
}

// bridgeOf is the bridge whose subnet holds a.
func bridgeOf(h model.Host, a netip.Addr) string {
	for _, l := range h.Links {
		if l.Kind != "bridge" {
			continue
		}
		for _, p := range l.Addrs {
			if p.Masked().Contains(a) {
				return l.Name
			}
		}
	}
	return ""
}

// ingress is the interface a packet from src arrives on: the link whose
// subnet holds src, else the route back to it.
func ingress(h model.Host, src netip.Addr) string {
	if isLocal(h, src) {
		return "lo"
	}
	if r, ok := lookup(h, src); ok {
		return r.Dev
	}
	return ""
}

// lookup is a longest-prefix match over the main table.
func lookup(h model.Host, dst netip.Addr) (model.Route, bool) {
	best, found := model.Route{}, false
	for _, r := range h.Routes {
		if r.Dst.Contains(dst) && (!found || r.Dst.Bits() > best.Dst.Bits() || (r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric)) {
			best, found = r, true
		}
	}
	return best, found
}
