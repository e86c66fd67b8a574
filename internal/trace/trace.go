// Package trace walks one packet through an observed host as the kernel
// would: ingress, guestnet's DNAT (port forwards, floating addresses),
// routing decision, guestnet's and foreign forward chains, SNAT and
// masquerade, egress; then the reply, which conntrack translates back. Each
// hop has a verdict; the walk stops at the first drop and names the rule,
// policy or missing route. It is a simulation over model.Host (pure): rules
// mean what package match says they mean, and where the walk cannot decide
// (a rule it cannot simulate) it stops and says so. IPv4 and IPv6 packets
// take the same walk, each through its own family's switches: forwarding
// (ip_forward, conf.all.forwarding), br_netfilter (bridge-nf-call-iptables,
// -ip6tables), the foreign tables that see the family (ip, ip6, inet) and
// its policy routing rules.
package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/match"
	"github.com/guestnet/guestnet/internal/model"
)

// Packet is what is traced.
type Packet struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto string     `json:"proto"` // tcp, udp, icmp (ICMPv6 for IPv6 addresses)
	Port  int        `json:"port,omitempty"`
	// InDev names the interface the packet arrives on, when the source's
	// subnet is not one the host has an address in (an isolated bridge).
	InDev string `json:"in_dev,omitempty"`
	// GuestPort names the guest's bridge port (its TAP), when known: the
	// packet then first meets the port's anti-spoofing binding.
	GuestPort string `json:"guest_port,omitempty"`
}

// Hop is one step of the walk.
type Hop struct {
	Stage   string `json:"stage"`   // bridge, ingress, prerouting, route, forward, input, postrouting, egress, reply
	Verdict string `json:"verdict"` // pass, accept, dnat, snat, drop, deliver, note, stop
	Detail  string `json:"detail"`
}

// Result is the whole walk.
type Result struct {
	Packet    Packet `json:"packet"`
	Hops      []Hop  `json:"hops"`
	Delivered bool   `json:"delivered"`
	// CannotTell is true when the walk met something it cannot simulate
	// (its last hop says what): neither delivered nor dropped is known.
	CannotTell bool `json:"cannot_tell,omitempty"`
	// Ingress and Egress are the first direction's interfaces ("" when
	// the walk stopped before deciding them); Local means delivered to
	// the host itself. Dst is the destination after guestnet's DNAT.
	Ingress string     `json:"ingress,omitempty"`
	Egress  string     `json:"egress,omitempty"`
	Local   bool       `json:"local,omitempty"`
	Dst     netip.Addr `json:"dst,omitzero"`
	// Forward is the port forward the packet took, Floating the floating
	// address it was translated by (either way), if any.
	Forward  *model.Forward  `json:"forward,omitempty"`
	Floating *model.Floating `json:"floating,omitempty"`
}

// flow is a packet's state as it crosses the host.
type flow struct {
	src, dst netip.Addr
	iif, oif string
	iifGroup uint32
	fam      model.Family
	reply    bool   // conntrack state established (the reply direction)
	dnat     bool   // conntrack status dnat: guestnet's DNAT translated the connection
	proto    string // tcp, udp, icmp, ipv6-icmp; "" matches no protocol rule
	port     int    // destination port; 0 (unknown) in the reply direction
}

// packet is what the rules of a hook see of the flow. A locally generated
// packet (iif "lo" here) has no input interface outside the input hook;
// before the routing decision and in input there is no output interface.
func (f *flow) packet(h model.Host, hook string) match.Packet {
	p := match.Packet{Src: f.src, Dst: f.dst, IIF: f.iif, OIF: f.oif, IIFGroup: f.iifGroup,
		Proto: f.proto, Port: f.port, Reply: f.reply, DNAT: f.dnat, Local: isLocal(h, f.dst), RPF: rpf(h, f.src, f.iif)}
	if f.iif == "lo" && hook != "input" {
		p.IIF, p.IIFGroup = "", 0
	}
	if hook == "prerouting" || hook == "input" {
		p.OIF = ""
	}
	return p
}

// Walk traces p through h; d gives the foreign masquerade rules.
func Walk(h model.Host, d model.Diag, p Packet) Result {
	r := Result{Packet: p}
	fam := model.FamilyOf(p.Dst)
	if model.FamilyOf(p.Src) != fam {
		r.Hops = append(r.Hops, Hop{"ingress", "drop", fmt.Sprintf("%s and %s are not of one address family: no packet carries both", p.Src, p.Dst)})
		return r
	}
	proto := l4(p.Proto, fam)
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
	f := flow{src: p.Src, dst: p.Dst, iif: p.InDev, fam: fam, proto: proto, port: p.Port}
	ok := walk(h, d, &f, &r)
	r.Ingress, r.Egress, r.Local, r.Dst = f.iif, f.oif, isLocal(h, f.dst), f.dst
	if !ok {
		return r
	}
	// The reply: back from the (translated) destination to the
	// (translated) source.
	if isLocal(h, f.dst) {
		r.Delivered = true
		return r
	}
	back := flow{src: f.dst, dst: f.src, fam: fam, reply: true, dnat: f.dnat, proto: proto}
	r.Hops = append(r.Hops, Hop{"reply", "note", fmt.Sprintf("%s answers %s", back.src, back.dst)})
	if !isLocal(h, back.dst) {
		if _, ok := lookup(h, back.dst); !ok {
			r.Hops = append(r.Hops, Hop{"reply", "drop", "no route back to " + back.dst.String()})
			return r
		}
	}
	if f.src != p.Src { // source-NATed: conntrack maps the reply back to the sender
		r.Hops = append(r.Hops, Hop{"reply", "pass", fmt.Sprintf("conntrack un-NATs %s to %s", back.dst, p.Src)})
		back.dst = p.Src
	} else if br := bridgeOf(h, p.Src); br != "" && bridgeOf(h, p.Dst) == "" && !f.dnat {
		r.Hops = append(r.Hops, Hop{"reply", "note", fmt.Sprintf("no NAT: %s must route %s back via this host (guestnet routes)", p.Dst, p.Src.String())})
	}
	if !walk(h, d, &back, &r) {
		return r
	}
	if f.dst != p.Dst {
		r.Hops = append(r.Hops, Hop{"reply", "pass", fmt.Sprintf("conntrack restores the source: %s answers as %s", f.dst, p.Dst)})
	}
	r.Delivered = true
	return r
}

// walk moves f through the host, appending hops; false when dropped or
// when the walk cannot tell (r.CannotTell).
func walk(h model.Host, d model.Diag, f *flow, r *Result) bool {
	add := func(stage, verdict, format string, a ...any) {
		r.Hops = append(r.Hops, Hop{stage, verdict, fmt.Sprintf(format, a...)})
	}
	stop := func(stage string, err error) bool {
		add(stage, "stop", "%v: the walk cannot tell what the kernel does from here", err)
		r.CannotTell = true
		return false
	}
	if f.iif == "" && f.src.Is6() && f.src.IsLinkLocalUnicast() {
		add("ingress", "drop", "%s is link-local: every interface has fe80::/64, so give the interface it arrives on (--in)", f.src)
		return false
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
	if !f.reply { // NAT chains see a connection's first packet only
		hook := "prerouting"
		if f.iif == "lo" {
			hook = "output"
		}
		if err := dnat(h, f, hook, r, add); err != nil {
			return stop(hook, err)
		}
		if len(d.ForeignDNAT) > 0 {
			add(hook, "note", "not simulated: the DNAT rules of %s; if one matches this packet it goes elsewhere (the walk assumes none does)",
				strings.Join(d.ForeignDNAT, ", "))
		}
	}
	if isLocal(h, f.dst) {
		st, ok, err := firstMatch(h, "input", f.packet(h, "input"))
		switch {
		case err != nil:
			return stop("input", err)
		case ok && st.Rule.Verdict != model.Accept:
			add("input", "drop", "table inet guestnet chain %s: %s", st.Chain, st.Rule)
			return false
		case ok:
			add("input", "accept", "table inet guestnet chain %s: %s", st.Chain, st.Rule)
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
	add("route", "pass", "%s route get %s: dev %s%s (main table)", ipCmd(f.fam), f.dst, rt.Dev, via(rt))
	if rules := policyRules(d, f.fam); len(rules) > 0 && !f.reply {
		add("route", "note", "not simulated: policy routing (%s rule %s) may choose another table; trace --live asks the kernel",
			ipCmd(f.fam), strings.Join(rules, "; "))
	}
	brnf, brnfName := brNetfilter(h, f.fam)
	if f.dnat && f.iif == f.oif && f.dst == f.src && brnf {
		// br_netfilter bridges a DNATed packet whose new destination is on
		// the bridge it came from back into that bridge, not through the
		// router: here toward the port it came in on, which a bridge never
		// sends a frame back out of while hairpin mode is off.
		add("forward", "drop", "%s = 1: br_netfilter bridges the DNATed packet back into %s toward %s, "+
			"the port it came from, and a bridge port does not send a frame back out (hairpin off): a guest cannot reach "+
			"itself through its public address here (it reaches itself by %s; a neighbour's public address works)", brnfName, f.iif, f.dst, f.dst)
		return false
	}
	if f.iif == "lo" { // locally generated: no forward hook
		if err := snat(h, d, f, r, add); err != nil {
			return stop("postrouting", err)
		}
		add("egress", "deliver", "out of %s to %s", f.oif, f.dst)
		return true
	}
	if on, name := forwarding(h, f.fam); f.oif != f.iif && !on {
		add("forward", "drop", "%s = 0: the host does not route %s between %s and %s", name, famName(f.fam), f.iif, f.oif)
		return false
	}
	// Within one bridge and not DNATed: the frame is bridged, not routed.
	if f.oif == f.iif && !f.dnat && !brnf {
		add("forward", "pass", "bridged within %s (%s = 0: no IP hooks)", f.iif, brnfName)
		add("egress", "deliver", "out of %s to %s", f.oif, f.dst)
		overlay(h, d, f, r)
		return true
	}
	pkt := f.packet(h, "forward")
	st, ok, err := firstMatch(h, "forward", pkt)
	switch {
	case err != nil:
		return stop("forward", err)
	case ok && st.Rule.Verdict != model.Accept:
		add("forward", "drop", "table inet guestnet chain %s: %s%s", st.Chain, st.Rule, refusedWhy(h, st.Chain, f.src, f.iif))
		return false
	case ok:
		add("forward", "accept", "table inet guestnet chain %s: %s", st.Chain, st.Rule)
	default:
		add("forward", "pass", "no rule of guestnet's matches (policy accept)")
	}
	if drops := foreignDrops(h, f.fam); len(drops) > 0 {
		ours := false // an accept of guestnet's in DOCKER-USER
		for _, du := range dockerUser(h, f.fam) {
			ok, err := match.Rule(du, pkt)
			if err != nil {
				return stop("forward", err)
			}
			if ok && du.Verdict == model.Accept {
				ours = true
				add("forward", "accept", "table %s filter chain DOCKER-USER: %s", f.fam, du)
				break
			}
		}
		bridged := f.iif == f.oif && !f.dnat
		for _, fc := range drops {
			if !ours && !fc.Lets(f.iif, bridged) && !fc.Lets(f.oif, bridged) {
				why := ""
				if bridged {
					why = fmt.Sprintf(" (%s = 1: bridged frames cross it)", brnfName)
				}
				add("forward", "drop", "%s: policy drop, no rule accepts %s -> %s%s", fc.Name, f.iif, f.oif, why)
				return false
			}
		}
	}
	if !f.reply {
		if err := snat(h, d, f, r, add); err != nil {
			return stop("postrouting", err)
		}
	}
	add("egress", "deliver", "out of %s to %s (source %s)", f.oif, f.dst, f.src)
	overlay(h, d, f, r)
	return true
}

// overlay adds, for a first-direction packet out of a stretched network's
// bridge, where the frame goes from there (overlayHop).
func overlay(h model.Host, d model.Diag, f *flow, r *Result) {
	if f.reply {
		return
	}
	if hop, ok := overlayHop(h, d, f.oif, f.dst); ok {
		r.Hops = append(r.Hops, hop)
	}
}

func via(r model.Route) string {
	if r.Gw.IsValid() {
		return " via " + r.Gw.String()
	}
	return ""
}

// dnat runs guestnet's nat chain of the hook (prerouting, or output for
// locally generated packets): the first rule that matches and whose map
// lookup hits translates the destination. A lookup that misses goes on to
// the next rule, as in nftables.
func dnat(h model.Host, f *flow, hook string, r *Result, add func(string, string, string, ...any)) error {
	p := f.packet(h, hook)
	steps, err := match.Walk(h.Ruleset, hook, p)
	if err != nil {
		return err
	}
	for _, st := range steps {
		rule := st.Rule
		ok, err := match.Rule(rule, p)
		if err != nil || !ok {
			if err != nil {
				return fmt.Errorf("table inet guestnet chain %s: %s: %w", st.Chain, rule, err)
			}
			continue
		}
		if rule.Verdict == model.Accept {
			return nil
		}
		nat, hit, err := match.Lookup(h.Ruleset, rule.Verdict, p)
		if err != nil {
			return fmt.Errorf("table inet guestnet chain %s: %s: %w", st.Chain, rule, err)
		}
		if !hit {
			continue
		}
		switch {
		case nat.Floating != nil:
			add(hook, "dnat", "floating address %s is guest %s (map %s): destination becomes %s", nat.Floating.Public, nat.Floating.Guest, nat.Map, nat.Dst)
			r.Floating = nat.Floating
		case nat.Forward != nil:
			add(hook, "dnat", "port forward %s (map %s): destination %s:%d becomes %s:%d", describe(*nat.Forward), nat.Map, f.dst, f.port, nat.Dst, nat.Port)
			r.Forward = nat.Forward
		}
		f.dst, f.port, f.dnat = nat.Dst, nat.Port, true
		return nil
	}
	return nil
}

// describe names a forward as a person declared it.
func describe(fw model.Forward) string {
	s := fmt.Sprintf("%s/%d -> %s:%d", fw.Proto, fw.Port, fw.To, fw.ToPort)
	if fw.Src.Bits() > 0 {
		s += " from " + fw.Src.String()
	}
	if fw.Dst.Bits() > 0 {
		s += " listening on " + fw.Dst.Addr().String()
	}
	return s
}

// snat applies the first source translation of postrouting: guestnet's
// chain (floating address, then masquerade), then foreign masquerade rules.
func snat(h model.Host, d model.Diag, f *flow, r *Result, add func(string, string, string, ...any)) error {
	masq := func(where string, rule model.Rule) {
		if a, ok := masqAddr(h, f.oif, f.fam); ok {
			add("postrouting", "snat", "%s: %s: source %s becomes %s", where, rule, f.src, a)
			f.src = a
		}
	}
	p := f.packet(h, "postrouting")
	steps, err := match.Walk(h.Ruleset, "postrouting", p)
	if err != nil {
		return err
	}
	for _, st := range steps {
		rule, where := st.Rule, "table inet guestnet chain "+st.Chain
		ok, err := match.Rule(rule, p)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", where, rule, err)
		}
		if !ok {
			continue
		}
		switch rule.Verdict {
		case model.Masquerade:
			masq(where, rule)
			return nil
		case model.Accept:
			add("postrouting", "accept", "%s", notTranslated(where, rule, f.src))
			return nil
		}
		nat, hit, err := match.Lookup(h.Ruleset, rule.Verdict, p)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", where, rule, err)
		}
		if hit {
			add("postrouting", "snat", "guest %s leaves as its floating address %s (map %s)", f.src, nat.Src, nat.Map)
			f.src, r.Floating = nat.Src, nat.Floating
			return nil
		}
	}
	for _, fr := range d.ForeignNAT {
		if !fr.Sees(f.fam) {
			continue
		}
		ok, err := match.Rule(fr.Rule, p)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", fr.Chain, fr.Rule, err)
		}
		if ok && fr.Rule.Verdict == model.Masquerade {
			masq(fr.Chain, fr.Rule)
			return nil
		}
	}
	return nil
}

// firstMatch evaluates guestnet's base chain in order, through the
// per-network chains its verdict maps jump to (match.Walk): the first
// rule that matches, with the chain that holds it.
func firstMatch(h model.Host, chain string, p match.Packet) (match.Step, bool, error) {
	steps, err := match.Walk(h.Ruleset, chain, p)
	if err != nil {
		return match.Step{}, false, err
	}
	for _, st := range steps {
		ok, err := match.Rule(st.Rule, p)
		if err != nil {
			return st, false, fmt.Errorf("table inet guestnet chain %s: %s: %w", st.Chain, st.Rule, err)
		}
		if ok {
			return st, true, nil
		}
	}
	return match.Step{}, false, nil
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

// bridgeOf is the bridge whose subnet holds a (not by its link-local
// prefix, which every bridge has).
func bridgeOf(h model.Host, a netip.Addr) string {
	for _, l := range h.Links {
		if l.Kind != "bridge" {
			continue
		}
		for _, p := range l.Addrs {
			if !p.Addr().IsLinkLocalUnicast() && p.Masked().Contains(a) {
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

// rpf is fib saddr . iif oif != 0 over the main table: the route back to
// src leaves by iif.
func rpf(h model.Host, src netip.Addr, iif string) bool {
	r, ok := lookup(h, src)
	return ok && iif != "" && r.Dev == iif
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
