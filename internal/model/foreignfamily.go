package model

// Sees reports whether packets of family f cross the chain (Family: a
// chain of table ip sees IPv4 only, ip6 IPv6 only, inet both).
func (c ForeignChain) Sees(f Family) bool {
	cf := c.Family()
	return cf == "" || cf == f
}

// Sees reports whether the rule's chain sees packets of family f, and the
// rule can match them: an address match of the other family cannot.
func (r ForeignRule) Sees(f Family) bool {
	if !(ForeignChain{Name: r.Chain}).Sees(f) {
		return false
	}
	for _, m := range r.Rule.Match {
		if (m.Kind == MatchSAddr || m.Kind == MatchDAddr) && !m.Neg && FamilyOf(m.Prefix.Addr()) != f {
			return false
		}
	}
	return true
}
