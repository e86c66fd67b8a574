package model

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Delta returns the element and chain operations that turn guestnet's
// table old into new, and true; or false when only a full replace can:
// there is no table before or after, either side is a Digest (its rules
// were not read), a base chain differs, or the set of maps differs (a map
// is created with the table, never by a delta). Any element observe could
// not decode also asks for a full replace: a delta can only delete what it
// can name.
func Delta(old, new Ruleset) (RulesetDelta, bool) {
	var d RulesetDelta
	if old.Digest != "" || new.Digest != "" || len(old.Chains) == 0 || len(new.Chains) == 0 {
		return d, false
	}
	if !slices.EqualFunc(baseChains(old), baseChains(new), chainEqual) ||
		!slices.Equal(MapsOf(old), MapsOf(new)) || !decodable(old) || !decodable(new) {
		return d, false
	}
	oc, nc := regularChains(old), regularChains(new)
	for _, o := range old.Chains {
		if o.Hook != "" {
			continue
		}
		n, ok := nc[o.Name]
		switch {
		case !ok:
			d.DelChains = append(d.DelChains, o)
		case !chainEqual(o, n):
			d.SetChains = append(d.SetChains, n)
			d.OldSetChains = append(d.OldSetChains, o)
		}
	}
	for _, n := range new.Chains {
		if _, ok := oc[n.Name]; !ok && n.Hook == "" {
			d.AddChains = append(d.AddChains, n)
		}
	}
	nv := vmapsByName(new)
	for _, v := range old.Vmaps {
		name := v.Name
		add, del := Diff(v.Elements, nv[name].Elements)
		for _, e := range del {
			d.DelElements = append(d.DelElements, VmapChange{Map: name, Element: e})
		}
		for _, e := range add {
			d.AddElements = append(d.AddElements, VmapChange{Map: name, Element: e})
		}
	}
	d.AddForwards, d.DelForwards = Diff(old.Forwards, new.Forwards)
	d.AddFloating, d.DelFloating = Diff(old.Floating, new.Floating)
	if !slices.EqualFunc(old.DockerUser, new.DockerUser, ruleEqual) {
		du, odu := slices.Clone(new.DockerUser), slices.Clone(old.DockerUser)
		d.DockerUser, d.OldDockerUser = &du, &odu
	}
	if !slices.EqualFunc(old.DockerUser6, new.DockerUser6, ruleEqual) {
		du, odu := slices.Clone(new.DockerUser6), slices.Clone(old.DockerUser6)
		d.DockerUser6, d.OldDockerUser6 = &du, &odu
	}
	return d, true
}

// Inverse is the delta that undoes d: applied after d, it gives back the
// ruleset d was computed from. It is what the undo journal runs, so the
// journal holds what changed, never the whole old ruleset.
func (d RulesetDelta) Inverse() RulesetDelta {
	return RulesetDelta{
		DelElements: d.AddElements, AddElements: d.DelElements,
		DelChains: d.AddChains, AddChains: d.DelChains,
		SetChains: d.OldSetChains, OldSetChains: d.SetChains,
		AddForwards: d.DelForwards, DelForwards: d.AddForwards,
		AddFloating: d.DelFloating, DelFloating: d.AddFloating,
		DockerUser: d.OldDockerUser, OldDockerUser: d.DockerUser,
		DockerUser6: d.OldDockerUser6, OldDockerUser6: d.DockerUser6,
	}
}

// Empty reports whether d changes nothing.
func (d RulesetDelta) Empty() bool {
	return len(d.DelElements)+len(d.DelChains)+len(d.AddChains)+len(d.SetChains)+len(d.AddElements)+
		len(d.AddForwards)+len(d.DelForwards)+len(d.AddFloating)+len(d.DelFloating) == 0 && d.DockerUser == nil && d.DockerUser6 == nil
}

// Objects is the number of kernel objects d writes: chains added, deleted
// or refilled, rules written, elements added or deleted, and DOCKER-USER
// rules replaced.
func (d RulesetDelta) Objects() int {
	n := len(d.DelElements) + len(d.AddElements) + len(d.DelChains) + len(d.AddForwards) + len(d.DelForwards) +
		2*(len(d.AddFloating)+len(d.DelFloating))
	for _, cs := range [][]Chain{d.AddChains, d.SetChains} {
		for _, c := range cs {
			n += 1 + len(c.Rules)
		}
	}
	if d.DockerUser != nil {
		n += len(*d.DockerUser) + len(*d.OldDockerUser)
	}
	if d.DockerUser6 != nil {
		n += len(*d.DockerUser6) + len(*d.OldDockerUser6)
	}
	return n
}

// String summarises d, e.g. "4 chains added, 5 map elements added".
func (d RulesetDelta) String() string {
	var parts []string
	count := func(n int, what, how string) {
		if n == 1 {
			if w, ok := strings.CutSuffix(what, "addresses"); ok {
				what = w + "address"
			} else {
				what = strings.TrimSuffix(what, "s")
			}
		}
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s %s", n, what, how))
		}
	}
	count(len(d.AddChains), "chains", "added")
	count(len(d.SetChains), "chains", "refilled")
	count(len(d.DelChains), "chains", "deleted")
	count(len(d.AddElements), "map elements", "added")
	count(len(d.DelElements), "map elements", "deleted")
	count(len(d.AddForwards), "forwards", "added")
	count(len(d.DelForwards), "forwards", "deleted")
	count(len(d.AddFloating), "floating addresses", "added")
	count(len(d.DelFloating), "floating addresses", "deleted")
	if d.DockerUser != nil {
		parts = append(parts, fmt.Sprintf("DOCKER-USER rules replaced (%d now)", len(*d.DockerUser)))
	}
	if d.DockerUser6 != nil {
		parts = append(parts, fmt.Sprintf("ip6 DOCKER-USER rules replaced (%d now)", len(*d.DockerUser6)))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// ErrDelta is wrapped by every error of Apply: a delta that does not fit
// the ruleset, which the kernel would refuse as a whole.
var ErrDelta = errors.New("delta does not apply")

// Apply returns rs changed by d in the documented order, or an error
// wrapping ErrDelta where the kernel would refuse the transaction: an
// element deleted that is not there or added that is, a chain added that
// exists, deleted or refilled that does not, a chain deleted that an
// element still jumps to, an element that jumps to a chain that does not
// exist. rs is not changed. The result is Canonical.
func (d RulesetDelta) Apply(rs Ruleset) (Ruleset, error) {
	if rs.Digest != "" || len(rs.Chains) == 0 {
		return rs, fmt.Errorf("%w: no table inet %s to change (or its rules were not read)", ErrDelta, Table)
	}
	out := rs.Clone()
	chains := map[string]int{}
	for i, c := range out.Chains {
		chains[c.Name] = i
	}
	vm := map[string]int{}
	for i, v := range out.Vmaps {
		vm[v.Name] = i
	}
	for _, e := range d.DelElements {
		i, ok := vm[e.Map]
		if !ok {
			return rs, fmt.Errorf("%w: delete element %s from map %s: no such map", ErrDelta, e.Element.KeyString(), e.Map)
		}
		n := len(out.Vmaps[i].Elements)
		out.Vmaps[i].Elements = slices.DeleteFunc(out.Vmaps[i].Elements, func(x VmapElement) bool { return x == e.Element })
		if len(out.Vmaps[i].Elements) == n {
			return rs, fmt.Errorf("%w: delete element %s : jump %s from map %s: not there", ErrDelta, e.Element.KeyString(), e.Element.Chain, e.Map)
		}
	}
	jumped := func(chain string) string {
		for _, v := range out.Vmaps {
			for _, e := range v.Elements {
				if e.Chain == chain {
					return v.Name
				}
			}
		}
		return ""
	}
	del := map[string]bool{}
	for _, c := range d.DelChains {
		i, ok := chains[c.Name]
		if !ok || out.Chains[i].Hook != "" {
			return rs, fmt.Errorf("%w: delete chain %s: no such regular chain", ErrDelta, c.Name)
		}
		if m := jumped(c.Name); m != "" {
			return rs, fmt.Errorf("%w: delete chain %s: map %s still jumps to it", ErrDelta, c.Name, m)
		}
		del[c.Name] = true
	}
	out.Chains = slices.DeleteFunc(out.Chains, func(c Chain) bool { return del[c.Name] })
	for _, c := range d.AddChains {
		if _, ok := chains[c.Name]; ok && !del[c.Name] {
			return rs, fmt.Errorf("%w: add chain %s: it exists", ErrDelta, c.Name)
		}
		if c.Hook != "" {
			return rs, fmt.Errorf("%w: add chain %s: a delta adds regular chains only", ErrDelta, c.Name)
		}
		out.Chains = append(out.Chains, cloneChain(c))
	}
	for _, c := range d.SetChains {
		i := slices.IndexFunc(out.Chains, func(x Chain) bool { return x.Name == c.Name })
		if i < 0 || out.Chains[i].Hook != "" {
			return rs, fmt.Errorf("%w: flush chain %s: no such regular chain", ErrDelta, c.Name)
		}
		out.Chains[i] = cloneChain(c)
	}
	have := map[string]bool{}
	for _, c := range out.Chains {
		have[c.Name] = true
	}
	for _, e := range d.AddElements {
		i, ok := vm[e.Map]
		if !ok {
			return rs, fmt.Errorf("%w: add element %s to map %s: no such map", ErrDelta, e.Element.KeyString(), e.Map)
		}
		if !have[e.Element.Chain] {
			return rs, fmt.Errorf("%w: add element %s : jump %s to map %s: no such chain", ErrDelta, e.Element.KeyString(), e.Element.Chain, e.Map)
		}
		if slices.ContainsFunc(out.Vmaps[i].Elements, func(x VmapElement) bool { return x.sameKey(e.Element) }) {
			return rs, fmt.Errorf("%w: add element %s to map %s: it exists", ErrDelta, e.Element.KeyString(), e.Map)
		}
		out.Vmaps[i].Elements = append(out.Vmaps[i].Elements, e.Element)
	}
	var err error
	if out.Forwards, err = applyElems(out.Forwards, d.AddForwards, d.DelForwards, Forward.Key, "forwards"); err != nil {
		return rs, err
	}
	pub := func(f Floating) string { return f.Public.String() }
	if out.Floating, err = applyElems(out.Floating, d.AddFloating, d.DelFloating, pub, FloatingIn); err != nil {
		return rs, err
	}
	guest := func(f Floating) string { return f.Guest.String() }
	if _, err = applyElems(rs.Floating, d.AddFloating, d.DelFloating, guest, FloatingOut); err != nil {
		return rs, err
	}
	if d.DockerUser != nil {
		out.DockerUser = slices.Clone(*d.DockerUser)
	}
	if d.DockerUser6 != nil {
		out.DockerUser6 = slices.Clone(*d.DockerUser6)
	}
	out.Canonical()
	return out, nil
}

// applyElems deletes then adds map elements, identified by key as the
// kernel does: a delete of an element not there, or an add of a key there
// already, fails.
func applyElems[T comparable](have, add, del []T, key func(T) string, name string) ([]T, error) {
	out := slices.Clone(have)
	for _, e := range del {
		i := slices.Index(out, e)
		if i < 0 {
			return nil, fmt.Errorf("%w: delete element %s from map %s: not there", ErrDelta, key(e), name)
		}
		out = slices.Delete(out, i, i+1)
	}
	for _, e := range add {
		if slices.ContainsFunc(out, func(x T) bool { return key(x) == key(e) }) {
			return nil, fmt.Errorf("%w: add element %s to map %s: it exists", ErrDelta, key(e), name)
		}
		out = append(out, e)
	}
	return out, nil
}

// Canonical puts rs in the one order Equal and Sum compare: base chains by
// hook (forward, input, postrouting, prerouting, output, as Render makes
// them), then the regular chains by name; verdict maps in the order of
// Vmaps, their elements in nft's order; forwards and floating addresses
// sorted.
// The kernel lists chains in the order they were made, so a table changed
// by deltas reads back in another order than a fresh one.
func (rs *Ruleset) Canonical() {
	byOrder := func(a, b Chain) int {
		return cmp.Or(cmp.Compare(hookRank(a.Hook), hookRank(b.Hook)), cmp.Compare(regularName(a), regularName(b)))
	}
	if !slices.IsSortedFunc(rs.Chains, byOrder) { // Render's order already, but for the kernel's
		slices.SortStableFunc(rs.Chains, byOrder)
	}
	byRank := func(a, b Vmap) int { return cmp.Compare(vmapRank(a.Name), vmapRank(b.Name)) }
	if !slices.IsSortedFunc(rs.Vmaps, byRank) {
		slices.SortStableFunc(rs.Vmaps, byRank)
	}
	for i := range rs.Vmaps {
		SortVmapElements(rs.Vmaps[i].Key, rs.Vmaps[i].Elements)
		if len(rs.Vmaps[i].Elements) == 0 {
			rs.Vmaps[i].Elements = nil
		}
	}
	for i := range rs.Chains {
		if len(rs.Chains[i].Rules) == 0 {
			rs.Chains[i].Rules = nil
		}
	}
	SortForwards(rs.Forwards)
	slices.SortFunc(rs.Floating, func(a, b Floating) int { return cmp.Or(a.Public.Compare(b.Public), a.Guest.Compare(b.Guest)) })
	if len(rs.Forwards) == 0 {
		rs.Forwards = nil
	}
	if len(rs.Floating) == 0 {
		rs.Floating = nil
	}
	if len(rs.DockerUser) == 0 {
		rs.DockerUser = nil
	}
	if len(rs.DockerUser6) == 0 {
		rs.DockerUser6 = nil
	}
}

func (e VmapElement) sameKey(o VmapElement) bool { return e.Name == o.Name && e.Prefix == o.Prefix }

var hookOrder = []string{"forward", "input", "postrouting", "prerouting", "output"}

func hookRank(h string) int {
	if h == "" {
		return len(hookOrder) + 1
	}
	if i := slices.Index(hookOrder, h); i >= 0 {
		return i
	}
	return len(hookOrder)
}

// regularName orders regular chains by name; base chains keep their order.
func regularName(c Chain) string {
	if c.Hook != "" {
		return ""
	}
	return c.Name
}

func vmapRank(name string) int {
	for i, v := range Vmaps {
		if v.Name == name {
			return i
		}
	}
	return len(Vmaps)
}

// MapsOf names the maps table inet guestnet holds for rs, sorted: every
// map a rule looks up (its verdict names it as @map), every verdict map,
// and every map with elements. apply creates exactly these with the table.
func MapsOf(rs Ruleset) []string {
	if len(rs.Chains) == 0 {
		return nil
	}
	set := map[string]bool{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, f := range strings.Fields(string(r.Verdict)) {
				if name, ok := strings.CutPrefix(f, "@"); ok {
					set[name] = true
				}
			}
		}
	}
	for _, v := range rs.Vmaps {
		set[v.Name+" "+string(v.Key)] = true // a key change is a new map
		set[v.Name] = true
	}
	exact, ranged := SplitForwards(rs.Forwards)
	set[ForwardsMap] = set[ForwardsMap] || len(exact) > 0
	set[ForwardsSrcMap] = set[ForwardsSrcMap] || len(ranged) > 0
	// The floating maps are one pair: both or neither.
	floating := set[FloatingIn] || set[FloatingOut] || len(rs.Floating) > 0
	set[FloatingIn], set[FloatingOut] = floating, floating
	var out []string
	for name, ok := range set {
		if ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// decodable reports whether every element of rs is one guestnet could
// have written (observe marks the others; a delta cannot name them).
func decodable(rs Ruleset) bool {
	for _, v := range rs.Vmaps {
		for _, e := range v.Elements {
			if e.Chain == "" || (e.Name == "" && !e.Prefix.IsValid()) {
				return false
			}
		}
	}
	for _, f := range rs.Forwards {
		if !f.To.IsValid() {
			return false
		}
	}
	for _, f := range rs.Floating {
		if !f.Public.IsValid() || !f.Guest.IsValid() || f.Uplink != "" {
			return false
		}
	}
	return true
}

func baseChains(rs Ruleset) []Chain {
	var out []Chain
	for _, c := range rs.Chains {
		if c.Hook != "" {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b Chain) int { return cmp.Compare(hookRank(a.Hook), hookRank(b.Hook)) })
	return out
}

func regularChains(rs Ruleset) map[string]Chain {
	out := make(map[string]Chain, len(rs.Chains))
	for _, c := range rs.Chains {
		if c.Hook == "" {
			out[c.Name] = c
		}
	}
	return out
}

func vmapsByName(rs Ruleset) map[string]Vmap {
	out := map[string]Vmap{}
	for _, v := range rs.Vmaps {
		out[v.Name] = v
	}
	return out
}

func chainEqual(a, b Chain) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Hook == b.Hook &&
		a.Priority == b.Priority && slices.EqualFunc(a.Rules, b.Rules, ruleEqual)
}

func cloneChain(c Chain) Chain {
	c.Rules = slices.Clone(c.Rules)
	for i := range c.Rules {
		c.Rules[i].Match = slices.Clone(c.Rules[i].Match)
	}
	return c
}

// Clone is a deep copy of rs.
func (rs Ruleset) Clone() Ruleset {
	out := rs
	out.Chains = make([]Chain, len(rs.Chains))
	for i, c := range rs.Chains {
		out.Chains[i] = cloneChain(c)
	}
	out.Vmaps = make([]Vmap, len(rs.Vmaps))
	for i, v := range rs.Vmaps {
		v.Elements = slices.Clone(v.Elements)
		out.Vmaps[i] = v
	}
	if rs.Vmaps == nil {
		out.Vmaps = nil
	}
	if rs.Chains == nil {
		out.Chains = nil
	}
	out.Forwards = slices.Clone(rs.Forwards)
	out.Floating = slices.Clone(rs.Floating)
	out.DockerUser = slices.Clone(rs.DockerUser)
	out.DockerUser6 = slices.Clone(rs.DockerUser6)
	return out
}
