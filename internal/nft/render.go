// Package nft renders guestnet's own firewall from the declared networks, and
// translates its rules to and from nftables expressions. It is pure: apply
// sends what it builds, observe decodes what the kernel returns.
package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// ConflictError says a foreign firewall would drop a network's traffic and
// guestnet has no documented way to let it through.
type ConflictError struct {
	Chain   string // e.g. "table ip filter chain FORWARD"
	Network string
	Bridge  string
	Bridged bool // only bridged frames are affected (br_netfilter)
	Open    bool // the network is mode open, which adds no forwarding rules
	IPv6    bool // the chain is of table ip6 (ip6tables): the fixes are ip6tables'
}

func (e *ConflictError) Error() string {
	ipt, sysctl := "iptables", "bridge-nf-call-iptables"
	if e.IPv6 {
		ipt, sysctl = "ip6tables", "bridge-nf-call-ip6tables"
	}
	if e.Open {
		return fmt.Sprintf("firewall conflict: %s drops by policy, and network %s is mode open, for which guestnet adds no forwarding rules; "+
			"fix: %s -I FORWARD -i %s -j ACCEPT && %s -I FORWARD -o %s -j ACCEPT, or use mode routed",
			e.Chain, e.Network, ipt, e.Bridge, ipt, e.Bridge)
	}
	if e.Bridged {
		return fmt.Sprintf("firewall conflict: %s drops by policy and %s=1 sends the bridged frames of network %s (bridge %s) through it; "+
			"fix: %s -I FORWARD -i %s -o %s -j ACCEPT, or sysctl -w net.bridge.%s=0, or create Docker's DOCKER-USER chain for guestnet to use",
			e.Chain, sysctl, e.Network, e.Bridge, ipt, e.Bridge, e.Bridge, sysctl)
	}
	return fmt.Sprintf("firewall conflict: %s drops by policy, so the forwarded traffic of network %s (bridge %s) would be dropped; "+
		"fix: %s -I FORWARD -i %s -j ACCEPT && %s -I FORWARD -o %s -j ACCEPT, or create Docker's DOCKER-USER chain for guestnet to use",
		e.Chain, e.Network, e.Bridge, ipt, e.Bridge, ipt, e.Bridge)
}

func iif(n string) model.Match         { return model.Match{Kind: model.MatchIIF, Name: n} }
func oif(n string) model.Match         { return model.Match{Kind: model.MatchOIF, Name: n} }
func notOIF(n string) model.Match      { return model.Match{Kind: model.MatchOIF, Name: n, Neg: true} }
func reply() model.Match               { return model.Match{Kind: model.MatchCtReply} }
func ctDNAT() model.Match              { return model.Match{Kind: model.MatchCtDNAT} }
func notIIF(n string) model.Match      { return model.Match{Kind: model.MatchIIF, Name: n, Neg: true} }
func saddr(p netip.Prefix) model.Match { return model.Match{Kind: model.MatchSAddr, Prefix: p} }
func daddr(p netip.Prefix) model.Match { return model.Match{Kind: model.MatchDAddr, Prefix: p} }
func nfproto(f model.Family) model.Match {
	name := "ipv4"
	if f == model.IPv6 {
		name = "ipv6"
	}
	return model.Match{Kind: model.MatchNFProto, Name: name}
}

func rule(n model.Network, v model.Verdict, m ...model.Match) model.Rule {
	return model.Rule{Network: n.Name, Match: m, Verdict: v}
}

// Render builds the ruleset for nets: constant base chains that dispatch
// through verdict maps (see model/dispatch.go) to per-network regular
// chains, so a packet walks a handful of rules whatever the number of
// networks, and a change to one network touches only its own chains and
// map elements.
//
// Each network's chains hold what its rules held in the flat list this
// replaces, less the match the dispatch already implies (the bridge an
// interface map keyed the lookup on, the subnet nat_from keyed it on):
//
//	to-NET     traffic into the network: within its bridge (iifname BR
//	           accept), replies, peers, other guest networks, mode rules
//	from-NET   traffic out of it (forward_from, on the input interface)
//	input-NET  its guests to the host (guest_to_host)
//	dns-NET    its DNS server only from its bridge (dns_to, on the gateway)
//	nat-NET    source translation of its subnet (nat_from): floating SNAT
//	           first, then masquerade
//
// The forward chain looks forward_to up before forward_from: a jump that
// reaches no verdict returns, so as in the flat list (traffic into guest
// networks before traffic out of them) one network's outbound accept never
// lets traffic into another network that refuses it.
//
// Chains come in the order a fresh table lists them when made in this
// order: the base chains forward, input, postrouting, prerouting and
// output, then each network's (in the order of nets) to, from, input, dns
// and nat, those that have rules. Maps: forwards, forwards_src,
// floating_in, floating_out, then the verdict maps in model.Vmaps order,
// all always present.
func Render(nets []model.Network, h model.Host) (model.Ruleset, error) {
	if len(nets) == 0 {
		return model.Ruleset{}, nil
	}
	byName := map[string]model.Network{}
	for _, n := range nets {
		byName[n.Name] = n
	}
	rs := model.Ruleset{Chains: baseChains()}
	elems := map[string][]model.VmapElement{}
	// add makes a network's chain and the map elements that jump to it:
	// one per key (a dual-stack network's dns-NET and nat-NET are reached
	// from the IPv4 map and from the IPv6 one).
	add := func(chain string, rules []model.Rule, keys ...mapKey) {
		if len(rules) == 0 {
			return
		}
		for _, k := range keys {
			k.e.Chain = chain
			elems[k.vmap] = append(elems[k.vmap], k.e)
		}
		rs.Chains = append(rs.Chains, model.Chain{Name: chain, Rules: rules})
	}
	dns := dnsChains(nets)
	in := newLetIn(nets)
	vxlan := vxlanPorts(nets)
	for _, n := range nets {
		to, from, input, nat := networkRules(n, byName, in)
		if n.GuestBridge() {
			input = append(vxlanDrops(n, vxlan), input...)
			from = append(vxlanDrops(n, vxlan), from...)
		}
		name := model.VmapElement{Name: n.Bridge}
		add(model.ChainTo(n.Name), to, mapKey{model.VmapForwardTo, name})
		add(model.ChainFrom(n.Name), from, mapKey{model.VmapForwardFrom, name})
		add(model.ChainInput(n.Name), input, mapKey{model.VmapInputFrom, name})
		if d, ok := dns[n.Name]; ok {
			add(model.ChainDNS(n.Name), d.rules, d.keys...)
		}
		var natKeys []mapKey
		if n.IPv4.IsValid() {
			natKeys = append(natKeys, mapKey{model.VmapNATFrom, model.VmapElement{Prefix: n.Subnet()}})
		}
		if n.IPv6.IsValid() && n.Mode == model.NAT {
			natKeys = append(natKeys, mapKey{model.VmapNATFrom6, model.VmapElement{Prefix: n.Subnet6()}})
		}
		add(model.ChainNAT(n.Name), nat, natKeys...)
	}
	for _, v := range model.Vmaps {
		e := elems[v.Name]
		model.SortVmapElements(v.Key, e)
		rs.Vmaps = append(rs.Vmaps, model.Vmap{Name: v.Name, Key: v.Key, Elements: e})
	}
	for _, n := range nets {
		for _, f := range n.Forwards {
			rs.Forwards = append(rs.Forwards, f.Elements()...)
		}
		for _, fl := range n.Floating {
			rs.Floating = append(rs.Floating, model.Floating{Public: fl.Public, Guest: fl.Guest})
		}
	}
	slices.SortFunc(rs.Floating, func(a, b model.Floating) int { return a.Public.Compare(b.Public) })
	model.SortForwards(rs.Forwards)
	du, err := dockerUser(nets, h, model.IPv4)
	if err != nil {
		return rs, err
	}
	rs.DockerUser = du
	rs.DockerUser6, err = dockerUser(nets, h, model.IPv6)
	return rs, err
}

// mapKey is one element of one verdict map, before its chain is known.
type mapKey struct {
	vmap string
	e    model.VmapElement
}

// baseChains are the base chains of guestnet's table, the same whatever
// the networks: every change is then an element or regular-chain
// operation. The DNAT chains look their maps up even when these are
// empty (a miss goes on to the next rule).
func baseChains() []model.Chain {
	base := model.Network{}
	l4 := func(p string) model.Match { return model.Match{Kind: model.MatchL4, Name: p} }
	dns := func(p string, v model.Verdict) model.Rule {
		return rule(base, v, l4(p), model.Match{Kind: model.MatchDPort, Port: 53})
	}
	// One map serves every forward: the lookup costs the same for one
	// element or ten thousand, and a change is an element update. Source-
	// or address-limited forwards are looked up first.
	fw := model.Network{Name: "forwards"}
	local := model.Match{Kind: model.MatchLocal}
	dnat := []model.Rule{rule(model.Network{Name: "floating"}, model.DNATFloat)}
	for _, v := range []model.Verdict{model.DNATMap, model.DNATPort} {
		dnat = append(dnat, rule(fw, v, local, l4("tcp")), rule(fw, v, local, l4("udp")))
	}
	return []model.Chain{
		{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Rules: []model.Rule{
			rule(base, model.DispatchForwardTo), rule(base, model.DispatchForwardFrom)}},
		{Name: "input", Type: "filter", Hook: "input", Priority: 0, Rules: []model.Rule{
			dns("udp", model.DispatchDNSTo), dns("tcp", model.DispatchDNSTo),
			dns("udp", model.DispatchDNSTo6), dns("tcp", model.DispatchDNSTo6), rule(base, model.DispatchInputFrom)}},
		{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Rules: []model.Rule{
			rule(base, model.DispatchNATFrom), rule(base, model.DispatchNATFrom6)}},
		{Name: "prerouting", Type: "nat", Hook: "prerouting", Priority: -100, Rules: dnat},
		{Name: "output", Type: "nat", Hook: "output", Priority: -100, Rules: slices.Clone(dnat)},
	}
}

// networkRules are the rules of a network's chains to-NET, from-NET,
// input-NET and nat-NET (nil: no such chain), in the order the flat list
// held them. The chains serve both families: what is the same for IPv4
// and IPv6 (interfaces, conntrack, rejects, masquerade) is one rule, an
// address match is one rule per family the network has.
func networkRules(n model.Network, byName map[string]model.Network, in letIn) (to, from, input, nat []model.Rule) {
	br := n.Bridge
	if n.Mode == model.Open {
		return nil, nil, nil, nil
	}
	// Within the bridge (forward_to implies oifname BR).
	to = append(to, rule(n, model.Accept, iif(br)))
	if n.GuestBridge() {
		// Other guest networks stay out, unless named as peers; then
		// replies. The replies come after that reject, not before: a
		// conntrack entry names no interface, so a guest of another
		// network sending with the far end's address (IPv6 has no
		// rp_filter, IPv4's is often loose) would otherwise pass as a
		// reply to this network's flows. The only replies another guest
		// network sends here are those of a network that lets this one's
		// guests in (it lists this one as a peer).
		for _, peer := range n.Peers {
			if pn, ok := byName[peer]; ok {
				to = append(to, rule(n, model.Accept, iif(pn.Bridge)))
			}
		}
		for _, r := range in.of(n) {
			to = append(to, rule(n, model.Accept, iif(r.Bridge), reply()))
		}
		to = append(to, rule(n, model.Reject, model.Match{Kind: model.MatchIIFGrp, Port: model.GuestGroup}, notIIF(br)))
		to = append(to, rule(n, model.Accept, reply()))
	}
	hasAddr := n.IPv4.IsValid() || n.IPv6.IsValid()
	if hasAddr && n.Mode != model.Bridge && n.GuestToHost != "all" {
		input = append(input, guestToHost(n)...)
	}
	subnets := n.Subnets()
	switch n.Mode {
	case model.Isolated:
		to = append(to, rule(n, model.Reject))
		from = append(from, rule(n, model.Reject))
		if !hasAddr {
			// No address here, so the host is not on this network: without
			// this, Linux's weak host model would still deliver a guest's
			// packet for any of the host's other addresses.
			input = append(input, rule(n, model.Drop))
		}
	case model.Routed:
		for _, p := range subnets {
			to = append(to, rule(n, model.Accept, daddr(p)))
		}
		to = append(to, rule(n, model.Reject))
		if len(n.Forwards) > 0 {
			nat = append(nat, rule(n, model.Masquerade, ctDNAT(), oif(br)))
		}
		for _, p := range subnets {
			from = append(from, rule(n, model.Accept, saddr(p)))
		}
		from = append(from, rule(n, model.Reject))
	case model.NAT:
		// routed_from: the LAN's hosts there reach the guests by their own
		// addresses, and the guests reach them unmasqueraded (before the
		// floating SNAT and the masquerade: accept in a nat chain ends
		// source translation for the flow). The to-chain's accept comes
		// after the reject of other guest networks, so a guest elsewhere
		// sending from a routed_from address stays out.
		for _, p := range n.RoutedFrom {
			nat = append(nat, rule(n, model.Accept, daddr(p)))
		}
		if len(n.Floating) > 0 {
			// A guest with a floating address leaves with it, on whatever
			// uplink the route picks (before the general masquerade).
			nat = append(nat, rule(n, model.SNATFloat, notOIF(br)))
		}
		if len(n.Forwards) > 0 || len(n.Floating) > 0 {
			// Port forwards: accept what prerouting DNATed to the guests, and
			// masquerade a guest's hairpin to a neighbour, so the neighbour
			// answers through the host and not straight back.
			to = append(to, rule(n, model.Accept, ctDNAT()))
			nat = append(nat, rule(n, model.Masquerade, ctDNAT(), oif(br)))
		}
		// Only as they come in by the interface the host routes them
		// through (strict reverse path): IPv6 has no rp_filter and IPv4's
		// is often off or loose, so a host on another LAN, or the
		// internet, sending with a routed_from address would otherwise
		// reach the guests (one way: enough for UDP).
		for _, p := range n.RoutedFrom {
			to = append(to, rule(n, model.Accept, saddr(p), model.Match{Kind: model.MatchRPF}))
		}
		to = append(to, rule(n, model.Reject))
		for _, p := range subnets {
			from = append(from, rule(n, model.Accept, saddr(p)))
		}
		from = append(from, rule(n, model.Reject))
		// Masquerade serves both families: nat_from sends the IPv4 subnet
		// here, nat_from6 the IPv6 prefix (NAT66, as libvirt's
		// <nat ipv6='yes'/>), and each leaves with the address of the
		// interface the route picks.
		nat = append(nat, rule(n, model.Masquerade, notOIF(br)))
	}
	return to, from, input, nat
}

// vxlanPorts are the UDP ports of the stretched networks' VXLAN devices,
// sorted, without duplicates.
func vxlanPorts(nets []model.Network) []int {
	var out []int
	for _, n := range nets {
		if n.Stretched() {
			out = append(out, n.VXLAN.Port)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// vxlanDrops keep a guest bridge's guests (any mode, open included) off
// the VTEPs: the kernel's VXLAN socket takes UDP on the VXLAN port on
// every local address, so a guest sending there (to the gateway, to the
// host's underlay address) would put frames of its making into a
// stretched network, past the other hosts' anti-spoofing. In input-NET
// they are dropped; in from-NET too, because a guest's datagram routed to
// another host's VTEP leaves with this host's address (masquerade) and
// would be taken there as this host's own. Dropped, not rejected: the
// sender learns nothing. VXLAN from the underlay (any interface that is
// not a guest bridge) stays accepted: the table's policy.
func vxlanDrops(n model.Network, ports []int) []model.Rule {
	var out []model.Rule
	for _, p := range ports {
		out = append(out, rule(n, model.Drop, model.Match{Kind: model.MatchL4, Name: "udp"}, model.Match{Kind: model.MatchDPort, Port: p}))
	}
	return out
}

// letIn indexes, once per Render, the guest networks that let another
// network's guests in: those of mode open (no to-chain: anyone may reach
// their guests), and by name those that list it in peers. Their replies to
// that network's guests come back through its to-chain. Bridge-mode
// bridges are not in GuestGroup, so their replies need no rule.
type letIn struct {
	open  []model.Network
	peers map[string][]model.Network
}

func newLetIn(nets []model.Network) letIn {
	x := letIn{peers: map[string][]model.Network{}}
	for _, r := range nets {
		switch {
		case !r.GuestBridge():
		case r.Mode == model.Open:
			x.open = append(x.open, r)
		default:
			for _, p := range r.Peers {
				x.peers[p] = append(x.peers[p], r)
			}
		}
	}
	return x
}

// of returns the networks that let n's guests in and that n does not list
// as peers itself (those have an accept of their own), by name.
func (x letIn) of(n model.Network) []model.Network {
	var out []model.Network
	for _, r := range slices.Concat(x.open, x.peers[n.Name]) {
		if r.Name == n.Name || slices.Contains(n.Peers, r.Name) || slices.ContainsFunc(out, func(o model.Network) bool { return o.Name == r.Name }) {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b model.Network) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// dnsChain is a network's chain dns-NET and the keys (its gateway
// addresses, in dns_to and dns_to6) that jump to it.
type dnsChain struct {
	rules []model.Rule
	keys  []mapKey
}

// dnsChains are the rules of each network's chain dns-NET. A network's DNS
// server (on its gateway addresses, IPv4 and IPv6, UDP and TCP 53) is for
// its own guests: a query for one of those addresses arriving on any other
// interface is dropped, whatever the mode or guest_to_host, and before any
// network's accept (a guest of another network would otherwise pass its
// own input chain's "udp dport 53 accept"). Dropped, not rejected: a
// spoofed source gets nothing back. The host itself (loopback) may ask: it
// is the guests' provider, and its resolver may forward the domain there.
//
// dns_to (dns_to6) holds one chain per address. A spec cannot give two
// networks one gateway address (subnets do not overlap), but a model
// could: they would then share the first one's chain, holding each one's
// drop, as in the flat list.
func dnsChains(nets []model.Network) map[string]dnsChain {
	out := map[string]dnsChain{}
	first := map[netip.Addr]string{}
	for _, n := range nets {
		if n.DNS == nil {
			continue
		}
		for _, gw := range []netip.Prefix{n.IPv4, n.IPv6} {
			if !gw.IsValid() {
				continue
			}
			owner, seen := first[gw.Addr()]
			if !seen {
				first[gw.Addr()], owner = n.Name, n.Name
				vm := model.VmapDNSTo
				if model.FamilyOf(gw.Addr()) == model.IPv6 {
					vm = model.VmapDNSTo6
				}
				c := out[owner]
				c.keys = append(c.keys, mapKey{vm, model.VmapElement{Prefix: model.HostPrefix(gw.Addr())}})
				out[owner] = c
			}
			c := out[owner]
			drop := rule(n, model.Drop, notIIF(n.Bridge), notIIF("lo"))
			if !slices.ContainsFunc(c.rules, func(r model.Rule) bool { return r.Network == n.Name }) {
				c.rules = append(c.rules, drop)
			}
			out[owner] = c
		}
	}
	return out
}

// dockerUser returns the rules that let guest traffic past a foreign
// forward chain that drops by policy: in DOCKER-USER of the chain's
// family's table (table ip filter, or table ip6 filter for Docker's
// ip6tables, moby/moby#48365) when Docker made one, otherwise a
// ConflictError naming the chain and the fix.
//
// For f IPv4 the chains are those of tables ip and inet, and a network's
// traffic is forwarded when it NeedsForwarding; for IPv6, the chains of
// table ip6, and it is forwarded when the network also has ipv6. A network
// whose traffic is not forwarded still sends its bridged frames through
// the family's chains when br_netfilter says so (guests speak IPv6 to each
// other, link-local at least, on any network).
func dockerUser(nets []model.Network, h model.Host, f model.Family) ([]model.Rule, error) {
	var rules []model.Rule
	table, brnf, docker := "table ip filter ", h.BridgeNFCallIPTables, h.Foreign.DockerUser
	if f == model.IPv6 {
		table, brnf, docker = "table ip6 filter ", h.BridgeNFCallIP6Tables, h.Foreign.DockerUser6
	}
	for _, n := range nets {
		forwarded := n.NeedsForwarding() && (f == model.IPv4 || n.IPv6.IsValid())
		bridged := brnf && !forwarded
		if !forwarded && !brnf {
			continue
		}
		for _, fc := range h.Foreign.ForwardDrop {
			if strings.HasPrefix(fc.Name, "table ip6 ") != (f == model.IPv6) {
				continue // a chain of the other family
			}
			if fc.Lets(n.Bridge, bridged) {
				continue
			}
			if !docker || n.Mode == model.Open || !strings.HasPrefix(fc.Name, table) {
				return nil, &ConflictError{Chain: fc.Name, Network: n.Name, Bridge: n.Bridge, Bridged: bridged, Open: n.Mode == model.Open, IPv6: f == model.IPv6}
			}
			if bridged {
				rules = append(rules, rule(n, model.Accept, iif(n.Bridge), oif(n.Bridge)))
			} else {
				rules = append(rules, rule(n, model.Accept, iif(n.Bridge)), rule(n, model.Accept, oif(n.Bridge)))
			}
			break
		}
	}
	return rules, nil
}

// guestToHost lets guests reach the host for DHCP, DNS and ICMP (and the
// replies of connections the host opened), and nothing else. These are the
// rules of input-NET, which input_from reaches on the network's bridge
// alone.
//
// For IPv6: all of ICMPv6, as all of ICMP for IPv4 (echo, the errors, and
// what IPv6 cannot work without: neighbour discovery, for guests to resolve
// their router and to answer the host's solicitations; router
// solicitations; MLD), and DHCPv6 (udp 547). A network serves only the
// families it has addresses of: on an IPv4-only network a guest's IPv6 to
// the host is rejected, link-local neighbour discovery included (the host
// has nothing there to be reached at), and on an IPv6-only one its IPv4;
// replies of connections the host opened still pass. The family check
// comes before the port rules, which hold for either family.
func guestToHost(n model.Network) []model.Rule {
	l4 := func(p string) model.Match { return model.Match{Kind: model.MatchL4, Name: p} }
	port := func(p int) model.Match { return model.Match{Kind: model.MatchDPort, Port: p} }
	// Replies to the host's own flows, from the network's own addresses
	// only (its subnets, and for IPv6 its link-local ones): a conntrack
	// entry names no interface, so a guest sending with the far end's
	// address (IPv6 has no rp_filter) would otherwise pass as a reply to
	// a flow the host has with anyone, before the family reject below.
	var out []model.Rule
	for _, p := range n.Subnets() {
		out = append(out, rule(n, model.Accept, reply(), saddr(p)))
	}
	if n.IPv6.IsValid() {
		out = append(out, rule(n, model.Accept, reply(), saddr(model.LinkLocal)))
	}
	switch {
	case !n.IPv6.IsValid():
		out = append(out, rule(n, model.Reject, nfproto(model.IPv6)))
	case !n.IPv4.IsValid():
		out = append(out, rule(n, model.Reject, nfproto(model.IPv4)))
	}
	if n.IPv4.IsValid() {
		out = append(out, rule(n, model.Accept, l4("icmp")))
	}
	if n.IPv6.IsValid() {
		out = append(out, rule(n, model.Accept, l4("ipv6-icmp")))
	}
	if n.IPv4.IsValid() {
		out = append(out, rule(n, model.Accept, l4("udp"), port(67)))
	}
	if n.IPv6.IsValid() {
		out = append(out, rule(n, model.Accept, l4("udp"), port(547)))
	}
	return append(out,
		rule(n, model.Accept, l4("udp"), port(53)),
		rule(n, model.Accept, l4("tcp"), port(53)),
		rule(n, model.Reject),
	)
}
