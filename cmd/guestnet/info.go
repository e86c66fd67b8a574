package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/report"
)

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show guestnet's networks: bridges, ports, addresses, forwarding, owned rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, h, err := g.observed(cmd.Context())
			if err != nil {
				return err
			}
			defer e.Close()
			st, err := e.State()
			if err != nil {
				return err
			}
			s := report.MakeStatus(st, h)
			svcs, err := daemon.Services(g.dir())
			if err != nil {
				return fmt.Errorf("ask guestnet serve for its services: %w", err)
			}
			// The speaker's part, when the daemon runs one (a daemon without a
			// bgp section, or none, leaves it out).
			var speaker *bgp.Status
			switch st, err := daemon.BGP(g.dir()); {
			case err == nil:
				st = bgpJSON(st)
				speaker = &st
			case !errors.Is(err, daemon.ErrNoDaemon) && !errors.Is(err, daemon.ErrNoBGP) && !errors.Is(err, daemon.ErrOldDaemon):
				return fmt.Errorf("ask guestnet serve for its BGP status: %w", err)
			}
			// The lease cluster of stretched networks, when the daemon
			// keeps leases in etcd.
			var cluster *model.ClusterLeases
			switch cl, err := daemon.Cluster(g.dir()); {
			case err == nil:
				cluster = &cl
			case !errors.Is(err, daemon.ErrNoDaemon) && !errors.Is(err, daemon.ErrNoCluster) && !errors.Is(err, daemon.ErrOldDaemon):
				return fmt.Errorf("ask guestnet serve for its lease cluster: %w", err)
			}
			if g.json() {
				return g.printJSON(struct {
					report.Status
					Services []daemon.ServiceStatus `json:"services,omitempty"`
					BGP      *bgp.Status            `json:"bgp,omitempty"`
					Leases   *model.ClusterLeases   `json:"leases,omitempty"`
				}{s, svcs, speaker, cluster})
			}
			fmt.Fprint(g.out, s.Text())
			printServices(g.out, svcs)
			if speaker != nil {
				fmt.Fprintln(g.out, "  "+bgpSummary(*speaker))
			}
			if cluster != nil {
				printCluster(g.out, *cluster)
			}
			return nil
		},
	}
}

// printCluster shows the lease cluster of stretched networks: etcd's
// health as this host last saw it, and every block with its owner.
func printCluster(w io.Writer, cl model.ClusterLeases) {
	h := cl.Etcd
	state := "quorum"
	if !h.Quorum {
		state = "NO QUORUM: new leases refused, known leases renew with their remaining time"
	}
	fmt.Fprintf(w, "\nleases in etcd (this host: %s): %s, %d of %d endpoints answer\n", printable(cl.Host), state, len(h.Reachable), len(h.Endpoints))
	if h.Error != "" {
		fmt.Fprintf(w, "  last error: %s\n", h.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NETWORK\tBLOCK\tHOST\tLEASES")
	for _, b := range cl.Blocks {
		mine := ""
		if b.Host == cl.Host {
			mine = " (this host)"
		}
		fmt.Fprintf(tw, "  %s\t%s-%s\t%s%s\t%d\n", printable(b.Network), b.First, b.Last, printable(b.Host), mine, b.Leases)
	}
	tw.Flush()
}

// printServices shows the daemon's services, when it runs.
func printServices(w io.Writer, svcs []daemon.ServiceStatus) {
	if len(svcs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nguestnet serve:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range svcs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, s.State, strings.TrimSpace(s.Problem+" "+s.Note))
	}
	tw.Flush()
}

func routesCmd(g *globals) *cobra.Command {
	var forOS, via, peer string
	c := &cobra.Command{
		Use:   "routes NETWORK",
		Short: "Print the return-route command other hosts need to reach a routed network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v, p netip.Addr
			var err error
			if via != "" {
				if v, err = netip.ParseAddr(via); err != nil {
					return fmt.Errorf("--via: %w", err)
				}
			}
			if peer != "" {
				if p, err = netip.ParseAddr(peer); err != nil {
					return fmt.Errorf("--peer: %w", err)
				}
			}
			if err := g.checkApplied(args[0]); err != nil {
				return err
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			n, err := e.Network(args[0])
			if err != nil {
				return err
			}
			h, err := e.Observe(cmd.Context())
			if err != nil {
				return err
			}
			lines, err := report.Routes(n, h, v, p, forOS)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(lines)
			}
			for _, l := range lines {
				fmt.Fprintln(g.out, l)
			}
			return nil
		},
	}
	c.Flags().StringVar(&forOS, "for", "linux", "syntax of the peer: linux or windows")
	c.Flags().StringVar(&via, "via", "", "host address the peers route through (default: picked from the interface facing them)")
	c.Flags().StringVar(&peer, "peer", "", "an address of the peers, to pick the interface that faces them")
	return c
}
