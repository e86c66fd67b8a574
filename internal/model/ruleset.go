package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Ruleset is the firewall state guestnet owns: its own table, and the rules
// it placed in Docker's DOCKER-USER chain when that chain exists.
type Ruleset struct {
	// Chains are the base chains (Hook set) and the per-network regular
	// chains (Hook "") of table inet guestnet; none = no table.
	Chains []Chain `json:"chains,omitempty"`
	// Vmaps are the verdict maps that dispatch to the per-network chains.
	Vmaps      []Vmap `json:"vmaps,omitempty"`
	DockerUser []Rule `json:"docker_user,omitempty"` // rules in table ip filter chain DOCKER-USER
	// Forwards are the elements of the map "forwards" (sorted).
	Forwards []Forward `json:"forwards,omitempty"`
	// Floating are the elements of the maps "floating_in" (public ->
	// guest) and "floating_out" (guest -> public), sorted by public.
	Floating []Floating `json:"floating,omitempty"`
	// Digest, when set, stands for rules observe did not read back because
	// the kernel's ruleset generation says nothing changed since guestnet
	// wrote the ruleset with this Sum. Chains and DockerUser are then empty.
	Digest string `json:"digest,omitempty"`
}

// Sum is a digest of the ruleset's content.
func (rs Ruleset) Sum() string {
	if rs.Digest != "" {
		return rs.Digest
	}
	h := sha256.Sum256([]byte(rs.String()))
	return hex.EncodeToString(h[:])
}

// Table is the name of the nftables table guestnet owns (family inet).
const Table = "guestnet"

// Chain is one base chain of guestnet's table.
type Chain struct {
	Name     string `json:"name"`
	Type     string `json:"type"`           // "filter" or "nat"
	Hook     string `json:"hook,omitempty"` // "forward", "postrouting", ...; "" for a regular chain
	Priority int    `json:"priority"`
	Rules    []Rule `json:"rules,omitempty"`
}

// MatchKind says what a Match compares.
type MatchKind string

const (
	MatchIIF     MatchKind = "iifname"
	MatchOIF     MatchKind = "oifname"
	MatchSAddr   MatchKind = "saddr" // Prefix; its family picks ip or ip6
	MatchDAddr   MatchKind = "daddr"
	MatchCtReply MatchKind = "ct state" // established,related
	MatchCtDNAT  MatchKind = "ct status dnat"
	MatchLocal   MatchKind = "fib daddr type local"
	MatchL4      MatchKind = "meta l4proto" // Name: tcp, udp or icmp
	MatchDPort   MatchKind = "th dport"     // Port; follows a MatchL4 of tcp or udp
	MatchIIFGrp  MatchKind = "iifgroup"     // Port holds the group
)

// Match is one condition of a rule.
type Match struct {
	Kind   MatchKind    `json:"kind"`
	Neg    bool         `json:"neg,omitempty"`
	Name   string       `json:"name,omitempty"`
	Prefix netip.Prefix `json:"prefix,omitzero"`
	Port   int          `json:"port,omitempty"`
}

// Verdict is what a rule does to a matching packet.
type Verdict string

const (
	Accept     Verdict = "accept"
	Drop       Verdict = "drop"
	Reject     Verdict = "reject with icmpx admin-prohibited"
	Masquerade Verdict = "masquerade"
	DNATMap    Verdict = "dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @forwards_src"
	DNATPort   Verdict = "dnat ip to meta l4proto . th dport map @forwards"
	DNATFloat  Verdict = "dnat ip to ip daddr map @floating_in"
	SNATFloat  Verdict = "snat ip to ip saddr map @floating_out"
)

// The maps of floating addresses.
const (
	FloatingIn  = "floating_in"
	FloatingOut = "floating_out"
)

// The port-forward maps: forwards by protocol and port alone (a hash: O(1)
// lookups however many), and forwards_src for those limited to sources or
// listen addresses (intervals of a concatenation).
const (
	ForwardsMap    = "forwards"
	ForwardsSrcMap = "forwards_src"
)

// Rule is a list of matches and a verdict, tagged with the network it serves
// (stored as the rule's comment).
type Rule struct {
	Network string  `json:"network"`
	Match   []Match `json:"match,omitempty"`
	Verdict Verdict `json:"verdict"`
}

func (m Match) String() string {
	op := ""
	if m.Neg {
		op = "!= "
	}
	switch m.Kind {
	case MatchIIF, MatchOIF:
		return fmt.Sprintf("%s %s%q", m.Kind, op, m.Name)
	case MatchSAddr, MatchDAddr:
		hdr := FamilyOf(m.Prefix.Addr())
		if m.Prefix.IsSingleIP() { // nft prints a /32 (/128) as the address alone
			return fmt.Sprintf("%s %s %s%s", hdr, m.Kind, op, m.Prefix.Addr())
		}
		return fmt.Sprintf("%s %s %s%s", hdr, m.Kind, op, m.Prefix)
	case MatchCtReply:
		return "ct state established,related"
	case MatchCtDNAT, MatchLocal:
		return string(m.Kind)
	case MatchL4:
		return "meta l4proto " + m.Name
	case MatchDPort:
		return fmt.Sprintf("th dport %d", m.Port)
	case MatchIIFGrp:
		return fmt.Sprintf("iifgroup %d", m.Port)
	}
	return fmt.Sprintf("?%s", m.Kind)
}

// String renders the rule as `nft list` prints it.
func (r Rule) String() string {
	var b strings.Builder
	for i := 0; i < len(r.Match); i++ {
		m := r.Match[i]
		if m.Kind == MatchL4 && i+1 < len(r.Match) && r.Match[i+1].Kind == MatchDPort {
			fmt.Fprintf(&b, "%s dport %d ", m.Name, r.Match[i+1].Port) // as nft prints it
			i++
			continue
		}
		b.WriteString(m.String())
		b.WriteByte(' ')
	}
	b.WriteString(string(r.Verdict))
	fmt.Fprintf(&b, " comment %q", r.Network)
	return b.String()
}

// Equal reports whether two rulesets are the same.
func (rs Ruleset) Equal(o Ruleset) bool {
	if rs.Digest != "" || o.Digest != "" {
		return rs.Sum() == o.Sum()
	}
	return slices.EqualFunc(rs.Chains, o.Chains, func(a, b Chain) bool {
		return a.Name == b.Name && a.Type == b.Type && a.Hook == b.Hook &&
			a.Priority == b.Priority && slices.EqualFunc(a.Rules, b.Rules, ruleEqual)
	}) && slices.EqualFunc(rs.DockerUser, o.DockerUser, ruleEqual) && slices.Equal(rs.Forwards, o.Forwards) &&
		slices.EqualFunc(rs.Floating, o.Floating, func(a, b Floating) bool { return a.Public == b.Public && a.Guest == b.Guest })
}

func ruleEqual(a, b Rule) bool {
	return a.Network == b.Network && a.Verdict == b.Verdict && slices.Equal(a.Match, b.Match)
}

// Empty reports whether guestnet owns no rules at all.
func (rs Ruleset) Empty() bool { return len(rs.Chains) == 0 && len(rs.DockerUser) == 0 }

// RuleCount is the number of rules, DOCKER-USER ones included.
func (rs Ruleset) RuleCount() int {
	n := len(rs.DockerUser) + len(rs.Forwards)
	for _, c := range rs.Chains {
		n += len(c.Rules)
	}
	return n
}

// priorityName is how nft prints the standard priorities of family inet.
func priorityName(hook string, p int) string {
	switch {
	case p == 0:
		return "filter"
	case p == 100 && hook == "postrouting":
		return "srcnat"
	case p == -100 && hook == "prerouting":
		return "dstnat"
	}
	return fmt.Sprint(p)
}

// String renders guestnet's table exactly as `nft list table inet guestnet`
// prints it, then the DOCKER-USER rules as `nft insert rule` lines.
func (rs Ruleset) String() string {
	var b strings.Builder
	if len(rs.Chains) > 0 {
		fmt.Fprintf(&b, "table inet %s {\n", Table)
		exact, ranged := SplitForwards(rs.Forwards)
		// nft lists elements several to a line; this prints one each.
		if len(exact) > 0 {
			fmt.Fprintf(&b, "\tmap %s {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\telements = {", ForwardsMap)
			for i, f := range exact {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s . %d : %s . %d", f.Proto, f.Port, f.To, f.ToPort)
			}
			b.WriteString(" }\n\t}\n\n")
		}
		if len(ranged) > 0 {
			fmt.Fprintf(&b, "\tmap %s {\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service\n\t\tflags interval\n\t\telements = {", ForwardsSrcMap)
			for i, f := range ranged {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s", f)
			}
			b.WriteString(" }\n\t}\n\n")
		}
		if len(rs.Floating) > 0 {
			for _, m := range []string{FloatingIn, FloatingOut} {
				fmt.Fprintf(&b, "\tmap %s {\n\t\ttype ipv4_addr : ipv4_addr\n\t\telements = {", m)
				for i, f := range rs.Floating {
					if i > 0 {
						b.WriteString(",")
					}
					if m == FloatingIn {
						fmt.Fprintf(&b, " %s : %s", f.Public, f.Guest)
					} else {
						fmt.Fprintf(&b, " %s : %s", f.Guest, f.Public)
					}
				}
				b.WriteString(" }\n\t}\n\n")
			}
		}
		for i, c := range rs.Chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, priorityName(c.Hook, c.Priority))
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "\t\t%s\n", r)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	for _, r := range rs.DockerUser {
		r.Network = OwnerAlias(r.Network) // its comment there says who owns it
		fmt.Fprintf(&b, "insert rule ip filter DOCKER-USER %s\n", r)
	}
	return b.String()
}
