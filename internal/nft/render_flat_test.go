package nft

import (
	"cmp"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// renderFlat is Render as it was before dispatch (issue 13), kept as the
// reference the dispatching ruleset must agree with, packet for packet.
// Forward rules come in three sections, like libvirt's: traffic within a bridge, traffic into guest networks, then
// traffic out of them.
//
// Original doc: Forward rules come in three sections,
// like libvirt's: traffic within a bridge, traffic into guest networks, then
// traffic out of them, so one network's outbound accept never lets traffic
// into another network that should refuse it.
func renderFlat(nets []model.Network, h model.Host) (model.Ruleset, error) {
	if len(nets) == 0 {
		return model.Ruleset{}, nil
	}
	var intra, in, out, local, nat, dns []model.Rule
	byName := map[string]model.Network{}
	for _, n := range nets {
		byName[n.Name] = n
		dns = append(dns, dnsOnlyFromBridge(n)...)
	}
	for _, n := range nets {
		br := n.Bridge
		if n.Mode == model.Open {
			continue
		}
		intra = append(intra, rule(n, model.Accept, iif(br), oif(br)))
		if n.GuestBridge() {
			// Other guest networks stay out, unless named as peers, or
			// replying to a flow this one's guests opened into them;
			// then replies.
			for _, peer := range n.Peers {
				if pn, ok := byName[peer]; ok {
					in = append(in, rule(n, model.Accept, iif(pn.Bridge), oif(br)))
				}
			}
			for _, r := range peeredBy(n, byName) {
				in = append(in, rule(n, model.Accept, iif(r.Bridge), oif(br), reply()))
			}
			in = append(in, rule(n, model.Reject, oif(br), model.Match{Kind: model.MatchIIFGrp, Port: model.GuestGroup}, notIIF(br)))
			in = append(in, rule(n, model.Accept, oif(br), reply()))
		}
		hasAddr := n.IPv4.IsValid() || n.IPv6.IsValid()
		if hasAddr && n.Mode != model.Bridge && n.GuestToHost != "all" {
			local = append(local, guestToHostFlat(n)...)
		}
		switch n.Mode {
		case model.Isolated:
			in = append(in, rule(n, model.Reject, oif(br)))
			out = append(out, rule(n, model.Reject, iif(br)))
			if !hasAddr {
				// No address here, so the host is not on this network: without
				// this, Linux's weak host model would still deliver a guest's
				// packet for any of the host's other addresses.
				local = append(local, rule(n, model.Drop, iif(br)))
			}
		case model.Routed:
			for _, p := range n.Subnets() {
				in = append(in, rule(n, model.Accept, oif(br), daddr(p)))
			}
			in = append(in, rule(n, model.Reject, oif(br)))
			if len(n.Forwards) > 0 {
				nat = append(nat, rule(n, model.Masquerade, ctDNAT(), saddr(n.Subnet()), oif(br)))
			}
			for _, p := range n.Subnets() {
				out = append(out, rule(n, model.Accept, iif(br), saddr(p)))
			}
			out = append(out, rule(n, model.Reject, iif(br)))
		case model.NAT:
			if len(n.Floating) > 0 {
				// A guest with a floating address leaves with it, on whatever
				// uplink the route picks (before the general masquerade).
				nat = append(nat, rule(n, model.SNATFloat, notOIF(br)))
			}
			if len(n.Forwards) > 0 || len(n.Floating) > 0 {
				// Port forwards: accept what prerouting DNATed to the guests, and
				// masquerade a guest's hairpin to a neighbour, so the neighbour
				// answers through the host and not straight back. (Postrouting
				// has no input interface: the guest is told by its source.)
				in = append(in, rule(n, model.Accept, oif(br), ctDNAT()))
				for _, p := range n.Subnets() {
					nat = append(nat, rule(n, model.Masquerade, ctDNAT(), saddr(p), oif(br)))
				}
			}
			in = append(in, rule(n, model.Reject, oif(br)))
			for _, p := range n.Subnets() {
				out = append(out, rule(n, model.Accept, iif(br), saddr(p)))
			}
			out = append(out, rule(n, model.Reject, iif(br)))
			for _, p := range n.Subnets() {
				nat = append(nat, rule(n, model.Masquerade, saddr(p), notOIF(br)))
			}
		}
	}
	rs := model.Ruleset{Chains: []model.Chain{
		{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Rules: concat(intra, in, out)},
		{Name: "input", Type: "filter", Hook: "input", Priority: 0, Rules: concat(dns, local)},
		{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Rules: nat},
	}}
	for _, n := range nets {
		for _, f := range n.Forwards {
			rs.Forwards = append(rs.Forwards, f.Elements()...)
		}
		for _, fl := range n.Floating {
			rs.Floating = append(rs.Floating, model.Floating{Public: fl.Public, Guest: fl.Guest})
		}
	}
	slices.SortFunc(rs.Floating, func(a, b model.Floating) int { return a.Public.Compare(b.Public) })
	// SNAT by floating address goes before masquerade in postrouting.
	slices.SortStableFunc(rs.Chains[2].Rules, func(a, b model.Rule) int {
		return cmp.Compare(natOrderFlat(a), natOrderFlat(b))
	})
	if len(rs.Forwards) > 0 || len(rs.Floating) > 0 {
		model.SortForwards(rs.Forwards)
		// One map serves every forward: the lookup costs the same for one
		// element or ten thousand, and a change is an element update.
		fw := model.Network{Name: "forwards"}
		var dnat []model.Rule
		if len(rs.Floating) > 0 {
			dnat = append(dnat, rule(model.Network{Name: "floating"}, model.DNATFloat))
		}
		exact, ranged := model.SplitForwards(rs.Forwards)
		for _, v := range []model.Verdict{model.DNATMap, model.DNATPort} {
			if (v == model.DNATMap && len(ranged) == 0) || (v == model.DNATPort && len(exact) == 0) {
				continue
			}
			// Source- or address-limited forwards are looked up first.
			dnat = append(dnat,
				rule(fw, v, model.Match{Kind: model.MatchLocal}, model.Match{Kind: model.MatchL4, Name: "tcp"}),
				rule(fw, v, model.Match{Kind: model.MatchLocal}, model.Match{Kind: model.MatchL4, Name: "udp"}))
		}
		rs.Chains = append(rs.Chains,
			model.Chain{Name: "prerouting", Type: "nat", Hook: "prerouting", Priority: -100, Rules: dnat},
			model.Chain{Name: "output", Type: "nat", Hook: "output", Priority: -100, Rules: dnat})
	}
	du, err := dockerUser(nets, h, model.IPv4)
	if err != nil {
		return rs, err
	}
	rs.DockerUser = du
	rs.DockerUser6, err = dockerUser(nets, h, model.IPv6)
	return rs, err
}

func natOrderFlat(r model.Rule) int {
	if r.Verdict == model.SNATFloat {
		return 0
	}
	return 1
}

// guestToHostFlat lets guests reach the host for DHCP, DNS and ICMP (and the
// replies of connections the host opened), and nothing else; for the
// families the network has addresses of.
func guestToHostFlat(n model.Network) []model.Rule {
	var out []model.Rule
	for _, r := range guestToHost(n) {
		r.Match = append([]model.Match{iif(n.Bridge)}, r.Match...)
		out = append(out, r)
	}
	return out
}

// dnsOnlyFromBridge keeps a network's DNS server (on its gateway addresses,
// UDP and TCP 53) for its own guests: a query for one of them arriving on
// any other interface is dropped, whatever the mode or guest_to_host, and
// before any network's accept (a guest of another network would otherwise
// pass its own bridge's "udp dport 53 accept"). Dropped, not rejected: a
// spoofed source gets nothing back. The host itself (loopback) may ask: it
// is the guests' provider, and its resolver may forward the domain there.
func dnsOnlyFromBridge(n model.Network) []model.Rule {
	if n.DNS == nil {
		return nil
	}
	var rules []model.Rule
	for _, a := range n.Addrs() {
		gw := model.Match{Kind: model.MatchDAddr, Prefix: model.HostPrefix(a.Addr())}
		for _, p := range []string{"udp", "tcp"} {
			rules = append(rules, rule(n, model.Drop, notIIF(n.Bridge), notIIF("lo"), gw,
				model.Match{Kind: model.MatchL4, Name: p}, model.Match{Kind: model.MatchDPort, Port: 53}))
		}
	}
	return rules
}

func concat(parts ...[]model.Rule) []model.Rule {
	var out []model.Rule
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// peeredBy is letIn.of the slow, plain way (every network looked at for
// each one): the flat list's own account of which networks' replies a
// network's to-chain accepts by bridge.
func peeredBy(n model.Network, byName map[string]model.Network) []model.Network {
	var out []model.Network
	for _, r := range byName {
		letsIn := r.Mode == model.Open || slices.Contains(r.Peers, n.Name)
		if r.Name == n.Name || !r.GuestBridge() || !letsIn || slices.Contains(n.Peers, r.Name) {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b model.Network) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
