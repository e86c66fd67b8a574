package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Anti-spoofing for IPv6: first-come, first-served source address
// validation (RFC 6620) in the kernel, in the same bridge table.
//
// On a guest port of a guarded network (set guests6: not mode open, not
// mode bridge, whose uplink is the LAN and whose prefixes guestnet does not
// know) every port owns the IPv6 addresses it claims first: by duplicate
// address detection (a neighbour solicitation from :: whose target is the
// address) or, for an address nobody holds, by its first packet (so a
// rebuilt table or a restarted daemon cuts no established guest off). A
// claim must lie in one of the port's prefixes (set prefixes6: the
// network's ipv6 subnet and fe80::/10). Each packet refreshes its claim
// (sets claims6, port . address, and claimed6, address), which the kernel
// forgets ClaimMemory after the last one. An address another port holds is
// refused: its frames are dropped, except the DAD solicitation itself,
// which passes so that the owner defends the address and the newcomer's
// DAD fails (the guest then knows, instead of sending into a void).
//
// Plan fills guests6 and prefixes6 with the ports attach put in a
// first-come bridge. A port another tool adds to it (libvirt's vnetN, `ip
// link set tapX master BRIDGE`) is guarded while guestnet serve runs: the
// daemon puts every other port of a first-come bridge in its own sets
// guests6_learned and prefixes6_learned, within moments of the link event
// and at each sync, and removes it when it leaves the bridge. The rules
// look up both. Without the daemon, such a port gets no IPv6 check (the
// kernel guestnet targets has no meta ibrname to tell a port's bridge).
//
// A port bound by attach --ip with IPv6 addresses (set ports6) sends IPv6
// only from them (set bound6, port . MAC . address; set held6 keeps them
// from every other port) and from the link-local address it claims first.
// A binding that lists no IPv6 address leaves the port's IPv6 to the
// first-come rules: each family is restricted by the addresses listed of it.
//
// On those ports router advertisements and redirects (RA guard) and
// DHCPv6 server messages (UDP source port 547) are dropped, and so is a
// neighbour advertisement whose target the port does not hold.

// The IPv6 sets of the guard table.
const (
	GuardGuests6   = "guests6"   // guest ports of first-come networks (declared)
	GuardPrefixes6 = "prefixes6" // port . prefix a claim must lie in (declared)
	GuardPorts6    = "ports6"    // ports bound to IPv6 addresses by attach (declared)
	GuardMACPorts  = "mac_ports" // ports bound to a MAC by attach (declared)
	GuardBound6    = "bound6"    // port . MAC . IPv6 address, declared
	GuardHeld6     = "held6"     // the addresses of bound6: no other port claims them
	GuardClaims6   = "claims6"   // port . address, claimed first (the kernel's)
	GuardClaimed6  = "claimed6"  // the addresses of claims6
	GuardDropped6  = "dropped6"  // port . MAC . source of IPv6 frames dropped for their source
	GuardRouter6   = "router6"   // port . MAC . source . protocol of dropped RAs, redirects, DHCPv6 replies
	GuardNA6       = "na6"       // port . MAC . target of dropped neighbour advertisements
	// The daemon's: ports another tool put in a first-come bridge (libvirt's
	// vnetN, ip link set master), found by guestnet serve from the bridges'
	// ports, and their prefixes. Plan never touches them.
	GuardLearnedGuests6   = "guests6_learned"
	GuardLearnedPrefixes6 = "prefixes6_learned"
)

// DeclaredSets6 are the IPv6 sets plan owns, next to DeclaredSets.
var DeclaredSets6 = []string{GuardGuests6, GuardPrefixes6, GuardPorts6, GuardBound6, GuardHeld6, GuardMACPorts}

// A claim lives ClaimMemory after its last packet; set claims6 holds at
// most ClaimEntries (a full set makes no new claim, and an unclaimed
// address is then refused: the table fails closed for newcomers only).
const (
	ClaimMemory  = 5 * time.Minute
	ClaimEntries = 65536
)

// PortPrefix is an element of set prefixes6: an IPv6 prefix a guest port
// may claim addresses in. It is keyed by port, not by bridge: the kernel
// guestnet targets has no nft_meta_bridge (meta ibrname), so a port's
// network is told by its name.
type PortPrefix struct {
	Port   string       `json:"port"`
	Prefix netip.Prefix `json:"prefix"`
}

func (p PortPrefix) String() string { return fmt.Sprintf("%q . %s", p.Port, p.Prefix) }

// SortPortPrefixes sorts and removes duplicates.
func SortPortPrefixes(ps []PortPrefix) []PortPrefix {
	slices.SortFunc(ps, func(a, b PortPrefix) int {
		return cmp.Or(strings.Compare(a.Port, b.Port), a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	return slices.Compact(ps)
}

// FirstCome reports whether the network's guest ports get first-come
// claims of IPv6 addresses: a guarded network on a bridge of its own.
func (n Network) FirstCome() bool { return n.Guarded() && n.GuestBridge() }

// ClaimPrefixes are the prefixes a port of a first-come network may claim
// addresses in: its IPv6 subnet, if any, and link-local.
func (n Network) ClaimPrefixes(port string) []PortPrefix {
	if !n.FirstCome() {
		return nil
	}
	out := []PortPrefix{{port, LinkLocal}}
	if n.IPv6.IsValid() {
		out = append(out, PortPrefix{port, n.Subnet6()})
	}
	return SortPortPrefixes(out)
}

// Claim6 is an element of set claims6: an address a port claimed first.
type Claim6 struct {
	Port string     `json:"port"`
	IP   netip.Addr `json:"ip"`
	// Left is how long the claim lives without another packet.
	Left time.Duration `json:"left_ns,omitempty"`
}

// Drop6Kind says which rule dropped an IPv6 frame.
type Drop6Kind string

const (
	Drop6Source Drop6Kind = "source"       // its source address is not the port's (set dropped6)
	Drop6Router Drop6Kind = "router"       // a router advertisement or redirect (set router6)
	Drop6DHCP   Drop6Kind = "dhcp6-server" // a DHCPv6 server message (set router6)
	Drop6NA     Drop6Kind = "na"           // a neighbour advertisement for an address the port does not hold (set na6)
)

// Drop6 is what the guard remembers of IPv6 frames it dropped: by port,
// MAC and address (the source; the target of a neighbour advertisement).
// An entry lives DropMemory after the last drop.
type Drop6 struct {
	Kind    Drop6Kind     `json:"kind"`
	Port    string        `json:"port"`
	MAC     string        `json:"mac"`
	IP      netip.Addr    `json:"ip"`
	Packets uint64        `json:"packets"`
	Ago     time.Duration `json:"ago_ns"`
	// Why is filled in by Dropped6By: "address held by port vnet3", ...
	Why string `json:"why,omitempty"`
}

// Summary says what was dropped and why: "3 IPv6 frames from MAC m,
// address fd42::5 (last 2s ago): address held by port vnet3".
func (x Drop6) Summary() string {
	what := "IPv6 " + Frames(x.Packets)
	addr := "address " + x.IP.String()
	switch x.Kind {
	case Drop6Router:
		what = Frames(x.Packets) + " (router advertisement or redirect)"
	case Drop6DHCP:
		what = Frames(x.Packets) + " (DHCPv6 server message)"
	case Drop6NA:
		what = Frames(x.Packets) + " (neighbour advertisement)"
		addr = "target " + x.IP.String()
	}
	s := fmt.Sprintf("%s from MAC %s, %s (last %s ago)", what, x.MAC, addr, x.Ago.Round(time.Second))
	if x.Why != "" {
		s += ": " + x.Why
	}
	return s
}

// ClaimsOf are the addresses a port holds by claim, sorted.
func (g Guard) ClaimsOf(port string) []netip.Addr {
	var out []netip.Addr
	for _, c := range g.Claims6 {
		if c.Port == port {
			out = append(out, c.IP)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// HolderOf is the port that holds an IPv6 address, by attach (bound6) or
// by claim, other than port; "" for none.
func (g Guard) HolderOf(ip netip.Addr, port string) (holder, by string) {
	for _, b := range g.Bound {
		if b.IP == ip && b.Port != port {
			return b.Port, "attach"
		}
	}
	for _, c := range g.Claims6 {
		if c.IP == ip && c.Port != port {
			return c.Port, "claim"
		}
	}
	return "", ""
}

// Dropped6By are the recorded IPv6 drops of one port, latest first, each
// with the reason, told from the table as it is now.
func (g Guard) Dropped6By(port string) []Drop6 {
	var out []Drop6
	for _, x := range g.Dropped6 {
		if x.Port != port {
			continue
		}
		x.Why = g.why6(x)
		out = append(out, x)
	}
	return out
}

func (g Guard) why6(x Drop6) string {
	holder, by := g.HolderOf(x.IP, x.Port)
	switch x.Kind {
	case Drop6Router:
		return "router advertisement or redirect from a guest (RA guard)"
	case Drop6DHCP:
		return "DHCPv6 server message from a guest"
	case Drop6NA:
		if holder != "" {
			return "advertises an address held by port " + holder
		}
		return "advertises an address the port does not hold"
	}
	var macs []string
	for _, p := range g.PortMACs {
		if p.Port == x.Port {
			macs = append(macs, p.MAC)
		}
	}
	switch {
	case len(macs) > 0 && !slices.Contains(macs, x.MAC):
		return "the port is bound to MAC " + strings.Join(macs, ",") + " (attach --mac)"
	case x.IP.IsUnspecified():
		return "from :: but neither duplicate address detection nor an MLD report"
	case holder != "" && by == "attach":
		return "address bound to port " + holder + " (attach --ip)"
	case holder != "":
		return "address held by port " + holder + " (claimed first)"
	case slices.Contains(g.Ports6, x.Port) && !LinkLocal.Contains(x.IP):
		return "not among the port's bound IPv6 addresses (attach --ip)"
	}
	return "outside the network's IPv6 prefix and not link-local (or held by a port whose claim has since lapsed)"
}

// guard6 is the IPv6 part of the guard table's description (see the top
// of this file): its sets, its chains (check6 for every IPv6 frame of a
// first-come bridge or of a port bound to IPv6 addresses, own6 for those
// whose source the port holds), the prerouting rules that send frames to
// check6, and the record of a dropped frame's source in chain spoofed.
func guard6() (sets []GuardSet, chains []GuardChain, dispatch []GuardRule, record GuardRule) {
	src := FieldSrc(IPv6)
	lookup := func(set string, neg bool, key ...Field) Term {
		return Term{Op: OpLookup, Set: set, Neg: neg, Key: key}
	}
	update := func(set string, key ...Field) Term { return Term{Op: OpUpdate, Set: set, Key: key} }
	refresh := func(set string, key ...Field) Term { return Term{Op: OpUpdate, Set: set, Key: key, Bare: true} }
	icmp := func(name string) []Term {
		return []Term{{Op: OpL4, Proto: "ipv6-icmp"}, {Op: OpEq, Field: FieldICMP6Type, Value: []byte{ICMP6Types[name]}}}
	}
	linkLocal := func(f Field, neg bool) Term {
		return Term{Op: OpPrefix, Field: f, Value: LinkLocal.Addr().AsSlice(), Bits: LinkLocal.Bits(), Neg: neg}
	}
	fromAny := Term{Op: OpEq, Field: src, Value: IPv6.Unspecified().AsSlice()}
	// claim takes (or refreshes) the port's claim of the address in f.
	claim := func(f Field) []Term {
		return []Term{refresh(GuardClaims6, FieldIIF, f), refresh(GuardClaimed6, f)}
	}
	// unclaimed: nobody holds the address in f, by claim or by attach.
	unclaimed := func(f Field) []Term {
		return []Term{lookup(GuardClaimed6, true, f), lookup(GuardHeld6, true, f)}
	}
	cat := func(parts ...[]Term) []Term {
		var out []Term
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	drop := GuardVerdict{Kind: "drop"}
	counted := Term{Op: OpCounter}
	toSpoofed := GuardVerdict{"goto", "spoofed"}
	toOwn := GuardVerdict{"goto", "own6"}
	accept := GuardVerdict{Kind: "accept"}
	guest := func(match []Term) GuardRule {
		return GuardRule{cat(match, []Term{update(GuardRouter6, FieldIIF, FieldEtherSrc, src, FieldL4Proto), counted}), drop}
	}
	dad := cat([]Term{fromAny}, icmp("nd-neighbor-solicit"))
	bind := []string{"ifname", "ether_addr", IPv6.AddrType()}
	claimKey := []string{"ifname", IPv6.AddrType()}
	sets = []GuardSet{
		{Name: GuardGuests6, Key: []string{"ifname"}},
		{Name: GuardPrefixes6, Key: claimKey, Interval: true},
		{Name: GuardPorts6, Key: []string{"ifname"}},
		{Name: GuardMACPorts, Key: []string{"ifname"}},
		{Name: GuardBound6, Key: bind, Interval: true},
		{Name: GuardHeld6, Key: []string{IPv6.AddrType()}},
		{Name: GuardClaims6, Key: claimKey, Size: ClaimEntries, Timeout: ClaimMemory},
		{Name: GuardClaimed6, Key: []string{IPv6.AddrType()}, Size: ClaimEntries, Timeout: ClaimMemory},
		{Name: GuardDropped6, Key: bind, Size: DropEntries, Timeout: DropMemory},
		{Name: GuardRouter6, Key: append(bind, "inet_proto"), Size: DropEntries, Timeout: DropMemory},
		{Name: GuardNA6, Key: bind, Size: DropEntries, Timeout: DropMemory},
		{Name: GuardLearnedGuests6, Key: []string{"ifname"}},
		{Name: GuardLearnedPrefixes6, Key: claimKey, Interval: true},
	}
	na := icmp("nd-neighbor-advert")
	// The chains are ordered for the common case: a packet from an
	// address the port already holds costs one hash lookup and the claim's
	// refresh, then the few compares of chain own6.
	chains = []GuardChain{
		{Name: "own6", Rules: []GuardRule{
			// RA guard: no router advertisement, redirect or DHCPv6 server
			// message from a guest (whatever its source: one the port does
			// not hold never gets here, and is dropped for it).
			guest(icmp("nd-router-advert")),
			guest(icmp("nd-redirect")),
			guest([]Term{{Op: OpL4, Proto: "udp"}, {Op: OpEq, Field: FieldUDPSport, Value: port(547)}}),
			// A neighbour advertisement only for an address the port holds.
			{cat(na, []Term{lookup(GuardClaims6, false, FieldIIF, FieldNDTarget)}), accept},
			{cat(na, []Term{lookup(GuardBound6, false, FieldIIF, FieldEtherSrc, FieldNDTarget)}), accept},
			{cat(na, []Term{update(GuardNA6, FieldIIF, FieldEtherSrc, FieldNDTarget), counted}), drop},
			{nil, accept},
		}},
		{Name: "check6", Rules: []GuardRule{
			// A port bound to a MAC by attach sends IPv6 from that MAC only,
			// as it does IPv4: no other MAC gets into the bridge's
			// forwarding database from it.
			{[]Term{lookup(GuardMACPorts, false, FieldIIF), lookup(GuardPortMACs, true, FieldIIF, FieldEtherSrc)}, toSpoofed},
			// The source: the port's claim, or bound to it by attach.
			{cat([]Term{lookup(GuardClaims6, false, FieldIIF, src)}, claim(src)), toOwn},
			{[]Term{lookup(GuardBound6, false, FieldIIF, FieldEtherSrc, src)}, toOwn},
			// Duplicate address detection claims its target when nobody
			// holds it, inside the port's prefixes (a port bound to IPv6
			// addresses claims link-local ones only); it passes anyway, so
			// that a holder defends its address.
			{cat(dad, []Term{lookup(GuardPorts6, true, FieldIIF), lookup(GuardPrefixes6, false, FieldIIF, FieldNDTarget)}, unclaimed(FieldNDTarget), claim(FieldNDTarget)), accept},
			{cat(dad, []Term{lookup(GuardLearnedPrefixes6, false, FieldIIF, FieldNDTarget)}, unclaimed(FieldNDTarget), claim(FieldNDTarget)), accept},
			{cat(dad, []Term{linkLocal(FieldNDTarget, false)}, unclaimed(FieldNDTarget), claim(FieldNDTarget)), accept},
			{dad, accept},
			{cat([]Term{fromAny}, icmp("mld-listener-report")), accept},
			{cat([]Term{fromAny}, icmp("mld2-listener-report")), accept},
			{[]Term{fromAny}, toSpoofed},
			// A new source: refused when the port is bound to other IPv6
			// addresses (but for link-local ones) or another port holds it,
			// else claimed when it lies in the port's prefixes.
			{[]Term{lookup(GuardPorts6, false, FieldIIF), linkLocal(src, true)}, toSpoofed},
			{[]Term{lookup(GuardClaimed6, false, src)}, toSpoofed},
			{[]Term{lookup(GuardHeld6, false, src)}, toSpoofed},
			{cat([]Term{lookup(GuardPrefixes6, false, FieldIIF, src)}, claim(src)), toOwn},
			{cat([]Term{lookup(GuardLearnedPrefixes6, false, FieldIIF, src)}, claim(src)), toOwn},
			{cat([]Term{lookup(GuardPorts6, false, FieldIIF)}, claim(src)), toOwn}, // link-local, outside a first-come bridge
			{nil, toSpoofed},
		}},
	}
	// meta protocol, not ether type: an IPv6 frame in a VLAN tag (which a
	// neighbour's kernel may strip and read) is judged too.
	ip6 := Term{Op: OpProtocol, Proto: string(IPv6)}
	// Every rule of the IPv6 chains checks the protocol first, although
	// only IPv6 gets there: nft prints IPv6 fields by name only behind
	// that dependency, and `nft list` must read as guestnet renders it.
	for i := range chains {
		for j, r := range chains[i].Rules {
			if len(r.Terms) > 0 {
				chains[i].Rules[j].Terms = append([]Term{ip6}, r.Terms...)
			}
		}
	}
	dispatch = []GuardRule{
		{[]Term{ip6, lookup(GuardGuests6, false, FieldIIF)}, GuardVerdict{"goto", "check6"}},
		{[]Term{ip6, lookup(GuardPorts6, false, FieldIIF)}, GuardVerdict{"goto", "check6"}},
		{[]Term{ip6, lookup(GuardLearnedGuests6, false, FieldIIF)}, GuardVerdict{"goto", "check6"}},
	}
	record = GuardRule{Terms: []Term{{Op: OpEtherType, Proto: string(IPv6)}, update(GuardDropped6, FieldIIF, FieldEtherSrc, src)}}
	return sets, chains, dispatch, record
}
