package model

import "strings"

// TableSees reports whether a chain of a table guestnet does not own,
// named as observe names it ("table ip6 filter chain FORWARD"), sees
// packets of family f: a table of family ip sees IPv4 only (iptables), ip6
// IPv6 only (ip6tables), inet and bridge both. A name in another form
// counts as seeing both: a drop the caller cannot place is not ignored.
func TableSees(name string, f Family) bool {
	switch {
	case strings.HasPrefix(name, "table ip "):
		return f == IPv4
	case strings.HasPrefix(name, "table ip6 "):
		return f == IPv6
	}
	return true
}

// Sees reports whether the chain sees packets of family f (TableSees).
func (c ForeignChain) Sees(f Family) bool { return TableSees(c.Name, f) }

// Sees reports whether the rule's chain sees packets of family f, and the
// rule can match them: an address match of the other family cannot.
func (r ForeignRule) Sees(f Family) bool {
	if !TableSees(r.Chain, f) {
		return false
	}
	for _, m := range r.Rule.Match {
		if (m.Kind == MatchSAddr || m.Kind == MatchDAddr) && !m.Neg && FamilyOf(m.Prefix.Addr()) != f {
			return false
		}
	}
	return true
}
