package model

import (
	"cmp"
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
	Vmaps       []Vmap `json:"vmaps,omitempty"`
	DockerUser  []Rule `json:"docker_user,omitempty"`  // rules in table ip filter chain DOCKER-USER
	DockerUser6 []Rule `json:"docker_user6,omitempty"` // rules in table ip6 filter chain DOCKER-USER
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

// Sum is a digest of the ruleset's content (see digest).
func (rs Ruleset) Sum() string {
	if rs.Digest != "" {
		return rs.Digest
	}
	return rs.digest()
}

// Table is the name of the nftables table guestnet owns (family inet).
const Table = "guestnet"

// Chain is one chain of guestnet's table: a base chain (Hook set) or a
// regular chain (Type and Hook "") that a verdict map jumps to.
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
	// MatchRPF holds when the route back to the source leaves by the
	// interface the packet came in on (strict reverse path, rp_filter=1
	// as one match): what trusts a source address trusts it only there.
	MatchRPF     MatchKind = "fib saddr . iif oif != 0"
	MatchL4      MatchKind = "meta l4proto" // Name: tcp, udp, icmp or ipv6-icmp (ICMPv6, as nft names it)
	MatchDPort   MatchKind = "th dport"     // Port; follows a MatchL4 of tcp or udp
	MatchIIFGrp  MatchKind = "iifgroup"     // Port holds the group
	MatchNFProto MatchKind = "meta nfproto" // Name: ipv4 or ipv6 (the packet's family)
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
	case MatchCtDNAT, MatchLocal, MatchRPF:
		return string(m.Kind)
	case MatchL4:
		return "meta l4proto " + m.Name
	case MatchDPort:
		return fmt.Sprintf("th dport %d", m.Port)
	case MatchIIFGrp:
		return fmt.Sprintf("iifgroup %d", m.Port)
	case MatchNFProto:
		return "meta nfproto " + m.Name
	}
	return fmt.Sprintf("?%s", m.Kind)
}

// String renders the rule as `nft list` prints it.
func (r Rule) String() string {
	var b strings.Builder
	verdict := string(r.Verdict)
	for i := 0; i < len(r.Match); i++ {
		m := r.Match[i]
		if (r.Verdict == DNATMap || r.Verdict == DNATPort) && m.Kind == MatchL4 && !m.Neg && (m.Name == "tcp" || m.Name == "udp") {
			// nft folds the protocol into the port of the lookup key
			// ("meta l4proto . tcp dport"), and shows the nfproto check
			// of DNATPort, whose key holds no address that implies it.
			verdict = strings.Replace(verdict, ". th dport", ". "+m.Name+" dport", 1)
			if r.Verdict == DNATPort {
				verdict = "meta nfproto ipv4 " + verdict
			}
			continue
		}
		if m.Kind == MatchL4 && i+1 < len(r.Match) && r.Match[i+1].Kind == MatchDPort {
			fmt.Fprintf(&b, "%s dport %d ", m.Name, r.Match[i+1].Port) // as nft prints it
			i++
			continue
		}
		b.WriteString(m.String())
		b.WriteByte(' ')
	}
	b.WriteString(verdict)
	if r.Network != "" { // the dispatch rules of the base chains serve no one network
		fmt.Fprintf(&b, " comment %q", r.Network)
	}
	return b.String()
}

// Equal reports whether two rulesets are the same. The order of the
// regular chains and of map elements does not count: the kernel lists
// chains in the order they were made, which after incremental changes is
// not the order Render gives.
func (rs Ruleset) Equal(o Ruleset) bool {
	if rs.Digest != "" || o.Digest != "" {
		return rs.Sum() == o.Sum()
	}
	a, b := rs.canonical(), o.canonical()
	return slices.EqualFunc(a.Chains, b.Chains, func(a, b Chain) bool {
		return a.Name == b.Name && a.Type == b.Type && a.Hook == b.Hook &&
			a.Priority == b.Priority && slices.EqualFunc(a.Rules, b.Rules, ruleEqual)
	}) && slices.EqualFunc(a.Vmaps, b.Vmaps, func(a, b Vmap) bool {
		return a.Name == b.Name && a.Key == b.Key && slices.Equal(a.Elements, b.Elements)
	}) && slices.EqualFunc(rs.DockerUser, o.DockerUser, ruleEqual) && slices.EqualFunc(rs.DockerUser6, o.DockerUser6, ruleEqual) &&
		slices.Equal(rs.Forwards, o.Forwards) &&
		slices.EqualFunc(rs.Floating, o.Floating, func(a, b Floating) bool { return a.Public == b.Public && a.Guest == b.Guest })
}

// canonical is a copy with the base chains first (in their order), then
// the regular chains by name, and the verdict maps' elements in nft's
// order.
func (rs Ruleset) canonical() Ruleset {
	c := rs
	c.Chains = slices.Clone(rs.Chains)
	slices.SortStableFunc(c.Chains, func(a, b Chain) int {
		ra, rb := a.Hook == "", b.Hook == ""
		switch {
		case ra && rb:
			return strings.Compare(a.Name, b.Name)
		case ra:
			return 1
		case rb:
			return -1
		}
		return 0
	})
	c.Vmaps = make([]Vmap, len(rs.Vmaps))
	for i, v := range rs.Vmaps {
		v.Elements = slices.Clone(v.Elements)
		SortVmapElements(v.Key, v.Elements)
		c.Vmaps[i] = v
	}
	slices.SortStableFunc(c.Vmaps, func(a, b Vmap) int { return cmp.Compare(vmapIndex(a.Name), vmapIndex(b.Name)) })
	return c
}

func vmapIndex(name string) int {
	for i, v := range Vmaps {
		if v.Name == name {
			return i
		}
	}
	return len(Vmaps)
}

// Chain returns the chain of that name.
func (rs Ruleset) Chain(name string) (Chain, bool) {
	for _, c := range rs.Chains {
		if c.Name == name {
			return c, true
		}
	}
	return Chain{}, false
}

// Vmap returns the verdict map of that name.
func (rs Ruleset) Vmap(name string) (Vmap, bool) {
	for _, v := range rs.Vmaps {
		if v.Name == name {
			return v, true
		}
	}
	return Vmap{}, false
}

// SortVmapElements puts a verdict map's elements in the order nft lists
// them: addresses by value (then prefix length); interface names as nft
// compares them, as the little-endian integer of the 16 bytes the kernel
// keeps (so by length first, then from the last character back: "br2"
// before "br10", "ba" before "ab").
func SortVmapElements(key MatchKind, es []VmapElement) {
	if key == MatchIIF || key == MatchOIF {
		slices.SortFunc(es, func(a, b VmapElement) int { return compareIfname(a.Name, b.Name) })
		return
	}
	slices.SortFunc(es, func(a, b VmapElement) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
}

func compareIfname(a, b string) int {
	if c := cmp.Compare(len(a), len(b)); c != 0 {
		return c
	}
	for i := len(a) - 1; i >= 0; i-- {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

func ruleEqual(a, b Rule) bool {
	return a.Network == b.Network && a.Verdict == b.Verdict && slices.Equal(a.Match, b.Match)
}

// Empty reports whether guestnet owns no rules at all.
func (rs Ruleset) Empty() bool {
	return len(rs.Chains) == 0 && len(rs.DockerUser) == 0 && len(rs.DockerUser6) == 0
}

// RuleCount is the number of rules, DOCKER-USER ones included.
func (rs Ruleset) RuleCount() int {
	n := len(rs.DockerUser) + len(rs.DockerUser6) + len(rs.Forwards)
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
// prints it, then the DOCKER-USER rules as `nft insert rule` lines. The
// port-forward and floating maps are printed whenever the table exists (the
// base chains always look them up), then the verdict maps, then the chains
// in their order (the order they were made in).
func (rs Ruleset) String() string {
	var b strings.Builder
	if len(rs.Chains) > 0 {
		fmt.Fprintf(&b, "table inet %s {\n", Table)
		exact, ranged := SplitForwards(rs.Forwards)
		exact = slices.Clone(exact)
		// nft lists this map's elements by the integer its 8-byte key
		// (proto, 3 pad, port big-endian, 2 pad) is in host (little-endian)
		// order: by the port's low byte, then its high byte, then protocol.
		slices.SortStableFunc(exact, func(a, b Forward) int {
			return cmp.Or(cmp.Compare(a.Port&0xff, b.Port&0xff), cmp.Compare(a.Port>>8, b.Port>>8), cmp.Compare(protoNumber[a.Proto], protoNumber[b.Proto]))
		})
		var keys []string
		for _, f := range exact {
			keys = append(keys, fmt.Sprintf("%s . %d : %s . %d", f.Proto, f.Port, f.To, f.ToPort))
		}
		printMap(&b, ForwardsMap, "inet_proto . inet_service : ipv4_addr . inet_service", false, 1, keys)
		keys = nil
		for _, f := range ranged {
			keys = append(keys, fmt.Sprintf("%s . %s . %s . %d : %s . %d", addrOrPrefix(f.Src), addrOrPrefix(f.Dst), f.Proto, f.Port, f.To, f.ToPort))
		}
		printMap(&b, ForwardsSrcMap, "ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service", true, 1, keys)
		for _, m := range []string{FloatingIn, FloatingOut} {
			keys = nil
			fl := slices.Clone(rs.Floating) // nft lists a map by its keys
			slices.SortFunc(fl, func(a, b Floating) int {
				if m == FloatingIn {
					return a.Public.Compare(b.Public)
				}
				return a.Guest.Compare(b.Guest)
			})
			for _, f := range fl {
				if m == FloatingIn {
					keys = append(keys, fmt.Sprintf("%s : %s", f.Public, f.Guest))
				} else {
					keys = append(keys, fmt.Sprintf("%s : %s", f.Guest, f.Public))
				}
			}
			printMap(&b, m, "ipv4_addr : ipv4_addr", false, 2, keys)
		}
		for _, v := range rs.Vmaps {
			typ, perLine := "ifname : verdict", 1
			if v.Key == MatchSAddr || v.Key == MatchDAddr {
				f := VmapFamily(v.Name)
				typ = f.AddrType() + " : verdict"
				if f == IPv4 {
					perLine = 2
				}
			}
			es := slices.Clone(v.Elements)
			SortVmapElements(v.Key, es)
			keys = nil
			for _, e := range es {
				keys = append(keys, fmt.Sprintf("%s : jump %s", e.KeyString(), e.Chain))
			}
			printMap(&b, v.Name, typ, v.Key == MatchSAddr, perLine, keys)
		}
		for i, c := range rs.Chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			if c.Hook != "" {
				fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, priorityName(c.Hook, c.Priority))
			}
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
	for _, r := range rs.DockerUser6 {
		r.Network = OwnerAlias(r.Network)
		fmt.Fprintf(&b, "insert rule ip6 filter DOCKER-USER %s\n", r)
	}
	return b.String()
}

// protoNumber is the IP protocol number of the protocols a forward takes.
var protoNumber = map[string]int{"tcp": 6, "udp": 17}

// printMap prints one named map as nft lists it: elements on the line of
// "elements = {", perLine to a line (nft puts two IPv4-keyed elements on a
// line, one of any other key), continuation lines indented to the brace.
func printMap(b *strings.Builder, name, typ string, interval bool, perLine int, elems []string) {
	fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s\n", name, typ)
	if interval {
		b.WriteString("\t\tflags interval\n")
	}
	if len(elems) > 0 {
		b.WriteString("\t\telements = { ")
		for i, e := range elems {
			switch {
			case i == 0:
			case i%perLine == 0:
				b.WriteString(",\n\t\t\t     ")
			default:
				b.WriteString(", ")
			}
			b.WriteString(e)
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n\n")
}

// addrOrPrefix is a prefix as nft prints it: a /32 as the address alone.
func addrOrPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
