package main

import (
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
		if a.Op == plan.OpNft || a.Op == plan.OpNftElements || a.Op == plan.OpGuard {
			for _, l := range a.RuleDiff() {
				fmt.Fprintf(g.out, "       %s\n", l)
			}
		}
	}
	fmt.Fprintf(g.out, "%s: %d changes.\n", verb, len(p.Actions))
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
	fmt.Fprintf(g.out, "Done: %d changes, %d kernel writes.\n", len(p.Actions), w)
	return nil
}

func applyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
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
				fmt.Fprintln(g.out, "guestnet serve is running here: it re-read its config and applied the difference.")
				return nil
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			g.showPlan(e)
			p, err := e.Converge(cmd.Context(), s)
			if err != nil {
				return err
			}
			return g.printDone(p, e.Writes())
		},
	}
}

func destroyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "destroy FILE|NETWORK...",
		Short: "Remove networks guestnet made (named, or all those of a file)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			g.showPlan(e)
			p, unknown, err := e.Destroy(cmd.Context(), names)
			for _, n := range unknown {
				fmt.Fprintf(os.Stderr, "guestnet: network %s is not applied here; nothing to destroy for it\n", n)
			}
			if err != nil {
				return err
			}
			return g.printDone(p, e.Writes())
		},
	}
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
