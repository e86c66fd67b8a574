package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/doctor"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

func doctorCmd(g *globals) *cobra.Command {
	var config []string
	c := &cobra.Command{
		Use:   "doctor [NETWORK]",
		Short: "Say why guests cannot get through, with the evidence and the fix (exit 0: clean or info only, 1: warnings or errors)",
		Long: "Checks the host against the networks of --config, or those guestnet applied here, or, on a host\n" +
			"guestnet never touched, every bridge with an address (IPv4, or IPv6 other than link-local).\n" +
			"Checks run for IPv4 and IPv6 each: forwarding, foreign FORWARD drops (iptables, ip6tables),\n" +
			"br_netfilter, uplinks whose RA-learned default route expires once forwarding is on (accept_ra),\n" +
			"the bridge's gateway addresses, and the daemon that sends router advertisements.\n" +
			"Stretched networks (vxlan:): the VXLAN device, the network's MTU + 50 against the underlay\n" +
			"toward the other VTEPs, a route to every remote VTEP and BGP peer, and etcd's quorum.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, h, d, err := g.diagnosed(cmd.Context())
			if err != nil {
				return err
			}
			defer e.Close()
			d.Daemon = daemon.Running(g.dir())
			in := doctor.Input{Host: h, Diag: d}
			if d.Daemon {
				switch st, err := daemon.BGP(g.dir()); {
				case err == nil:
					in.BGP = &st
				case !errors.Is(err, daemon.ErrNoBGP) && !errors.Is(err, daemon.ErrOldDaemon) && !errors.Is(err, daemon.ErrNoDaemon):
					return fmt.Errorf("ask guestnet serve for its BGP status: %w", err)
				}
			}
			var declaredBGP *model.BGP // the spec's bgp section, with --config
			switch st, err := e.State(); {
			case len(config) > 0:
				s, err := spec.Load(config...)
				if err != nil {
					return err
				}
				in.Networks, in.Declared = s.Models(), true
				if s.BGP != nil {
					declaredBGP = &s.BGP.BGP
				}
			case err == nil && len(st.Networks) > 0:
				in.Networks, in.Declared = st.Sorted(), true
			default:
				in.Networks = doctor.Discover(h)
			}
			if len(args) == 1 {
				var keep []model.Network
				for _, n := range in.Networks {
					if n.Name == args[0] || n.Bridge == args[0] {
						keep = append(keep, n)
					}
				}
				if len(keep) == 0 {
					var names []string
					for _, n := range in.Networks {
						names = append(names, n.Name)
					}
					return unknownNetwork(args[0], names, "checked here")
				}
				in.Networks = keep
			}
			askStretch(g, e, &in, declaredBGP)
			findings := doctor.Run(in)
			if g.json() {
				if findings == nil {
					findings = []doctor.Finding{}
				}
				g.printJSON(findings)
			} else {
				printFindings(g, in, findings)
			}
			if doctor.Problems(findings) > 0 { // info findings alone are not a problem
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&config, "config", nil, "spec file or directory to check against")
	return c
}

func printFindings(g *globals, in doctor.Input, fs []doctor.Finding) {
	var names []string
	for _, n := range in.Networks {
		names = append(names, n.Name)
	}
	if len(fs) == 0 {
		fmt.Fprintf(g.out, "No findings: checked %d network(s) (%s) with %d checks.\n", len(names), strings.Join(names, ", "), len(doctor.Checks))
		return
	}
	for _, f := range fs {
		net := ""
		if f.Network != "" {
			net = " [" + f.Network + "]"
		}
		fmt.Fprintf(g.out, "%s %s%s: %s\n", g.paint(fmt.Sprintf("%-7s", strings.ToUpper(string(f.Severity)))), f.Check, net, f.What)
		for _, e := range f.Evidence {
			fmt.Fprintf(g.out, "        evidence: %s\n", e)
		}
		fmt.Fprintf(g.out, "        fix:      %s\n", f.Fix)
	}
}
