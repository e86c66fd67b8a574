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
		Use:   "trace FROM TO [tcp|udp|icmp[/PORT]]",
		Short: "Walk one packet (and its reply) through the host; exit 0: delivered, 1: dropped, 3: cannot tell",
		Long: "FROM and TO are addresses or interface names (an interface stands for its first address).\n" +
			"The walk is a simulation over the observed host: guestnet's rules and maps (port forwards,\n" +
			"floating addresses: it follows their DNAT and SNAT and names the one used), foreign forward\n" +
			"chains that drop by policy, masquerade rules, the main routing table, ip_forward and br_netfilter.\n" +
			"It does not simulate foreign DNAT rules or policy routing (ip rule): --live asks the kernel\n" +
			"for the route. A rule it cannot simulate stops the walk (exit 3) and is named.",
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, h, d, err := g.diagnosed(cmd.Context())
			if err != nil {
				return err
			}
			defer e.Close()
			p := trace.Packet{Proto: "icmp", InDev: inDev, GuestPort: port}
			if p.Src, err = endpoint(h, args[0]); err != nil {
				return err
			}
			if p.Dst, err = endpoint(h, args[1]); err != nil {
				return err
			}
			if len(args) == 3 {
				proto, port, hasPort := strings.Cut(args[2], "/")
				p.Proto = proto
				switch {
				case proto != "tcp" && proto != "udp" && proto != "icmp":
					return fmt.Errorf("trace: protocol %q: tcp/PORT, udp/PORT or icmp", proto)
				case proto == "icmp" && hasPort:
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

// endpoint is an address, or an interface's first address.
func endpoint(h model.Host, s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	if l, ok := h.Link(s); ok && len(l.Addrs) > 0 {
		return l.Addrs[0].Addr(), nil
	}
	return netip.Addr{}, fmt.Errorf("trace: %q is neither an address nor an interface with one", s)
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
	case err != nil && !res.Delivered && strings.Contains(last.Detail, "ip_forward = 0"):
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
