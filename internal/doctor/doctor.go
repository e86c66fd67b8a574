// Package doctor explains why guests cannot get through: an explicit list
// of small checks, each reading the observed host (and the declared
// networks, when there are any) and returning findings with the evidence it
// read and the fix. It works on hosts guestnet never touched: bridges with
// an address (IPv4, or IPv6 other than link-local) are taken as guest
// networks. Checks that have an IPv6 form run for both families, each with
// its own switches (ip_forward and conf.all.forwarding, iptables and
// ip6tables, bridge-nf-call-iptables and -ip6tables). It is pure.
package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/match"
	"github.com/guestnet/guestnet/internal/model"
)

// Severity ranks a finding.
type Severity string

const (
	Error   Severity = "error"   // guest traffic is (or will be) dropped
	Warning Severity = "warning" // likely a problem, depending on what the guests need
	Info    Severity = "info"    // worth knowing, nothing the guests need is broken
)

// Problems counts the findings that are problems (errors and warnings),
// not Info: what `guestnet doctor`'s exit status should follow, so that a
// guest's expected chatter does not fail a healthy host.
func Problems(fs []Finding) int {
	n := 0
	for _, f := range fs {
		if f.Severity != Info {
			n++
		}
	}
	return n
}

// Finding is one problem, with what was read and how to fix it.
type Finding struct {
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	Network  string   `json:"network,omitempty"`
	What     string   `json:"what"`
	Evidence []string `json:"evidence"`
	Fix      string   `json:"fix"`
}

// Input is what the checks read.
type Input struct {
	Host model.Host
	Diag model.Diag
	// Networks are the declared networks, or those Discover found.
	Networks []model.Network
	// Declared is true when Networks come from a spec or guestnet's state:
	// their modes are known.
	Declared bool
	// BGP is the speaker's status when guestnet serve runs one (its config
	// has a bgp section); nil otherwise.
	BGP *bgp.Status
	// Underlay is the kernel's route to each remote VTEP and BGP peer of
	// the stretched networks (Targets lists them; the caller asks the
	// kernel). Empty without stretched networks.
	Underlay []Underlay
	// Cluster is the lease cluster as the daemon sees it (GET
	// /v1/leases/cluster) when a stretched network serves DHCP; nil when
	// doctor could not ask, and ClusterErr says why.
	Cluster    *model.ClusterLeases
	ClusterErr string
}

// Check is one diagnosis.
type Check struct {
	Name string
	Run  func(in Input) []Finding
}

// Checks is every check, in the order findings are reported.
var Checks = []Check{
	{"ip-forward", checkForwarding},
	{"accept-ra", checkAcceptRA},
	{"forward-drop", checkForwardDrop},
	{"masquerade-oif", checkMasqueradeOIF},
	{"return-route", checkReturnRoute},
	{"routed-from", checkRoutedFrom},
	{"subnet-overlap", checkOverlap},
	{"rp-filter", checkRPFilter},
	{"bridge", checkBridges},
	{"conntrack", checkConntrack},
	{"dhcp", checkDHCP},
	{"ipv6-ra", checkRA},
	{"spoofed", checkSpoofed},
	{"ipv6-guard-ports", checkPorts6},
	{"not-ipv4", checkNotIPv4},
	{"bgp-session", checkBGPSessions},
	{"bgp-learned", checkBGPLearned},
	{"bgp-forwarding", checkBGPForwarding},
	{"vxlan-device", checkVXLANDevice},
	{"vxlan-mtu", checkVXLANMTU},
	{"vtep-unreachable", checkVTEPs},
	{"etcd-quorum", checkEtcdQuorum},
}

// Run runs the checks and returns their findings.
func Run(in Input) []Finding {
	var out []Finding
	for _, c := range Checks {
		for _, f := range c.Run(in) {
			f.Check = c.Name
			out = append(out, f)
		}
	}
	return out
}

// Discover takes every bridge with an address as a guest network (mode
// unknown), for hosts configured by hand: its first IPv4 address and its
// first IPv6 address that is not link-local (every bridge has one of
// those).
func Discover(h model.Host) []model.Network {
	var out []model.Network
	for _, l := range h.Links {
		if l.Kind != "bridge" {
			continue
		}
		n := model.Network{Name: cmp.Or(l.Owner(), l.Name), Bridge: l.Name}
		for _, a := range l.Addrs {
			switch {
			case a.Addr().IsLinkLocalUnicast():
			case a.Addr().Is4() && !n.IPv4.IsValid():
				n.IPv4 = a
			case a.Addr().Is6() && !n.IPv6.IsValid():
				n.IPv6 = a
			}
		}
		if n.IPv4.IsValid() || n.IPv6.IsValid() {
			out = append(out, n)
		}
	}
	return out
}

// families are the address families, in the order findings are reported.
var families = []model.Family{model.IPv4, model.IPv6}

// forwards reports whether a network's guests of family f should reach
// beyond the host: a declared network of a forwarding mode with an
// address of that family, or a hand-made bridge with one.
func (in Input) forwards(n model.Network, f model.Family) bool {
	if in.Declared && !n.NeedsForwarding() {
		return false
	}
	return n.Addr(f).IsValid()
}

// subnet is the network's subnet of family f (zero without).
func subnet(n model.Network, f model.Family) netip.Prefix {
	if f == model.IPv6 {
		return n.Subnet6()
	}
	return n.Subnet()
}

// famName names a family as a person reads it.
func famName(f model.Family) string {
	if f == model.IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

func checkForwarding(in Input) []Finding {
	var out []Finding
	for _, f := range families {
		on, key := in.Host.IPForward, "net.ipv4.ip_forward"
		fix := "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/), or guestnet apply for a declared network"
		if f == model.IPv6 {
			on, key = in.Host.IP6Forward, "net.ipv6.conf.all.forwarding"
			fix = "sysctl -w net.ipv6.conf.all.forwarding=1 (and persist it in /etc/sysctl.d/), after setting accept_ra=2 on every uplink that takes " +
				"its default route by router advertisement (forwarding makes the kernel ignore their RAs); guestnet apply does both for a declared network"
		}
		if on {
			continue
		}
		for _, n := range in.Networks {
			if !in.forwards(n, f) {
				continue
			}
			sev := Error
			if !in.Declared {
				sev = Warning // a hand-made bridge may be meant to be host-only
			}
			out = append(out, Finding{Severity: sev, Network: n.Name,
				What:     fmt.Sprintf("%s forwarding is off: guests of %s (%s) reach the host but nothing beyond it", famName(f), n.Name, subnet(n, f)),
				Evidence: []string{key + " = 0"},
				Fix:      fix})
		}
	}
	return out
}

// checkForwardDrop: a foreign forward chain that drops by policy (Docker's
// iptables FORWARD, and since Docker 27 with ip6tables on its ip6tables
// FORWARD too, moby/moby#48365) and lets a network's traffic through by no
// rule. Each family meets the chains that see it; bridged frames cross them
// too when br_netfilter sends that family through the IP hooks (for IPv6,
// only on networks with ipv6: bridged IPv6 elsewhere is the guests'
// link-local chatter).
func checkForwardDrop(in Input) []Finding {
	var out []Finding
	for _, f := range families {
		bridged, brnf := in.Host.BridgeNFCallIPTables, "net.bridge.bridge-nf-call-iptables"
		if f == model.IPv6 {
			bridged, brnf = in.Host.BridgeNFCallIP6Tables, "net.bridge.bridge-nf-call-ip6tables"
		}
		for _, n := range in.Networks {
			// A family the network has no address of is not its guests'
			// (an isolated network without any address is IPv4's, as ever).
			if !n.Addr(f).IsValid() && (f == model.IPv6 || n.IPv6.IsValid()) {
				continue
			}
			if !in.forwards(n, f) && !bridged {
				continue
			}
			onlyBridged := bridged && !in.forwards(n, f)
			for _, fc := range in.Host.Foreign.ForwardDrop {
				if !fc.Sees(f) {
					continue
				}
				lets, unknown := in.dockerUserLets(n, onlyBridged, f)
				if fc.Lets(n.Bridge, onlyBridged) || lets {
					continue
				}
				ev := append([]string{fc.Name + ": policy drop, no rule accepting " + n.Bridge}, unknown...)
				what := fmt.Sprintf("%s drops the forwarded traffic of %s", fc.Name, n.Bridge)
				fix := fmt.Sprintf("iptables -I FORWARD -i %s -j ACCEPT && iptables -I FORWARD -o %s -j ACCEPT (Docker: in DOCKER-USER, which guestnet apply does for its networks)", n.Bridge, n.Bridge)
				if f == model.IPv6 {
					what = fmt.Sprintf("%s drops the forwarded IPv6 traffic of %s", fc.Name, n.Bridge)
					fix = fmt.Sprintf("ip6tables -I FORWARD -i %s -j ACCEPT && ip6tables -I FORWARD -o %s -j ACCEPT (Docker sets this policy when ip6tables is on, moby/moby#48365: "+
						"put them in ip6tables' DOCKER-USER, which guestnet apply does for its networks)", n.Bridge, n.Bridge)
					if fc.Family() == model.IPv6 {
						ev = append(ev, "IPv4 is not affected: the chain is ip6tables'")
					}
				}
				if bridged {
					ev = append(ev, brnf+" = 1: bridged frames cross it too")
					what += ", bridged frames included"
					if onlyBridged {
						what += fmt.Sprintf(" (guests on %s cannot reach each other by %s)", n.Bridge, famName(f))
					}
				}
				out = append(out, Finding{Severity: Error, Network: n.Name, What: what, Evidence: ev, Fix: fix})
			}
		}
	}
	return out
}

// dockerUserLets reports whether guestnet's DOCKER-USER rules for family
// f accept the network's traffic, as package match reads them: a packet
// from its bridge out of the default route and one back (or, for
// bridged-only traffic, one within the bridge). unknown lists the rules
// match cannot simulate. IPv4 asks iptables' DOCKER-USER, IPv6
// ip6tables'.
func (in Input) dockerUserLets(n model.Network, onlyBridged bool, f model.Family) (lets bool, unknown []string) {
	rules, table := in.Host.Ruleset.DockerUser, "table ip filter chain DOCKER-USER: "
	if f == model.IPv6 {
		rules, table = in.Host.Ruleset.DockerUser6, "table ip6 filter chain DOCKER-USER: "
	}
	up := cmp.Or(defaultDev(in.Host, f), "uplink")
	guest, far := subnet(n, f).Addr().Next(), f.Unspecified()
	pkts := []match.Packet{{Src: guest, Dst: far, IIF: n.Bridge, OIF: up}, {Src: far, Dst: guest, IIF: up, OIF: n.Bridge}}
	if onlyBridged {
		pkts = []match.Packet{{Src: guest, Dst: guest.Next(), IIF: n.Bridge, OIF: n.Bridge}}
	}
	for _, p := range pkts {
		p.Proto = "tcp"
		accepted := false
		for _, r := range rules {
			ok, err := match.Rule(r, p)
			if err != nil {
				unknown = append(unknown, table+err.Error())
				continue
			}
			if ok {
				accepted = r.Verdict == model.Accept
				break
			}
		}
		if !accepted {
			return false, unknown
		}
	}
	return true, nil
}

// defaultDev is the interface of the default route of family f.
func defaultDev(h model.Host, f model.Family) string {
	for _, r := range h.Routes {
		if r.Dst.Bits() == 0 && model.FamilyOf(r.Dst.Addr()) == f {
			return r.Dev
		}
	}
	return ""
}

func checkMasqueradeOIF(in Input) []Finding {
	var out []Finding
	seen := map[netip.Prefix]string{}
	for _, fr := range in.Diag.ForeignNAT {
		def := defaultDev(in.Host, ruleFamily(fr))
		var src netip.Prefix
		for _, m := range fr.Rule.Match {
			if m.Kind == model.MatchSAddr && !m.Neg {
				src = m.Prefix
			}
			if m.Kind == model.MatchOIF && !m.Neg && def != "" && m.Name != def && !strings.HasSuffix(m.Name, "+") {
				out = append(out, Finding{Severity: Error,
					What:     fmt.Sprintf("masquerade is bound to %s, but the default route leaves by %s: traffic leaving by %s goes out un-NATed and its replies never come back", m.Name, def, def),
					Evidence: []string{fr.Chain + ": " + ruleText(fr.Rule), "default route dev " + def},
					Fix:      fmt.Sprintf("masquerade by source and not by interface (iptables -t nat -A POSTROUTING -s %s ! -d %s -j MASQUERADE), or let guestnet's nat mode do it", src, src)})
			}
		}
		if src.IsValid() {
			if prev, dup := seen[src]; dup {
				out = append(out, Finding{Severity: Warning,
					What:     fmt.Sprintf("%s is masqueraded by more than one rule", src),
					Evidence: []string{prev, fr.Chain + ": " + ruleText(fr.Rule)},
					Fix:      "keep one masquerade rule per guest subnet"})
			}
			seen[src] = fr.Chain + ": " + ruleText(fr.Rule)
		}
	}
	return out
}

// ruleFamily is the family a foreign masquerade rule NATs: its source
// prefix's, else its table's (ip6: IPv6), else IPv4.
func ruleFamily(fr model.ForeignRule) model.Family {
	for _, m := range fr.Rule.Match {
		if m.Kind == model.MatchSAddr && m.Prefix.IsValid() {
			return model.FamilyOf(m.Prefix.Addr())
		}
	}
	if !fr.Sees(model.IPv4) {
		return model.IPv6
	}
	return model.IPv4
}

func ruleText(r model.Rule) string {
	s := r.String()
	if i := strings.LastIndex(s, " comment "); i >= 0 {
		s = s[:i]
	}
	return s
}

// masqueraded reports whether some masquerade rule (guestnet's or
// another's) NATs the subnet's traffic to the outside, by asking package
// match about a packet from the subnet's first and from its last host
// address (rules match address prefixes, so both matching means the whole
// subnet does), forwarded from its bridge out of some uplink (a rule bound
// to an uplink the default route left is checkMasqueradeOIF's finding).
// unknown lists the rules match cannot simulate.
func (in Input) masqueraded(n model.Network) (ok bool, unknown []string) {
	sub := n.Subnet()
	var uplinks []string
	for _, l := range in.Host.Links {
		if l.Kind != "bridge" && l.Name != "lo" && l.Master == "" && hasAddr(l, model.IPv4) {
			uplinks = append(uplinks, l.Name)
		}
	}
	dst := netip.IPv4Unspecified()
	for _, r := range in.Host.Routes {
		if r.Dst.Bits() == 0 && r.Gw.Is4() {
			dst = r.Gw // an address beyond the host, outside every guest subnet
		}
	}
	for _, out := range uplinks {
		both := true
		for _, src := range []netip.Addr{sub.Addr().Next(), model.Broadcast(sub).Prev()} {
			hit, unk := in.masquerades(match.Packet{Src: src, Dst: dst, IIF: n.Bridge, OIF: out, Proto: "tcp", Port: 443})
			unknown = append(unknown, unk...)
			both = both && hit
		}
		if both {
			return true, nil
		}
	}
	slices.Sort(unknown)
	return false, slices.Compact(unknown)
}

// masquerades reports whether some masquerade rule reached by p in
// postrouting matches it: guestnet's (through the chain nat_from sends its
// source to) or another's. unknown lists what match cannot simulate.
func (in Input) masquerades(p match.Packet) (hit bool, unknown []string) {
	type placed struct {
		where string
		r     model.Rule
	}
	var all []placed
	steps, err := match.Walk(in.Host.Ruleset, "postrouting", p)
	if err != nil {
		unknown = append(unknown, "table inet guestnet chain postrouting: "+err.Error())
	}
	for _, st := range steps {
		all = append(all, placed{"table inet guestnet chain " + st.Chain, st.Rule})
	}
	for _, fr := range in.Diag.ForeignNAT {
		if fr.Sees(model.FamilyOf(p.Src)) {
			all = append(all, placed{fr.Chain, fr.Rule})
		}
	}
	for _, pr := range all {
		if pr.r.Verdict != model.Masquerade {
			continue
		}
		ok, err := match.Rule(pr.r, p)
		if err != nil {
			unknown = append(unknown, pr.where+": "+err.Error())
		}
		if ok {
			return true, unknown
		}
	}
	return false, unknown
}

func checkReturnRoute(in Input) []Finding {
	var out []Finding
	for _, n := range in.Networks {
		// A declared routed or open network is routed on purpose (guestnet
		// routes prints the peers' command); only a hand-made one is suspect.
		// IPv6 is routed by design: a prefix without NAT66 is no finding.
		if in.Declared || !in.forwards(n, model.IPv4) {
			continue
		}
		masq, unknown := in.masqueraded(n)
		if masq {
			continue
		}
		out = append(out, Finding{Severity: Warning, Network: n.Name,
			What:     fmt.Sprintf("%s is routed without NAT: other hosts reach its guests only with a return route", n.Subnet()),
			Evidence: append([]string{"no masquerade rule covers " + n.Subnet().String()}, unknown...),
			Fix:      fmt.Sprintf("on each peer: guestnet routes %s prints the command (ip route add %s via THIS-HOST)", n.Name, n.Subnet())})
	}
	return out
}

func checkOverlap(in Input) []Finding {
	var out []Finding
	for _, f := range families {
		for i, a := range in.Networks {
			sa := subnet(a, f)
			if !sa.IsValid() {
				continue
			}
			for _, b := range in.Networks[:i] {
				if sb := subnet(b, f); sb.IsValid() && sa.Overlaps(sb) {
					out = append(out, Finding{Severity: Error, Network: a.Name,
						What:     fmt.Sprintf("%s of %s overlaps %s of %s", sa, a.Name, sb, b.Name),
						Evidence: []string{a.Bridge + " " + a.Addr(f).String(), b.Bridge + " " + b.Addr(f).String()},
						Fix:      "give each network its own subnet"})
				}
			}
			for _, r := range in.Host.Routes {
				// Link-local and multicast routes are on every interface
				// and never a guest prefix's.
				if r.Dst.Bits() == 0 || r.Dst.Addr().IsLinkLocalUnicast() || r.Dst.Addr().IsMulticast() || r.Dev == a.Bridge || !r.Dst.Overlaps(sa) ||
					slices.ContainsFunc(in.Networks, func(n model.Network) bool { return n.Bridge == r.Dev }) {
					continue
				}
				out = append(out, Finding{Severity: Error, Network: a.Name,
					What:     fmt.Sprintf("%s of %s overlaps the host's route %s dev %s: some guest or host traffic takes the wrong path", sa, a.Name, r.Dst, r.Dev),
					Evidence: []string{"route " + r.Dst.String() + " dev " + r.Dev},
					Fix:      "move the guest network to a subnet no route of the host covers"})
			}
		}
	}
	return out
}

// checkRPFilter has no IPv6 form: IPv6 has no rp_filter sysctl (its
// reverse-path filter is a firewall rule, rpfilter/fib, someone's own).
func checkRPFilter(in Input) []Finding {
	uplinks := 0
	for _, l := range in.Host.Links {
		if l.Kind != "bridge" && l.Name != "lo" && l.Master == "" && hasAddr(l, model.IPv4) {
			uplinks++
		}
	}
	if uplinks < 2 {
		return nil // one way in and out: strict reverse-path filtering cannot bite
	}
	var out []Finding
	for name, v := range in.Diag.RPFilter {
		eff := max(v, in.Diag.RPFilter["all"])
		if eff != 1 || name == "all" {
			continue
		}
		out = append(out, Finding{Severity: Warning,
			What:     fmt.Sprintf("strict reverse-path filtering on %s while the host has %d uplinks: replies that come back by another uplink are dropped", name, uplinks),
			Evidence: []string{fmt.Sprintf("net.ipv4.conf.%s.rp_filter = %d, net.ipv4.conf.all.rp_filter = %d", name, v, in.Diag.RPFilter["all"])},
			Fix:      fmt.Sprintf("sysctl -w net.ipv4.conf.%s.rp_filter=2 (loose) and net.ipv4.conf.all.rp_filter=2", name)})
	}
	slices.SortFunc(out, func(a, b Finding) int { return strings.Compare(a.What, b.What) })
	return out
}

func checkBridges(in Input) []Finding {
	var out []Finding
	for _, n := range in.Networks {
		br, ok := in.Host.Link(n.Bridge)
		if !ok {
			out = append(out, Finding{Severity: Error, Network: n.Name, What: "bridge " + n.Bridge + " does not exist",
				Evidence: []string{"no link " + n.Bridge}, Fix: "guestnet apply"})
			continue
		}
		if in.Declared {
			out = append(out, gatewayMissing(n, br)...)
		}
		if !br.Up {
			out = append(out, Finding{Severity: Error, Network: n.Name, What: "bridge " + n.Bridge + " is down",
				Evidence: []string{n.Bridge + ": admin down"}, Fix: "ip link set " + n.Bridge + " up"})
		}
		var mtus []string
		upPorts := 0
		for _, p := range in.Host.Links {
			if p.Master != n.Bridge {
				continue
			}
			if p.Up {
				upPorts++
			}
			if p.MTU != br.MTU {
				mtus = append(mtus, fmt.Sprintf("%s mtu %d", p.Name, p.MTU))
			}
		}
		if br.Up && upPorts > 0 && !br.Carrier {
			out = append(out, Finding{Severity: Warning, Network: n.Name, What: "bridge " + n.Bridge + " has no carrier although ports are up",
				Evidence: []string{n.Bridge + ": NO-CARRIER"}, Fix: "check the ports' state (ip -d link show master " + n.Bridge + ")"})
		}
		if len(mtus) > 0 {
			out = append(out, Finding{Severity: Warning, Network: n.Name,
				What:     fmt.Sprintf("ports of %s (mtu %d) differ in MTU: large packets are dropped silently", n.Bridge, br.MTU),
				Evidence: mtus, Fix: fmt.Sprintf("ip link set PORT mtu %d (guestnet attach sets it)", br.MTU)})
		}
	}
	for _, l := range in.Host.Links {
		if kind := guestPort(l); kind != "" {
			out = append(out, Finding{Severity: Warning, What: kind + " " + l.Name + " is up but in no bridge: its guest is cut off",
				Evidence: []string{fmt.Sprintf("%s: %s, up, no master, no address", l.Name, l.Kind)}, Fix: "guestnet attach NETWORK " + l.Name})
		}
	}
	return out
}

// hasAddr reports whether a link has an address of family f that is not
// link-local (every IPv6 link has one of those: it says nothing of what
// the link is for).
func hasAddr(l model.Link, f model.Family) bool {
	return slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool {
		return model.FamilyOf(p.Addr()) == f && !p.Addr().IsLinkLocalUnicast()
	})
}

// guestPort names the kind of a link that looks like a guest's port left
// out of every bridge ("" when it does not): a TAP (a VM's), or a veth end
// (a container's or a namespace guest's) that is up with no master and no
// address of its own. A veth with an address is a routed link, not a
// port.
func guestPort(l model.Link) string {
	if l.Master != "" || !l.Up {
		return ""
	}
	switch l.Kind {
	case "tuntap":
		return "TAP"
	case "veth":
		for _, a := range l.Addrs {
			if !a.Addr().IsLinkLocalUnicast() {
				return ""
			}
		}
		return "veth"
	}
	return ""
}

func checkConntrack(in Input) []Finding {
	if in.Diag.CtMax == 0 || in.Diag.Conntrack*10 < in.Diag.CtMax*9 {
		return nil
	}
	return []Finding{{Severity: Warning,
		What:     "the conntrack table is nearly full: new connections (and NAT) fail once it is",
		Evidence: []string{fmt.Sprintf("nf_conntrack_count = %d of nf_conntrack_max = %d", in.Diag.Conntrack, in.Diag.CtMax)},
		Fix:      fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_max=%d", in.Diag.CtMax*2)}}
}

// checkDHCP: a network declares DHCP but guestnet serve is not running, or
// something else holds port 67 and would answer (or keep guestnet from it).
func checkDHCP(in Input) []Finding {
	var out []Finding
	for _, n := range in.Networks {
		if n.DHCP == nil {
			continue
		}
		switch {
		case !in.Diag.Daemon && in.Diag.DHCPSockets > 0:
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What:     "guestnet serve is not running, and another program holds UDP port 67: guests get their leases from it, or none",
				Evidence: []string{fmt.Sprintf("%d UDP socket(s) on port 67", in.Diag.DHCPSockets), "no daemon answers on the API socket"},
				Fix:      "stop the other DHCP server (ss -lunp 'sport = :67' names it), then systemctl start guestnet-serve"})
		case !in.Diag.Daemon:
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What:     "the network declares dhcp, but guestnet serve is not running: guests get no address",
				Evidence: []string{"no daemon answers on the API socket", "no UDP socket on port 67"},
				Fix:      "systemctl start guestnet-serve (or guestnet serve --config ...)"})
		}
		for _, fc := range in.Diag.InputDrop {
			if !fc.Sees(model.IPv4) || slices.Contains(fc.AcceptIIF, n.Bridge) {
				continue
			}
			out = append(out, Finding{Severity: Warning, Network: n.Name,
				What:     fmt.Sprintf("%s drops by policy what reaches the host, DHCP requests on %s included, unless one of its rules lets them in", fc.Name, n.Bridge),
				Evidence: []string{fc.Name + ": policy drop, no rule accepting iifname " + n.Bridge},
				Fix:      fmt.Sprintf("iptables -I INPUT -i %s -p udp --dport 67 -j ACCEPT (and 53 for DNS)", n.Bridge)})
		}
	}
	return out
}

// checkSpoofed reports guest ports whose frames anti-spoofing dropped
// lately. Most often the guest is not attacking anyone: its address or MAC
// was changed by hand, or it kept an address from before its port was bound.
func checkSpoofed(in Input) []Finding {
	g := in.Host.Guard
	var ports []string
	for _, x := range g.Spoofed {
		ports = append(ports, x.Port)
	}
	for _, port := range otherPorts(g) {
		if slices.ContainsFunc(g.OtherBy(port), func(x model.OtherDrop) bool { return len(x.MACBoundTo) > 0 }) {
			ports = append(ports, port) // sent from a MAC bound to another port
		}
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var out []Finding
	for _, port := range ports {
		network := in.networkOf(port)
		pb := g.Port(port)
		var ev []string
		var total uint64
		for _, x := range g.SpoofedBy(port) {
			ev = append(ev, "set dropped: "+x.Summary())
			total += x.Packets
		}
		for _, x := range g.OtherBy(port) {
			if len(x.MACBoundTo) > 0 {
				ev = append(ev, "set dropped_other: "+x.Summary())
				total += x.Packets
			}
		}
		if pb.Bound() {
			ev = append(ev, fmt.Sprintf("%s may send from %s", port, pb.Sources()))
		} else {
			ev = append(ev, port+" is no longer bound")
		}
		fix := "if the guest's address or MAC changed on purpose, bind the port to them: guestnet attach " + cmp.Or(network, "NETWORK") + " " + port + " --ip ADDR [--mac MAC]"
		if slices.Contains(pb.By, "lease") {
			fix += "; a guest on DHCP gets its lease's address bound: let it renew (dhclient/udhcpc)"
		}
		out = append(out, Finding{Severity: Warning, Network: network,
			What:     fmt.Sprintf("guest port %s sent %s from sources it is not bound to: anti-spoofing dropped them (a guest whose address or MAC changed cannot get out)", port, model.Frames(total)),
			Evidence: ev,
			Fix:      fix + "; if it did not, the guest is spoofing"})
	}
	return out
}

// networkOf names the network whose bridge holds port, or "".
func (in Input) networkOf(port string) string {
	for _, n := range in.Networks {
		if slices.ContainsFunc(in.Host.Links, func(l model.Link) bool { return l.Name == port && l.Master == n.Bridge }) {
			return n.Name
		}
	}
	return ""
}

// checkNotIPv4 explains the frames of guest ports that anti-spoofing
// dropped lately for being neither IPv4 nor ARP (set dropped_other), one
// finding per port and ether type. A bound port of a network without ipv6
// may send only those two. IPv6 is what every booted guest sends (router
// solicitations, duplicate address detection, MLD reports) and needs
// nothing on an IPv4-only network: Info, not an attack. A VLAN tag is a
// Warning: whatever the guest sends tagged, its IPv4 included, never
// arrives. Frames from a MAC bound to another port are the spoofed
// check's.
func checkNotIPv4(in Input) []Finding {
	g := in.Host.Guard
	var out []Finding
	for _, port := range otherPorts(g) {
		network := in.networkOf(port)
		anti := "anti_spoofing: false on network " + cmp.Or(network, "NETWORK")
		bound := port + " is no longer bound"
		if pb := g.Port(port); pb.Bound() {
			bound = fmt.Sprintf("%s may send from %s", port, pb.Sources())
		}
		byType := map[string][]model.OtherDrop{}
		var types []string
		for _, x := range g.OtherBy(port) {
			if len(x.MACBoundTo) > 0 {
				continue
			}
			if byType[x.EtherType] == nil {
				types = append(types, x.EtherType)
			}
			byType[x.EtherType] = append(byType[x.EtherType], x)
		}
		slices.Sort(types)
		for _, et := range types {
			xs := byType[et]
			var ev []string
			var total uint64
			for _, x := range xs {
				ev = append(ev, "set dropped_other: "+x.Summary())
				total += x.Packets
			}
			ev = append(ev, bound)
			what := model.OtherDrop{EtherType: et, Packets: total}.Frames()
			f := Finding{Network: network, Evidence: ev}
			switch xs[0].Kind() {
			case "IPv6":
				f.Severity = Info
				f.What = fmt.Sprintf("guest port %s sent %s: anti-spoofing drops them, since %s has no ipv6 and a bound port of it may send only IPv4 and ARP. "+
					"This is the chatter of any guest's IPv6 stack (router solicitations, duplicate address detection, MLD reports), not an attack, and its IPv4 is not affected",
					port, what, cmp.Or(network, "its network"))
				f.Fix = "nothing is needed for IPv4; to quiet it, disable IPv6 in the guest (sysctl -w net.ipv6.conf.all.disable_ipv6=1, or ipv6.disable=1 on its kernel command line); " +
					"if the guests need IPv6, give network " + cmp.Or(network, "NETWORK") + " an ipv6: prefix (its guests then get addresses, and anti-spoofing binds them), or set " + anti + " (its guests may then spoof)"
			case "VLAN-tagged":
				f.Severity = Warning
				f.What = fmt.Sprintf("guest port %s sent %s: anti-spoofing drops every tagged frame from a bound port, whatever it carries, so what the guest sends on a VLAN (IPv4 included) never arrives", port, what)
				f.Fix = "put the guest's addresses on its untagged interface (not a VLAN subinterface such as eth0.10); if the guests must tag their frames, set " + anti + " (its guests may then spoof)"
			default:
				f.Severity = Info
				f.What = fmt.Sprintf("guest port %s sent %s, neither IP nor ARP: anti-spoofing drops them, since a bound port may send only IPv4, IPv6 (on a network with ipv6) and ARP", port, what)
				f.Fix = "nothing is needed for IPv4; if the guests need that protocol across the bridge, set " + anti + " (its guests may then spoof)"
			}
			out = append(out, f)
		}
	}
	return out
}

// otherPorts are the ports set dropped_other has records of, sorted.
func otherPorts(g model.Guard) []string {
	var out []string
	for _, x := range g.DroppedOther {
		out = append(out, x.Port)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
