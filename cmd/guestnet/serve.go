package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

func serveCmd(g *globals) *cobra.Command {
	var config []string
	var metrics, level string
	var recoverLeases bool
	c := &cobra.Command{
		Use:   "serve --config DIR|FILE",
		Short: "Run the daemon: apply the config, serve DHCP, repair drift, answer the CLI",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// A SIGHUP while serve starts (its default action ends the
			// process) is ignored until the reload handler below takes
			// it: the first apply reads the config anyway. An ignored
			// signal stays ignored across enterNetns's exec.
			signal.Ignore(syscall.SIGHUP)
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			// Refuse an empty config before anything starts: serving it
			// would remove every network guestnet applied here. (The
			// daemon refuses an emptied config on reload too.)
			if s, err := spec.Load(config...); err == nil && len(s.Networks) == 0 {
				return fmt.Errorf("--config %s declares no networks: guestnet serve would remove every network guestnet applied here, "+
					"and serve nothing. Declare a network there (see guestnet apply --help), or run `guestnet destroy --all` to remove them",
					strings.Join(config, " --config "))
			}
			if g.netns != "" {
				if err := enterNetns(g.netns, metrics); err != nil {
					return err
				}
			}
			metricsLn, err := inheritedMetrics()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			d := &daemon.Daemon{Engine: e, Config: config, Log: log, Metrics: metrics, MetricsListener: metricsLn, RecoverLeases: recoverLeases}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			go func() {
				for range hup {
					if err := d.Reload(ctx); err != nil {
						log.Error("reload", "err", err)
					} else {
						log.Info("reloaded")
					}
				}
			}()
			err = d.Run(ctx, func() { sdNotify("READY=1") })
			var bad *dhcp.CorruptError
			if errors.As(err, &bad) {
				// A restart cannot fix it: exit 3, which the systemd unit
				// lists in RestartPreventExitStatus, ends the restart loop.
				fmt.Fprintln(os.Stderr, "guestnet:", err)
				return exitError{code: exitStoreUnreadable}
			}
			return err
		},
	}
	c.Flags().StringArrayVar(&config, "config", []string{"/etc/guestnet"}, "spec file or directory (repeatable)")
	c.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9468)")
	c.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	c.Flags().BoolVar(&recoverLeases, "recover-leases", false,
		"if the lease store cannot be read, move it aside (leases.db.corrupt-TIME), keep the leases it still holds, and start")
	return c
}

// exitStoreUnreadable is serve's exit code for a lease store it refuses
// (dhcp.CorruptError): someone has to choose --recover-leases or a backup.
const exitStoreUnreadable = 3

// sdNotify tells systemd (Type=notify) the daemon is ready; without
// NOTIFY_SOCKET it does nothing.
func sdNotify(msg string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(msg))
}

func (g *globals) dir() string { return filepath.Dir(state.Path(g.stateDir, g.netns)) }

func leasesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "leases [NETWORK]",
		Short: "List DHCP leases (from the running daemon, or its store when it is down)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			network := ""
			if len(args) == 1 {
				network = args[0]
			}
			ls, from, err := daemon.Leases(g.dir(), network)
			if err != nil {
				return err
			}
			// A network with no lease must be one guestnet applied (a
			// destroyed network's leases may still be in the store).
			if network != "" && len(ls) == 0 {
				if err := g.checkApplied(network); err != nil {
					return err
				}
			}
			g.staticNames(ls)
			if g.json() {
				return g.printJSON(ls)
			}
			// Leases of stretched networks (etcd) say which host wrote
			// them: a column of its own, only when there are some.
			hosts := slices.ContainsFunc(ls, func(l daemon.LeaseView) bool { return l.Host != "" })
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			head := "NETWORK\tMAC\tIP\tHOSTNAME\tEXPIRY\tSTATE"
			if hosts {
				head += "\tHOST"
			}
			fmt.Fprintln(tw, head)
			for _, l := range ls {
				client := l.MAC
				if client == "" && l.DUID != "" {
					client = "duid " + l.DUID // a DHCPv6 client whose MAC is unknown
				}
				row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", printable(l.Network), printable(client), printable(l.IP),
					printable(l.Hostname), l.Expiry.Format("2006-01-02 15:04:05"), printable(l.State))
				if hosts {
					row += "\t" + printable(l.Host)
				}
				fmt.Fprintln(tw, row)
			}
			tw.Flush()
			fmt.Fprintf(cmd.ErrOrStderr(), "(%s, read from the %s)\n", plural(len(ls), "lease"), from)
			return nil
		},
	}
}

// staticNames fills the host name of a lease that has none from the
// network's static host of that MAC and address: the name the spec gave it
// (a guest that sends no host name still has the one declared for it).
func (g *globals) staticNames(ls []daemon.LeaseView) {
	st, err := state.Load(state.Path(g.stateDir, g.netns))
	if err != nil {
		return
	}
	for i, l := range ls {
		n, ok := st.Networks[l.Network]
		if l.Hostname != "" || !ok || n.Network.DHCP == nil {
			continue
		}
		for _, h := range n.Network.DHCP.Hosts {
			if strings.EqualFold(h.MAC, l.MAC) && h.IP.String() == l.IP {
				ls[i].Hostname = h.Name
			}
		}
	}
}

// printable returns s as is when every byte of it is printable ASCII
// (a space, a tab or any control byte would break the table's columns or
// drive the terminal), else quoted with Go escapes. A store written
// before host names were checked may hold a guest's newline and ANSI
// escapes: the table shows them as "evil\n\x1b[31m", never a forged row.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\' {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}
