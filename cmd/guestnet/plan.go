package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
)

type planJSON struct {
	Changes int          `json:"changes"`
	Actions []actionJSON `json:"actions"`
	Writes  *int         `json:"kernel_writes,omitempty"`
}

// actionJSON is an action with its command-line equivalent.
type actionJSON struct {
	Command string `json:"command"`
	plan.Action
}

func newPlanJSON(p plan.Plan, writes *int) planJSON {
	out := planJSON{Changes: len(p.Actions), Actions: []actionJSON{}, Writes: writes}
	for _, a := range p.Actions {
		out.Actions = append(out.Actions, actionJSON{Command: a.String(), Action: a})
	}
	return out
}

func (g *globals) printPlan(p plan.Plan, verb string) error {
	if g.json() {
		return nil
	}
	if len(p.Actions) == 0 {
		fmt.Fprintln(g.out, "No changes: the host matches the spec.")
		return nil
	}
	for i, a := range p.Actions {
		fmt.Fprintf(g.out, "%3d  %s\n", i+1, a)
		if n := a.Note(); n != "" {
			fmt.Fprintf(g.out, "       (%s)\n", n)
		}
		if a.IsNft() || a.Op == plan.OpGuard {
			for _, l := range a.RuleDiff() {
				fmt.Fprintf(g.out, "       %s\n", l)
			}
		}
	}
	fmt.Fprintf(g.out, "%s: %s.\n", verb, plural(len(p.Actions), "change"))
	return nil
}

func planCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "plan FILE|DIR...",
		Short: "Show what apply would change (exit 0: nothing, 2: changes)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args...)
			if err != nil {
				return err
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			p, err := e.Plan(cmd.Context(), s)
			if err != nil {
				return err
			}
			if len(s.Networks) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "guestnet: note: %s declares no networks: apply refuses it unless told --allow-empty (destroy --all removes them all)\n",
					strings.Join(args, " "))
			}
			if g.json() {
				g.printJSON(newPlanJSON(p, nil))
			}
			g.printPlan(p, "Plan")
			if len(p.Actions) > 0 {
				return exitError{2}
			}
			return nil
		},
	}
}

// showPlan has the engine print each plan before its first write.
func (g *globals) showPlan(e *engine.Engine) {
	e.Planned = func(p plan.Plan) { g.printPlan(p, "Applying") }
}

// printDone reports a plan the engine ran.
func (g *globals) printDone(p plan.Plan, w int) error {
	if g.json() {
		return g.printJSON(newPlanJSON(p, &w))
	}
	fmt.Fprintf(g.out, "Done: %s, %s.\n", plural(len(p.Actions), "change"), plural(w, "kernel write"))
	return nil
}

// refuseEmpty is apply's answer to a spec that declares no networks: it
// would remove every network, which a deleted file, a comment-only file or
// an empty directory should never do by accident.
func (g *globals) refuseEmpty(args []string) error {
	known, err := g.applied()
	if err != nil {
		return err
	}
	what := "no network is applied here, so it would change nothing"
	if len(known) > 0 {
		what = fmt.Sprintf("applying it would remove every network guestnet applied here: %s", listNames(known))
	}
	return fmt.Errorf("%s declares no networks; %s. Nothing was changed. "+
		"To remove them all, run `guestnet destroy --all` (or `guestnet apply --allow-empty %s`)",
		strings.Join(args, " "), what, strings.Join(args, " "))
}

func applyCmd(g *globals) *cobra.Command {
	var allowEmpty bool
	c := &cobra.Command{
		Use:   "apply FILE|DIR...",
		Short: "Make the host match the spec, all or nothing",
		Long: "Make the host carry exactly the networks of the given files (a directory means its *.yaml).\n" +
			"Networks guestnet applied before that are no longer declared are removed.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args...)
			if err != nil {
				return err
			}
			if len(s.Networks) == 0 && !allowEmpty {
				return g.refuseEmpty(args)
			}
			// With the daemon running, its config is the truth: applying
			// anything else here would be undone as drift. Ask it to reload,
			// and refuse files that are not its config: it would not read them.
			if served, ok, err := daemon.ServedConfig(g.dir()); err != nil {
				return fmt.Errorf("guestnet serve is running here and did not say its config: %w", err)
			} else if ok && !daemon.InConfig(args, served) {
				return fmt.Errorf("guestnet serve is running here with --config %s, and would undo %s as drift: "+
					"put the networks in its config and run `guestnet apply %s` (or send it SIGHUP), or restart serve with --config %s",
					strings.Join(served, " --config "), strings.Join(args, " "), strings.Join(served, " "), strings.Join(args, " --config "))
			}
			if ok, err := daemon.RequestReload(g.dir()); ok || err != nil {
				if err != nil {
					return fmt.Errorf("guestnet serve is running and its reload failed: %w", err)
				}
				const msg = "guestnet serve is running here: it re-read its config and applied the difference."
				if g.json() {
					return g.printJSON(struct {
						Served bool   `json:"served"`
						Detail string `json:"detail"`
					}{true, msg})
				}
				fmt.Fprintln(g.out, msg)
				return nil
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			g.showPlan(e)
			// Networks a serve that ran here destroyed and held down come
			// back now; the next serve must not take them down again.
			// Forgotten first, as the daemon's apply does: a crash after
			// the kernel changed must not hold them down again.
			var names []string
			for _, n := range s.Networks {
				names = append(names, n.Name)
			}
			undo, err := daemon.ReleaseHeld(g.dir(), names)
			if err != nil {
				return err
			}
			p, err := e.Converge(cmd.Context(), s)
			if err != nil {
				return errors.Join(err, undo())
			}
			if s.BGP != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "guestnet: note: %s:%d: the bgp section is served by guestnet serve: apply alone announces nothing and installs nothing\n",
					s.BGP.File, s.BGP.Line)
			}
			return g.printDone(p, e.Writes())
		},
	}
	c.Flags().BoolVar(&allowEmpty, "allow-empty", false, "apply a spec that declares no networks (removes every network guestnet applied here)")
	return c
}

func destroyCmd(g *globals) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "destroy FILE|NETWORK...",
		Short: "Remove networks guestnet made (named, or all those of a file, or --all)",
		Long: "Remove networks guestnet applied here: their bridges, addresses and rules. A NETWORK must be\n" +
			"one guestnet applied (a typo is an error, and nothing changes); a FILE's networks that are\n" +
			"already gone are skipped. --all removes every network guestnet applied here.\n\n" +
			"Destroy forgets the guest ports attached to a network: applying the network again makes an\n" +
			"empty bridge, and `guestnet attach` (or restarting the VM, whose ifup script attaches) puts\n" +
			"them back. guestnet does not re-attach an interface by its old name: since the destroy it may\n" +
			"belong to another guest. While guestnet serve runs here, the daemon destroys the networks (their\n" +
			"DHCP, DNS and BGP announcements stop) and keeps them down, across drift repair, SIGHUP and a\n" +
			"restart of serve, until `guestnet apply` of its config; destroy --all is refused then.",
		Args: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return fmt.Errorf("destroy --all takes no networks (it removes every one guestnet applied here)")
			}
			if !all && len(args) == 0 {
				return fmt.Errorf("destroy: name networks or spec files, or say --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// With the daemon running, its config is the truth: the daemon
			// destroys the networks and holds them down (drift repair and
			// SIGHUP leave them; `guestnet apply` brings them back), and
			// stops their DHCP, DNS and BGP announcements.
			if served, ok, err := daemon.ServedConfig(g.dir()); err != nil {
				return fmt.Errorf("guestnet serve is running here and did not say its config: %w", err)
			} else if ok {
				if all {
					return fmt.Errorf("guestnet serve is running here with --config %s: destroy --all would leave it nothing to serve; "+
						"name the networks (guestnet destroy NETWORK...), or stop serve first", strings.Join(served, " --config "))
				}
				var names []string
				for _, a := range args {
					if _, err := os.Stat(a); err == nil {
						nets, err := specNames(a)
						if err != nil {
							return err
						}
						names = append(names, nets...)
						continue
					}
					names = append(names, a)
				}
				if _, err := daemon.RequestDestroy(g.dir(), names); err != nil {
					return err
				}
				msg := fmt.Sprintf("guestnet serve is running here: it destroyed %s and keeps them down until `guestnet apply %s`.",
					strings.Join(names, ", "), strings.Join(served, " "))
				if g.json() {
					return g.printJSON(struct {
						Served    bool     `json:"served"`
						Destroyed []string `json:"destroyed"`
						Detail    string   `json:"detail"`
					}{true, names, msg})
				}
				fmt.Fprintln(g.out, msg)
				return nil
			}
			known, err := g.applied()
			if err != nil {
				return err
			}
			names := known
			var fromFiles, typed []string
			for _, a := range args {
				if _, err := os.Stat(a); err == nil {
					nets, err := specNames(a)
					if err != nil {
						return err
					}
					if len(nets) == 0 {
						return fmt.Errorf("%s declares no networks, so there is nothing of it to destroy; `guestnet destroy --all` removes every network guestnet applied here", a)
					}
					fromFiles = append(fromFiles, nets...)
					continue
				}
				typed = append(typed, a)
			}
			if !all {
				names = append(typed, fromFiles...)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			// A name typed on the command line must be one guestnet owns
			// here (in its state, or a link left by a crash): a typo is an
			// error, before anything changes.
			if len(typed) > 0 {
				_, unknown, err := e.PlanDestroy(cmd.Context(), typed)
				if err != nil {
					return err
				}
				if len(unknown) > 0 {
					return unknownNetwork(unknown[0], known, "applied here")
				}
			}
			g.showPlan(e)
			p, unknown, err := e.Destroy(cmd.Context(), names)
			for _, n := range unknown {
				// Only a file's networks get here: destroy of a file is
				// idempotent.
				fmt.Fprintf(cmd.ErrOrStderr(), "guestnet: network %s is not applied here; nothing to destroy for it\n", n)
			}
			if err != nil {
				return err
			}
			return g.printDone(p, e.Writes())
		},
	}
	c.Flags().BoolVar(&all, "all", false, "remove every network guestnet applied here (and anything it still owns)")
	return c
}

// specNames lists the networks a file or directory declares.
func specNames(path string) ([]string, error) {
	s, err := spec.Load(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range s.Networks {
		out = append(out, n.Name)
	}
	return out, nil
}
