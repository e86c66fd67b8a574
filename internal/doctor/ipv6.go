package doctor

import (
	"fmt"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// checkAcceptRA: an uplink takes its default route from router
// advertisements with accept_ra = 1 while IPv6 forwarding is on. A
// forwarding interface ignores RAs unless accept_ra is 2, so the route is
// never refreshed and expires with its lifetime: the host, and every guest
// behind it, lose IPv6 beyond the link. libvirt refuses to start in this
// state; guestnet apply raises accept_ra to 2 before it turns forwarding
// on, so this is a host set up by hand (or forwarding turned on by hand).
func checkAcceptRA(in Input) []Finding {
	if !in.Host.IP6Forward {
		return nil
	}
	var out []Finding
	for _, u := range in.Host.RAUplinks {
		if u.AcceptRA != 1 {
			continue
		}
		ev := []string{fmt.Sprintf("net.ipv6.conf.%s.accept_ra = 1", u.Name), "net.ipv6.conf.all.forwarding = 1"}
		for _, r := range in.Host.Routes {
			if r.Dev == u.Name && r.Proto == model.ProtoRA && r.Dst.Bits() == 0 {
				ev = append(ev, fmt.Sprintf("route %s via %s dev %s proto ra", r.Dst, r.Gw, r.Dev))
			}
		}
		out = append(out, Finding{Severity: Error,
			What: fmt.Sprintf("%s takes its IPv6 default route from router advertisements, but with forwarding on the kernel ignores them (accept_ra = 1): "+
				"the route expires with its lifetime and IPv6 beyond the link goes with it", u.Name),
			Evidence: ev,
			Fix: fmt.Sprintf("sysctl -w net.ipv6.conf.%s.accept_ra=2 (and persist it in /etc/sysctl.d/); guestnet apply does it for the uplinks "+
				"of a host with a declared IPv6 network before it turns forwarding on", u.Name)})
	}
	return out
}

// checkRA: a declared network with ipv6 whose guests depend on guestnet
// serve for router advertisements (and DHCPv6, when dhcp6 is set): without
// the daemon, guests form no address in the prefix and have no default
// route. A Warning: guests with static addresses and routes do not care.
// Also an input chain of someone else's that drops by policy what IPv6
// guests send the host (router solicitations, DHCPv6, DNS).
func checkRA(in Input) []Finding {
	if !in.Declared {
		return nil
	}
	var out []Finding
	for _, n := range in.Networks {
		ra, ok := n.RA()
		if !ok {
			continue
		}
		if !in.Diag.Daemon {
			what := fmt.Sprintf("%s has ipv6 (%s), but guestnet serve is not running: no router advertisements, so guests form no address in the prefix and get no default route", n.Name, ra.Prefix)
			ev := []string{"no daemon answers on the API socket"}
			if n.DHCP6 != nil {
				what += ", and no DHCPv6 server answers"
				ev = append(ev, "the network declares dhcp6")
			}
			out = append(out, Finding{Severity: Warning, Network: n.Name, What: what, Evidence: ev,
				Fix: "systemctl start guestnet-serve (or guestnet serve --config ...); guests with static addresses and a static default route need nothing"})
		}
		for _, fc := range in.Diag.InputDrop {
			if !fc.Sees(model.IPv6) || slices.Contains(fc.AcceptIIF, n.Bridge) {
				continue
			}
			out = append(out, Finding{Severity: Warning, Network: n.Name,
				What:     fmt.Sprintf("%s drops by policy the IPv6 that reaches the host, router solicitations, DHCPv6 and DNS from %s included, unless one of its rules lets them in", fc.Name, n.Bridge),
				Evidence: []string{fc.Name + ": policy drop, no rule accepting iifname " + n.Bridge},
				Fix:      fmt.Sprintf("ip6tables -I INPUT -i %s -p ipv6-icmp -j ACCEPT && ip6tables -I INPUT -i %s -p udp --dport 547 -j ACCEPT (and 53 for DNS)", n.Bridge, n.Bridge)})
		}
	}
	return out
}

// gatewayMissing reports the network's declared addresses (IPv4 and IPv6,
// with their prefix length) that its bridge does not carry: guestnet apply
// puts them there. Without the IPv6 one the host has no route to the
// guests' prefix (the guests still have one to the host, by the RA's
// link-local router), and DNS and DHCPv6 on it do not answer.
func gatewayMissing(n model.Network, br model.Link) []Finding {
	var out []Finding
	for _, a := range n.Addrs() {
		if slices.Contains(br.Addrs, a) {
			continue
		}
		f := model.FamilyOf(a.Addr())
		what := fmt.Sprintf("bridge %s lacks its gateway address %s: guests' traffic to and through the host fails", n.Bridge, a)
		cmd := fmt.Sprintf("ip addr add %s dev %s", a, n.Bridge)
		if f == model.IPv6 {
			what = fmt.Sprintf("bridge %s lacks its IPv6 address %s: the host has no route to %s (replies to the guests go astray), and DNS and DHCPv6 on it do not answer", n.Bridge, a, n.Subnet6())
			cmd = fmt.Sprintf("ip -6 addr add %s dev %s nodad", a, n.Bridge)
		}
		var has []string
		for _, p := range br.Addrs {
			if model.FamilyOf(p.Addr()) == f && !p.Addr().IsLinkLocalUnicast() {
				has = append(has, p.String())
			}
		}
		ev := fmt.Sprintf("%s has no %s address", n.Bridge, famName(f))
		if len(has) > 0 {
			ev = fmt.Sprintf("%s has %v, not %s", n.Bridge, has, a)
		}
		out = append(out, Finding{Severity: Error, Network: n.Name, What: what, Evidence: []string{ev},
			Fix: "guestnet apply (" + cmd + ")"})
	}
	return out
}
