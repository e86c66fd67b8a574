package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/trace"
)

func traceCmd(g *globals) *cobra.Command {
	var inDev, port string
	var live bool
	c := &cobra.Command{
		Use:   "trace FROM TO [tcp|udp|icmp|icmpv6[/PORT]]",
		Short: "Walk one packet (and its reply) through the host; exit 0: delivered, 1: dropped, 3: cannot tell",
		Long: "FROM and TO are IPv4 or IPv6 addresses, or interface names (an interface stands for its first\n" +
			"address of the other end's family, else its first address). icmp of an IPv6 packet is ICMPv6.\n" +
			"The walk is a simulation over the observed host: guestnet's rules and maps (port forwards,\n" +
			"floating addresses: it follows their DNAT and SNAT and names the one used), foreign forward\n" +
			"chains that drop by policy (ip, ip6 and inet tables, each for its family), masquerade rules,\n" +
			"the main routing table, forwarding (ip_forward, conf.all.forwarding) and br_netfilter\n" +
			"(bridge-nf-call-iptables, -ip6tables). It does not simulate foreign DNAT rules or policy\n" +
			"routing (ip rule, ip -6 rule): --live asks the kernel for the route. A rule it cannot\n" +
			"simulate stops the walk (exit 3) and is named.",
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, h, d, err := g.diagnosed(cmd.Context())
			if err != nil {
				return err
			}
			defer e.Close()
			p := trace.Packet{Proto: "icmp", InDev: inDev, GuestPort: port}
			if p.Src, p.Dst, err = endpoints(h, args[0], args[1]); err != nil {
				return err
			}
			if len(args) == 3 {
				proto, port, hasPort := strings.Cut(args[2], "/")
				p.Proto = proto
				switch {
				case proto != "tcp" && proto != "udp" && proto != "icmp" && proto != "icmpv6":
					return fmt.Errorf("trace: protocol %q: tcp/PORT, udp/PORT, icmp or icmpv6", proto)
				case proto == "icmpv6" && !p.Dst.Is6():
					return fmt.Errorf("trace: icmpv6 is IPv6's: %s is an IPv4 address (say icmp)", p.Dst)
				case (proto == "icmp" || proto == "icmpv6") && hasPort:
					return fmt.Errorf("trace: icmp has no port (%q)", args[2])
				case hasPort:
					if p.Port, err = strconv.Atoi(port); err != nil || p.Port < 1 || p.Port > 65535 {
						return fmt.Errorf("trace: port %q: a number from 1 to 65535", port)
					}
				}
			}
			for _, l := range []struct{ flag, name string }{{"--in", inDev}, {"--port", port}} {
				if l.name != "" && !slices.ContainsFunc(h.Links, func(k model.Link) bool { return k.Name == l.name }) {
					return fmt.Errorf("trace %s %s: no such interface here", l.flag, l.name)
				}
			}
			res := trace.Walk(h, d, p)
			var liveLine string
			if live && res.Ingress != "" {
				liveLine = liveCheck(e, p, res)
			}
			if g.json() {
				g.printJSON(res)
			} else {
				for _, hop := range res.Hops {
					fmt.Fprintf(g.out, "%-12s %s %s\n", hop.Stage, g.paint(fmt.Sprintf("%-8s", strings.ToUpper(hop.Verdict))), hop.Detail)
				}
				verdict := "DROPPED"
				switch {
				case res.CannotTell:
					verdict = "CANNOT TELL (the last hop says what the walk cannot simulate)"
				case res.Delivered && res.Local:
					verdict = fmt.Sprintf("DELIVERED to this host (%s), and the reply comes back", res.Dst)
				case res.Delivered:
					verdict = fmt.Sprintf("DELIVERED to %s out of %s, and the reply comes back", res.Dst, res.Egress)
				}
				fmt.Fprintf(g.out, "=> %s\n", g.paint(verdict))
				if liveLine != "" {
					fmt.Fprintln(g.out, liveLine)
				}
			}
			if res.CannotTell {
				return exitError{3}
			}
			if !res.Delivered {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&live, "live", false, "check the route decision with the kernel (ip route get semantics, policy rules included)")
	c.Flags().StringVar(&port, "port", "", "the guest's bridge port (its TAP): check the port's anti-spoofing binding first")
	c.Flags().StringVar(&inDev, "in", "", "interface the packet arrives on (for a source the host has no route to, e.g. on an isolated bridge)")
	return c
}

// endpoints are FROM and TO: addresses, or interfaces standing for their
// first address of the other end's family (IPv4 when both are interfaces
// with one), not a link-local one. Both must be of one family.
func endpoints(h model.Host, from, to string) (src, dst netip.Addr, err error) {
	parse := func(s string) (netip.Addr, bool) {
		a, err := netip.ParseAddr(s)
		return a.WithZone(""), err == nil
	}
	src, srcOK := parse(from)
	dst, dstOK := parse(to)
	fam := model.IPv4
	switch {
	case srcOK:
		fam = model.FamilyOf(src)
	case dstOK:
		fam = model.FamilyOf(dst)
	}
	if !srcOK {
		if src, err = ifAddr(h, from, fam); err != nil {
			return src, dst, err
		}
	}
	if !dstOK {
		if dst, err = ifAddr(h, to, model.FamilyOf(src)); err != nil {
			return src, dst, err
		}
	}
	if model.FamilyOf(src) != model.FamilyOf(dst) {
		return src, dst, fmt.Errorf("trace: %s is %s and %s is %s: FROM and TO must be of one family", src, famWord(src), dst, famWord(dst))
	}
	return src, dst, nil
}

// ifAddr is an interface's first address of family f, else its first
// address that is not link-local.
func ifAddr(h model.Host, name string, f model.Family) (netip.Addr, error) {
	l, ok := h.Link(name)
	if !ok {
		return netip.Addr{}, fmt.Errorf("trace: %q is neither an address nor an interface", name)
	}
	var other netip.Addr
	for _, p := range l.Addrs {
		a := p.Addr()
		if a.IsLinkLocalUnicast() {
			continue
		}
		if model.FamilyOf(a) == f {
			return a, nil
		}
		if !other.IsValid() {
			other = a
		}
	}
	if other.IsValid() {
		return other, nil
	}
	return netip.Addr{}, fmt.Errorf("trace: interface %s has no address to trace from or to (give one)", name)
}

func famWord(a netip.Addr) string {
	if model.FamilyOf(a) == model.IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// liveCheck compares the simulated route decision with the kernel's (for
// the destination after guestnet's DNAT, which the kernel routes).
func liveCheck(e *engine.Engine, p trace.Packet, res trace.Result) string {
	dst := p.Dst
	if res.Dst.IsValid() {
		dst = res.Dst
	}
	dev, err := e.RouteGet(dst, p.Src, res.Ingress)
	last := res.Hops[len(res.Hops)-1]
	switch {
	case err != nil && !res.Delivered && (strings.Contains(last.Detail, "ip_forward = 0") || strings.Contains(last.Detail, "forwarding = 0")):
		return fmt.Sprintf("live: AGREE    the kernel will not forward it either (%v)", err)
	case err != nil && res.Egress == "" && !res.Local:
		return fmt.Sprintf("live: AGREE    the kernel has no route either (%v)", err)
	case err != nil:
		return fmt.Sprintf("live: DISAGREE the kernel refuses the route (%v); the simulation chose %s", err, res.Egress)
	case res.Local && dev == "lo":
		return "live: AGREE    the kernel delivers it locally"
	case dev == res.Egress:
		return fmt.Sprintf("live: AGREE    kernel route get: out of %s", dev)
	}
	return fmt.Sprintf("live: DISAGREE kernel route get: out of %s; the simulation chose %q", dev, res.Egress)
}
