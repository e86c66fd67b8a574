package doctor

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/model"
)

// The BGP checks read Input.BGP, the speaker's status as the running
// daemon reports it; without a daemon or a bgp section they find nothing.

// checkBGPSessions reports each peer whose session is not established:
// it gets none of this host's routes, and none of its routes are
// installed here. An error when no session is up at all (the networks
// this host announces are reachable through BGP from nowhere), a warning
// while another peer still carries them.
func checkBGPSessions(in Input) []Finding {
	if in.BGP == nil {
		return nil
	}
	st := in.BGP
	up := established(*st)
	var out []Finding
	for _, p := range st.Peers {
		if p.State == bgp.StateEstablished || p.State == bgp.StateSelf { // self: this host in a shared spec's peers
			continue
		}
		sev := Warning
		if up == 0 {
			sev = Error
		}
		ev := []string{fmt.Sprintf("peer %s AS %d: %s", p.Address, p.ASN, text(p.State))}
		if !p.Since.IsZero() {
			ev[0] += " since " + p.Since.UTC().Format(time.RFC3339)
		}
		if p.LastError != "" {
			ev = append(ev, "last error: "+text(p.LastError))
		}
		ev = append(ev, fmt.Sprintf("%d of %d peers established", up, len(st.Peers)))
		out = append(out, Finding{Severity: sev,
			What: fmt.Sprintf("the BGP session with %s (AS %d) is %s, not established: that peer gets none of this host's routes, and none of its routes are installed here",
				p.Address, p.ASN, text(p.State)),
			Evidence: ev,
			Fix:      sessionFix(*st, p)})
	}
	return out
}

// sessionFix says what to look at for a session stuck in p's state: no
// TCP connection yet (idle, connect, active), or one whose OPEN the two
// sides disagree on (opensent, openconfirm).
func sessionFix(st bgp.Status, p bgp.PeerStatus) string {
	me := fmt.Sprintf("AS %d", st.ASN)
	if st.RouterID.IsValid() {
		me = fmt.Sprintf("%s, AS %d", st.RouterID, st.ASN)
	}
	switch p.State {
	case bgp.StateOpenSent, bgp.StateOpenConfirm:
		return fmt.Sprintf("the TCP session opens but the peers disagree on the OPEN: check the AS numbers on both sides (this host %s; the peer must be AS %d as the bgp section says), "+
			"that the peer lists this host's address as its neighbour, and the hold times", me, p.ASN)
	default:
		return fmt.Sprintf("check that %s runs BGP and lists this host (%s) as its neighbour with AS %d, and that nothing filters TCP port %d between them (nc -zv %s %d); "+
			"guestnet serve retries on its own", p.Address, me, p.ASN, st.Port, p.Address, st.Port)
	}
}

// checkBGPLearned reports each best path learned from a peer that is not
// in the kernel, with the speaker's reason. One the import policy keeps
// out on purpose (Refused) is info: a router announcing a default route
// nobody asked for is not a fault. Any other is a warning: the route
// should be there.
func checkBGPLearned(in Input) []Finding {
	if in.BGP == nil {
		return nil
	}
	var out []Finding
	for _, l := range in.BGP.Learned {
		if l.Installed {
			continue
		}
		why := text(l.Why)
		if why == "" {
			why = "the speaker gave no reason"
		}
		ev := []string{fmt.Sprintf("%s via %s from peer %s, not in the kernel", l.Prefix, l.NextHop, l.Peer), "why: " + why}
		f := Finding{Severity: Warning, Evidence: ev,
			What: fmt.Sprintf("the route to %s learned from %s is not installed: %s", l.Prefix, l.Peer, why),
			Fix: fmt.Sprintf("the next hop %s must be directly reachable (in a subnet connected to this host), and no other route to %s may be in the way (%s %s); "+
				"guestnet serve's log has the kernel's error", l.NextHop, l.Prefix, ipRoute(l.Prefix), l.Prefix)}
		if l.Refused {
			f.Severity = Info
			f.What = fmt.Sprintf("the route to %s learned from %s is refused by the import policy: %s", l.Prefix, l.Peer, why)
			want := fmt.Sprintf("list %s (or a shorter prefix that covers it) under bgp: import: and reload", l.Prefix)
			if l.Prefix.Bits() == 0 {
				want = fmt.Sprintf("list %s under bgp: import: and reload (a default route is installed only when import lists %s itself)", l.Prefix, l.Prefix)
			}
			f.Fix = "nothing, if this host should not use it: the policy is doing its job (the peer could stop announcing it). " +
				"If it should: " + want + "; a route equal to or inside one of this host's own networks or connected subnets is never installed"
		}
		out = append(out, f)
	}
	return out
}

// checkBGPForwarding: a network announced by BGP while forwarding of
// its family is off (net.ipv4.ip_forward for IPv4 prefixes,
// net.ipv6.conf.all.forwarding for IPv6 ones). The peers send the
// traffic for it here, and the host drops it: worse than not announcing
// it, since a peer with another way there prefers this one. What is
// announced is model.Announced of the networks checked; for networks
// found on a hand-made host (modes unknown) the speaker's own list.
func checkBGPForwarding(in Input) []Finding {
	if in.BGP == nil {
		return nil
	}
	peers := fmt.Sprintf("%d BGP peer(s), %d established", len(in.BGP.Peers), established(*in.BGP))
	var out []Finding
	for _, f := range []fwdFamily{
		{model.IPv4, "IPv4", "net.ipv4.ip_forward", in.Host.IPForward},
		{model.IPv6, "IPv6", "net.ipv6.conf.all.forwarding", in.Host.IP6Forward},
	} {
		if f.on {
			continue
		}
		found := false
		for _, n := range in.Networks {
			ann := f.of(model.Announced([]model.Network{n}))
			if len(ann) == 0 {
				continue
			}
			found = true
			out = append(out, Finding{Severity: Error, Network: n.Name,
				What: fmt.Sprintf("%s forwarding is off while this host announces %s of %s by BGP: its peers send that traffic here, and the host drops it",
					f.name, prefixes(ann), n.Name),
				Evidence: []string{f.sysctl + " = 0", "announced: " + prefixes(ann), peers},
				Fix: fmt.Sprintf("sysctl -w %s=1 (guestnet apply turns it on for the networks that need it), "+
					"or set announce: false on network %s until forwarding is on", f.sysctl, n.Name)})
		}
		if ann := f.of(in.BGP.Announced); !in.Declared && !found && len(ann) > 0 {
			out = append(out, Finding{Severity: Error,
				What:     fmt.Sprintf("%s forwarding is off while this host announces %s by BGP: its peers send that traffic here, and the host drops it", f.name, prefixes(ann)),
				Evidence: []string{f.sysctl + " = 0", "announced: " + prefixes(ann), peers},
				Fix:      fmt.Sprintf("sysctl -w %s=1, or set announce: false on the networks that should not be announced", f.sysctl)})
		}
	}
	return out
}

// fwdFamily is one family's forwarding switch, as checkBGPForwarding
// reads it.
type fwdFamily struct {
	fam          model.Family
	name, sysctl string
	on           bool
}

// of returns the prefixes of ps of the family.
func (f fwdFamily) of(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if model.FamilyOf(p.Addr()) == f.fam {
			out = append(out, p)
		}
	}
	return out
}

// ipRoute is the command that shows routes of p's family.
func ipRoute(p netip.Prefix) string {
	if model.FamilyOf(p.Addr()) == model.IPv6 {
		return "ip -6 route show"
	}
	return "ip route show"
}

func established(st bgp.Status) int {
	n := 0
	for _, p := range st.Peers {
		if p.State == bgp.StateEstablished {
			n++
		}
	}
	return n
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// text returns s as is when it is printable, else quoted with Go escapes:
// a peer's notification text is free-form and must not drive the
// terminal doctor prints to.
func text(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}
