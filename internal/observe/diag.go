package observe

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
)

// Diagnose reads what doctor needs beyond Host: rp_filter of "all", the
// bridges and the interfaces with IPv4 addresses, conntrack fill, the
// masquerade rules of tables guestnet does not own (ip, ip6 and inet), and
// the policy routing rules of both families.
func Diagnose(ns *netns.NS, h model.Host) (model.Diag, error) {
	d := model.Diag{RPFilter: map[string]int{}}
	names := []string{"all"}
	for _, l := range h.Links {
		// Not every link with an address: once IPv6 link-local addresses
		// are observed, every guest port has one (rp_filter is IPv4's).
		if l.Kind == "bridge" || (l.Name != "lo" && slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr().Is4() })) {
			names = append(names, l.Name)
		}
	}
	for _, n := range names {
		v, err := ns.ReadSysctl("net.ipv4.conf." + n + ".rp_filter")
		if err != nil {
			return d, err
		}
		if i, err := strconv.Atoi(v); err == nil {
			d.RPFilter[n] = i
		}
	}
	for key, dst := range map[string]*int{"net.netfilter.nf_conntrack_count": &d.Conntrack, "net.netfilter.nf_conntrack_max": &d.CtMax} {
		v, err := ns.ReadSysctl(key)
		if err != nil {
			return d, err
		}
		*dst, _ = strconv.Atoi(v)
	}
	udp, err := ns.UDPListeners()
	if err != nil {
		return d, err
	}
	d.DHCPSockets = udp[67]
	c, err := ns.Nft(0)
	if err != nil {
		return d, err
	}
	chains, err := c.ListChains()
	if err != nil {
		return d, fmt.Errorf("diagnose nftables: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == model.Table && ch.Table.Family == nftables.TableFamilyINet {
			continue
		}
		switch ch.Table.Family {
		case nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet:
		default:
			continue // masquerade lives in nat chains, base or jumped-to (libvirt's LIBVIRT_PRT)
		}
		if ch.Hooknum != nil && *ch.Hooknum == unix.NF_INET_LOCAL_IN && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			fc, err := readForeignChain(c, ch)
			if err != nil {
				return d, err
			}
			d.InputDrop = append(d.InputDrop, fc)
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return d, fmt.Errorf("diagnose %s: %w", ch.Name, err)
		}
		name := fmt.Sprintf("table %s %s chain %s", FamilyName(ch.Table.Family), ch.Table.Name, ch.Name)
		dnat := false
		for _, r := range rules {
			if mr, ok := nft.Decode(r.Exprs, nft.CommentOf(r.UserData)); ok && mr.Verdict == model.Masquerade {
				d.ForeignNAT = append(d.ForeignNAT, model.ForeignRule{Chain: name, Rule: mr})
			}
			dnat = dnat || holdsDNAT(r.Exprs)
		}
		if dnat {
			d.ForeignDNAT = append(d.ForeignDNAT, name)
		}
	}
	if d.PolicyRules, err = policyRules(ns, netlink.FAMILY_V4); err != nil {
		return d, err
	}
	if d.PolicyRules6, err = policyRules(ns, netlink.FAMILY_V6); err != nil {
		return d, err
	}
	if d.Overlay, err = overlay(ns, h); err != nil {
		return d, err
	}
	return d, nil
}

// holdsDNAT reports whether a rule rewrites the destination: nft's dnat or
// redirect, or iptables-nft's DNAT and REDIRECT targets.
func holdsDNAT(exprs []expr.Any) bool {
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.NAT:
			if e.Type == expr.NATTypeDestNAT {
				return true
			}
		case *expr.Redir:
			return true
		case *expr.Target:
			if e.Name == "DNAT" || e.Name == "REDIRECT" {
				return true
			}
		}
	}
	return false
}

// policyRules lists the routing rules of a family (netlink.FAMILY_V4 or
// FAMILY_V6) other than the standard ones (local at 0, main at 32766,
// default at 32767; IPv6 has no default rule).
// Equivalent to: ip -4 rule show, ip -6 rule show
func policyRules(ns *netns.NS, family int) ([]string, error) {
	h, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	rules, err := h.RuleList(family)
	if err != nil {
		return nil, fmt.Errorf("diagnose: ip rule show (family %d): %w", family, err)
	}
	var out []string
	for _, r := range rules {
		std := (r.Priority == 0 && r.Table == unix.RT_TABLE_LOCAL) || (r.Priority == 32766 && r.Table == unix.RT_TABLE_MAIN) ||
			(r.Priority == 32767 && r.Table == unix.RT_TABLE_DEFAULT)
		if std {
			continue
		}
		s := fmt.Sprintf("%d:", r.Priority)
		if r.Src != nil {
			s += " from " + r.Src.String()
		} else {
			s += " from all"
		}
		if r.Dst != nil {
			s += " to " + r.Dst.String()
		}
		if r.IifName != "" {
			s += " iif " + r.IifName
		}
		if r.Mark != 0 {
			s += fmt.Sprintf(" fwmark %#x", r.Mark)
		}
		out = append(out, fmt.Sprintf("%s lookup %d", s, r.Table))
	}
	return out, nil
}
