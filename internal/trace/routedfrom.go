package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// routedFrom are the routed_from prefixes of the network whose to-chain
// is chain, read from the rules themselves (the trace knows the host, not
// the spec): the accepts of a source prefix (with the strict reverse-path
// match), which only routed_from renders there (a routed network's
// to-chain accepts by destination).
func routedFrom(h model.Host, chain string) []netip.Prefix {
	c, ok := h.Ruleset.Chain(chain)
	if !ok || !strings.HasPrefix(chain, model.ChainTo("")) {
		return nil
	}
	var out []netip.Prefix
	for _, r := range c.Rules {
		if r.Verdict == model.Accept && len(r.Match) == 2 && r.Match[0].Kind == model.MatchSAddr && !r.Match[0].Neg && r.Match[1].Kind == model.MatchRPF {
			out = append(out, r.Match[0].Prefix)
		}
	}
	return out
}

// refusedWhy explains a drop by a nat network's to-chain that has
// routed_from: who may open connections to its guests, and that src is
// not among them. "" for any other chain.
func refusedWhy(h model.Host, chain string, src netip.Addr, iif string) string {
	rf := routedFrom(h, chain)
	if len(rf) == 0 {
		return ""
	}
	for _, p := range rf {
		if p.Contains(src) {
			back := "no route"
			if r, ok := lookup(h, src); ok {
				back = "dev " + r.Dev
			}
			return fmt.Sprintf(" (mode nat with routed_from %v: %s is in %s, but arrives on %s while the route back to it is %s: a spoofed source, refused)", rf, src, p, iif, back)
		}
	}
	return fmt.Sprintf(" (mode nat with routed_from %v: new connections get in from those prefixes, by a port forward or a floating address; %s is in none)", rf, src)
}

// notTranslated is the hop of a nat chain's accept: the flow leaves with
// its own source address (routed_from: the far end routes back to it).
func notTranslated(where string, rule model.Rule, src netip.Addr) string {
	return fmt.Sprintf("%s: %s: not masqueraded (routed_from): the far end sees %s and routes its replies back to this host", where, rule, src)
}
