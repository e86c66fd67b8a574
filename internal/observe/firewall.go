package observe

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
)

// FamilyName is how nft names a table family.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint(f)
}

var hookNames = map[nftables.ChainHook]string{
	unix.NF_INET_PRE_ROUTING:  "prerouting",
	unix.NF_INET_LOCAL_IN:     "input",
	unix.NF_INET_FORWARD:      "forward",
	unix.NF_INET_LOCAL_OUT:    "output",
	unix.NF_INET_POST_ROUTING: "postrouting",
}

// invalid is the rule observe reports for one it cannot read back, so the
// plan sees drift and rewrites guestnet's table.
var invalid = model.Rule{Verdict: "(unrecognised rule)"}

func readFirewall(ns *netns.NS, h *model.Host, hint *Hint) error {
	trust := false
	if hint != nil && hint.Sum != "" {
		gen, err := ns.NftGen()
		if err != nil {
			return err
		}
		trust = hint.Trusts(gen)
	}
	if trust {
		h.Ruleset.Digest = hint.Sum
	}
	// One socket for every request: a table of 1,000 networks has 5,000
	// chains, each read with its own request.
	c, err := ns.Nft(0, nftables.AsLasting())
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return fmt.Errorf("observe nftables: %w", err)
	}
	if !trust {
		if err := readMaps(c, h); err != nil {
			return err
		}
		// Chains stay in the kernel's order (the order they were made):
		// Equal and Sum do not depend on it, and an undo that makes the
		// table again makes it as it was, listed the same.
	}
	if h.Guard, err = readGuard(c); err != nil {
		return err
	}
	var own map[string][]*nftables.Rule
	if !trust && slices.ContainsFunc(chains, isOurs) {
		if own, err = tableRules(ns); err != nil {
			return err
		}
	}
	for _, ch := range chains {
		ours := isOurs(ch)
		switch {
		case ours && trust:
		case ours:
			mc := readOwnChain(ch, own[ch.Name])
			h.Ruleset.Chains = append(h.Ruleset.Chains, mc)
		case (ch.Table.Family == nftables.TableFamilyIPv4 || ch.Table.Family == nftables.TableFamilyIPv6) &&
			ch.Table.Name == "filter" && ch.Name == "DOCKER-USER":
			v6 := ch.Table.Family == nftables.TableFamilyIPv6
			if v6 {
				h.Foreign.DockerUser6 = true
			} else {
				h.Foreign.DockerUser = true
			}
			if trust {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return fmt.Errorf("observe DOCKER-USER: %w", err)
			}
			for _, r := range rules {
				net, ok := strings.CutPrefix(nft.CommentOf(r.UserData), model.AliasPrefix)
				if !ok {
					continue // a rule of someone else's
				}
				mr, ok := nft.Decode(r.Exprs, net)
				if !ok {
					mr = invalid
				}
				if v6 {
					h.Ruleset.DockerUser6 = append(h.Ruleset.DockerUser6, mr)
				} else {
					h.Ruleset.DockerUser = append(h.Ruleset.DockerUser, mr)
				}
			}
		case ch.Hooknum != nil && *ch.Hooknum == unix.NF_INET_FORWARD &&
			ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop &&
			(ch.Table.Family == nftables.TableFamilyIPv4 || ch.Table.Family == nftables.TableFamilyIPv6 || ch.Table.Family == nftables.TableFamilyINet):
			fc, err := readForeignChain(c, ch)
			if err != nil {
				return err
			}
			h.Foreign.ForwardDrop = append(h.Foreign.ForwardDrop, fc)
		}
	}
	return nil
}

func isOurs(ch *nftables.Chain) bool {
	return ch.Table.Family == nftables.TableFamilyINet && ch.Table.Name == model.Table
}

// readOwnChain reads one chain of guestnet's table and its rules (from
// tableRules).
func readOwnChain(ch *nftables.Chain, rules []*nftables.Rule) model.Chain {
	mc := model.Chain{Name: ch.Name, Type: string(ch.Type)}
	if ch.Hooknum != nil {
		mc.Hook = hookNames[*ch.Hooknum]
	}
	if ch.Priority != nil {
		mc.Priority = int(*ch.Priority)
	}
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		mc.Rules = append(mc.Rules, model.Rule{Verdict: "(policy drop)"})
	}
	for _, r := range rules {
		mr, ok := nft.Decode(r.Exprs, nft.CommentOf(r.UserData))
		if !ok {
			mr = invalid
		}
		mc.Rules = append(mc.Rules, mr)
	}
	return mc
}

// readForeignChain records which interfaces a foreign dropping chain
// already accepts unconditionally (a person's `iptables -I FORWARD -i br0
// -j ACCEPT`), so guestnet does not call that a conflict.
func readForeignChain(c *nftables.Conn, ch *nftables.Chain) (model.ForeignChain, error) {
	fc := model.ForeignChain{Name: fmt.Sprintf("table %s %s chain %s", FamilyName(ch.Table.Family), ch.Table.Name, ch.Name)}
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return fc, fmt.Errorf("observe %s: %w", fc.Name, err)
	}
	for _, r := range rules {
		mr, ok := nft.Decode(r.Exprs, "")
		if !ok || mr.Verdict != model.Accept {
			continue
		}
		switch {
		case len(mr.Match) == 1 && mr.Match[0].Kind == model.MatchIIF && !mr.Match[0].Neg:
			fc.AcceptIIF = append(fc.AcceptIIF, mr.Match[0].Name)
		case len(mr.Match) == 1 && mr.Match[0].Kind == model.MatchOIF && !mr.Match[0].Neg:
			fc.AcceptOIF = append(fc.AcceptOIF, mr.Match[0].Name)
		case len(mr.Match) == 2 && mr.Match[0].Kind == model.MatchIIF && mr.Match[1].Kind == model.MatchOIF &&
			mr.Match[0].Name == mr.Match[1].Name && !mr.Match[0].Neg && !mr.Match[1].Neg:
			fc.AcceptBridged = append(fc.AcceptBridged, mr.Match[0].Name)
		}
	}
	return fc, nil
}

// readMaps reads the elements of guestnet's forwards and floating maps
// (one listing of the table's sets, then each map present).
func readMaps(c *nftables.Conn, h *model.Host) error {
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil // no table: no maps
	}
	byName := map[string]*nftables.Set{}
	for _, s := range sets {
		byName[s.Name] = s
	}
	if err := readForwards(c, byName, h); err != nil {
		return err
	}
	if err := readVmaps(c, byName, h); err != nil {
		return err
	}
	if err := readFloating(c, byName[model.FloatingIn], byName[model.FloatingOut], h); err != nil {
		return err
	}
	foreignSets(sets, h)
	return nil
}

// foreignSets reports each named set or map of guestnet's table that
// guestnet does not make (someone's `nft add set inet guestnet ...`) as a
// map of its own with an unknown key: the table is then not one any spec
// renders, the plan sees drift and, the set of maps differing, replaces
// the table whole, which removes it. Anonymous sets belong to the rules
// that hold them.
func foreignSets(sets []*nftables.Set, h *model.Host) {
	known := map[string]bool{model.ForwardsMap: true, model.ForwardsSrcMap: true, model.FloatingIn: true, model.FloatingOut: true}
	for _, v := range model.Vmaps {
		known[v.Name] = true
	}
	for _, s := range sets {
		if !s.Anonymous && !known[s.Name] {
			h.Ruleset.Vmaps = append(h.Ruleset.Vmaps, model.Vmap{Name: s.Name, Key: "(not guestnet's)"})
		}
	}
}

// readVmaps reads guestnet's verdict maps and the chain each element
// jumps to. An element it cannot read back (a key or verdict guestnet
// would not have written) is kept as one without a chain: the plan sees
// drift, and a full replace rewrites the table.
func readVmaps(c *nftables.Conn, sets map[string]*nftables.Set, h *model.Host) error {
	for _, v := range model.Vmaps {
		s := sets[v.Name]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("observe map %s: %w", v.Name, err)
		}
		// The library reports a verdict map's key type as "verdict" (it
		// reads the data type into KeyType), so the key is checked element
		// by element: its length and, for names, its padding.
		key := v.Key
		if !s.IsMap {
			key = "(not a map)"
		}
		h.Ruleset.Vmaps = append(h.Ruleset.Vmaps, model.Vmap{Name: v.Name, Key: key, Elements: decodeVmap(v.Name, els)})
	}
	return nil
}

// readForwards reads the elements of guestnet's forwards maps.
func readForwards(c *nftables.Conn, sets map[string]*nftables.Set, h *model.Host) error {
	for _, name := range []string{model.ForwardsMap, model.ForwardsSrcMap} {
		s := sets[name]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("observe map %s: %w", name, err)
		}
		for _, e := range els {
			var f model.Forward
			var ok bool
			if name == model.ForwardsMap {
				f, ok = nft.DecodeExact(e.Key, e.Val)
			} else {
				f, ok = nft.DecodeForward(e.Key, e.KeyEnd, e.Val)
			}
			if !ok {
				f = model.Forward{Proto: "(unrecognised element)"}
			}
			h.Ruleset.Forwards = append(h.Ruleset.Forwards, f)
		}
	}
	model.SortForwards(h.Ruleset.Forwards)
	return nil
}

// readFloating reads guestnet's floating maps: floating_in (public ->
// guest) gives the addresses; floating_out (guest -> public) must mirror
// it, or the ruleset gets an entry no plan wants, so it is rewritten.
func readFloating(c *nftables.Conn, in, out *nftables.Set, h *model.Host) error {
	if in == nil && out == nil {
		return nil
	}
	pairs := func(s *nftables.Set) (map[netip.Addr]netip.Addr, bool, error) {
		m := map[netip.Addr]netip.Addr{}
		if s == nil {
			return m, false, nil
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, false, fmt.Errorf("observe map %s: %w", s.Name, err)
		}
		ok := true
		for _, e := range els {
			k, ok1 := netip.AddrFromSlice(e.Key) // 4 or 16 bytes: either family
			v, ok2 := netip.AddrFromSlice(e.Val)
			if !ok1 || !ok2 || k.Is4() != v.Is4() {
				ok = false
				continue
			}
			m[k] = v
		}
		return m, ok, nil
	}
	pin, okIn, err := pairs(in)
	if err != nil {
		return err
	}
	pout, okOut, err := pairs(out)
	if err != nil {
		return err
	}
	mirror := okIn && okOut && len(pin) == len(pout)
	for pub, guest := range pin {
		h.Ruleset.Floating = append(h.Ruleset.Floating, model.Floating{Public: pub, Guest: guest})
		mirror = mirror && pout[guest] == pub
	}
	if !mirror {
		h.Ruleset.Floating = append(h.Ruleset.Floating, model.Floating{Uplink: "(floating maps do not mirror each other)"})
	}
	slices.SortFunc(h.Ruleset.Floating, func(a, b model.Floating) int { return a.Public.Compare(b.Public) })
	return nil
}
