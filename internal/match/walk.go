package match

import (
	"fmt"

	"github.com/guestnet/guestnet/internal/model"
)

// Step is one rule a packet reaches, with the chain that holds it.
type Step struct {
	Chain string
	Rule  model.Rule
}

// maxJumps is the kernel's limit on nested jumps (NFT_JUMP_STACK_SIZE).
const maxJumps = 16

// Walk returns, in order, the rules a packet reaches in the base chain
// named chain of rs, as nftables evaluates guestnet's dispatch: a rule
// whose verdict looks the packet up in a verdict map (model.Dispatch*) is
// replaced by the rules of the chain the map's element for the packet's
// key jumps to (after them, the walk goes on with the next rule, as a
// jump that reaches no verdict returns); when the dispatch rule's matches
// fail, or its key is absent at this hook or not in the map, the rule is
// skipped. The other rules are returned as they are, for the caller to
// evaluate in order with Rule (the first that matches with a final verdict
// ends the chain). An error says the walk cannot tell: a match it cannot
// evaluate, a map or chain the ruleset does not hold.
func Walk(rs model.Ruleset, chain string, p Packet) ([]Step, error) {
	c, ok := rs.Chain(chain)
	if !ok {
		return nil, nil // no such chain: guestnet has no rule at this hook
	}
	return walk(rs, c, p, 0)
}

func walk(rs model.Ruleset, c model.Chain, p Packet, depth int) ([]Step, error) {
	var out []Step
	for _, r := range c.Rules {
		if !IsDispatch(r.Verdict) {
			out = append(out, Step{Chain: c.Name, Rule: r})
			continue
		}
		target, ok, err := Dispatch(rs, r, p)
		if err != nil {
			return nil, fmt.Errorf("table inet %s chain %s: %s: %w", model.Table, c.Name, r, err)
		}
		if !ok {
			continue
		}
		next, ok := rs.Chain(target)
		if !ok {
			return nil, fmt.Errorf("table inet %s chain %s: %s jumps to chain %s, which the ruleset does not hold", model.Table, c.Name, r, target)
		}
		if depth+1 >= maxJumps {
			return nil, fmt.Errorf("table inet %s chain %s: more than %d nested jumps", model.Table, c.Name, maxJumps)
		}
		steps, err := walk(rs, next, p, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, steps...)
	}
	return out, nil
}

// Dispatch is the chain a dispatch rule sends p to: ok is false when the
// rule's matches fail, or its key is absent at this hook or not in the map
// (nftables then goes on with the next rule).
func Dispatch(rs model.Ruleset, r model.Rule, p Packet) (string, bool, error) {
	v, ok := dispatchOf(r.Verdict)
	if !ok {
		return "", false, fmt.Errorf("cannot simulate %q as a dispatch: not a lookup in a verdict map of guestnet's", r.Verdict)
	}
	hit, err := Rule(r, p)
	if err != nil || !hit {
		return "", false, err
	}
	return lookupVmap(rs, v.Name, v.Key, p)
}

type dispatch struct {
	Name string
	Key  model.MatchKind
}

func dispatchOf(v model.Verdict) (dispatch, bool) {
	for _, d := range model.Vmaps {
		if d.Dispatch == v {
			return dispatch{d.Name, d.Key}, true
		}
	}
	return dispatch{}, false
}

// IsDispatch reports whether a verdict is a lookup in one of guestnet's
// verdict maps (Walk replaces such a rule by the chain it jumps to).
func IsDispatch(v model.Verdict) bool {
	_, ok := dispatchOf(v)
	return ok
}

// lookupVmap is the chain the map's element for p's key jumps to; ok is
// false when the key is absent at this hook (no such interface, another
// family than the map's: dns_to and nat_from are IPv4, dns_to6 and
// nat_from6 IPv6) or not in the map.
func lookupVmap(rs model.Ruleset, name string, key model.MatchKind, p Packet) (string, bool, error) {
	m, ok := rs.Vmap(name)
	if !ok {
		return "", false, fmt.Errorf("cannot simulate the lookup in map %s: the ruleset holds no such map", name)
	}
	if m.Key != key {
		return "", false, fmt.Errorf("cannot simulate the lookup in map %s: keyed on %s, the rule looks up %s", name, m.Key, key)
	}
	switch key {
	case model.MatchIIF, model.MatchOIF:
		name := p.IIF
		if key == model.MatchOIF {
			name = p.OIF
		}
		if name == "" {
			return "", false, nil // no such interface at this hook: the load breaks the rule
		}
		for _, e := range m.Elements {
			if e.Name == name {
				return e.Chain, true, nil
			}
		}
		return "", false, nil
	case model.MatchSAddr, model.MatchDAddr:
		a := p.Src
		if key == model.MatchDAddr {
			a = p.Dst
		}
		if !a.IsValid() || model.FamilyOf(a) != model.VmapFamily(name) {
			return "", false, nil // the nfproto check before the load fails
		}
		for _, e := range m.Elements {
			if e.Prefix.Masked().Contains(a) {
				return e.Chain, true, nil
			}
		}
		return "", false, nil
	}
	return "", false, fmt.Errorf("cannot simulate the lookup in map %s: unknown key %q", name, key)
}
