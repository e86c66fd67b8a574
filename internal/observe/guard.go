package observe

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
)

// Guard reads guestnet's anti-spoofing table (table bridge guestnet): its
// declared and learned bindings, and whether its sets and rules are still
// the ones guestnet wrote (Broken if not, so that plan rewrites it).
func Guard(ns *netns.NS) (model.Guard, error) {
	c, err := ns.Nft(0)
	if err != nil {
		return model.Guard{}, err
	}
	return readGuard(c)
}

func readGuard(c *nftables.Conn) (model.Guard, error) {
	var g model.Guard
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyBridge}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return g, fmt.Errorf("observe nftables bridge tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == model.Table }) {
		return g, nil
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return g, fmt.Errorf("observe table bridge %s: %w", model.Table, err)
	}
	g.On = true
	byName := map[string]*nftables.Set{}
	for _, s := range sets {
		byName[s.Name] = s
		// Only "bound" holds ranges (a wildcard MAC or address).
		if s.Interval != (s.Name == model.GuardBound) {
			g.Broken = true
		}
	}
	for _, name := range []string{model.GuardPorts, model.GuardBound, model.GuardLearnedPorts, model.GuardLearned} {
		if byName[name] == nil {
			g.Broken = true
		}
	}
	for name, dst := range map[string]*[]model.Bind{model.GuardBound: &g.Bound, model.GuardLearned: &g.Learned} {
		s := byName[name]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return g, fmt.Errorf("observe set bridge %s %s: %w", model.Table, name, err)
		}
		for _, e := range els {
			if e.IntervalEnd {
				continue
			}
			b, ok := nft.DecodeGuardKey(e.Key, nilIfEmpty(e.KeyEnd))
			if !ok {
				g.Broken = true
				continue
			}
			*dst = append(*dst, b)
		}
	}
	for name, dst := range map[string]*[]string{model.GuardPorts: &g.Ports, model.GuardLearnedPorts: &g.LearnedPorts} {
		if s := byName[name]; s != nil {
			els, err := c.GetSetElements(s)
			if err != nil {
				return g, fmt.Errorf("observe set bridge %s %s: %w", model.Table, name, err)
			}
			for _, e := range els {
				*dst = append(*dst, string(bytes.TrimRight(e.Key, "\x00")))
			}
			slices.Sort(*dst)
		}
	}
	g.Bound, g.Learned = model.SortBinds(g.Bound), model.SortBinds(g.Learned)
	if err := checkGuardChains(c, t, &g); err != nil {
		return g, err
	}
	return g, nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// checkGuardChains marks the guard Broken unless its chains hold exactly
// guestnet's rules, and reads the count of dropped frames.
func checkGuardChains(c *nftables.Conn, t *nftables.Table, g *model.Guard) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("observe table bridge %s: %w", model.Table, err)
	}
	want := nft.GuardChains()
	seen := 0
	for _, ch := range chains {
		if ch.Table.Name != model.Table {
			continue
		}
		seen++
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return fmt.Errorf("observe table bridge %s chain %s: %w", model.Table, ch.Name, err)
		}
		w, ok := want[ch.Name]
		if !ok || len(rules) != len(w) || (ch.Name == "prerouting" && (ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept)) {
			g.Broken = true
			continue
		}
		for i, r := range rules {
			if !nft.SameGuardRule(r.Exprs, w[i]) {
				g.Broken = true
			}
			for _, e := range r.Exprs {
				if n, ok := e.(*expr.Counter); ok {
					g.Dropped = n.Packets
				}
			}
		}
	}
	if seen != len(want) {
		g.Broken = true
	}
	return nil
}
