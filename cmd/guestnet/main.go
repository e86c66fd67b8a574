// Command guestnet makes a Linux host's VM networks match a declarative
// file. This package only parses flags and prints; the work is in
// internal/engine and the packages it wires.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/state"
)

// exitError carries a specific exit code (plan's 2 means "changes").
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

type globals struct {
	netns    string
	stateDir string
	output   string
	out      io.Writer
}

// open targets the namespace. Retries after kernel errors are logged to
// stderr. GUESTNET_CRASH_AFTER_WRITES=N is a test hook: the process kills
// itself (SIGKILL) right after its Nth kernel write, so tests can prove
// that a crash at any step leaves a state the next apply or destroy
// completes.
func (g *globals) open() (*engine.Engine, error) {
	e, err := engine.Open(g.netns, g.stateDir)
	if err != nil {
		return nil, err
	}
	e.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	if v := os.Getenv("GUESTNET_CRASH_AFTER_WRITES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			e.Close()
			return nil, fmt.Errorf("GUESTNET_CRASH_AFTER_WRITES=%q: want a write count from 1 (a test hook)", v)
		}
		e.Kernel = &engine.CrashAfter{Kernel: e.Kernel, N: n}
	}
	return e, nil
}

// paint colours s on a terminal (not when piped, nor with NO_COLOR set).
func (g *globals) paint(s string) string {
	f, ok := g.out.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return s
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return s
	}
	code := map[string]string{"ERROR": "31", "DROP": "31", "DROPPED": "31", "WARNING": "33",
		"ACCEPT": "32", "PASS": "32", "DELIVER": "32", "DELIVERED": "32"}[strings.Fields(s + " x")[0]]
	if code == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// observed opens the namespace and reads it; the caller closes the engine.
func (g *globals) observed(ctx context.Context) (*engine.Engine, model.Host, error) {
	e, err := g.open()
	if err != nil {
		return nil, model.Host{}, err
	}
	h, err := e.Observe(ctx)
	if err != nil {
		e.Close()
		return nil, model.Host{}, err
	}
	return e, h, nil
}

// diagnosed is observed plus what doctor and trace read besides.
func (g *globals) diagnosed(ctx context.Context) (*engine.Engine, model.Host, model.Diag, error) {
	e, h, err := g.observed(ctx)
	if err != nil {
		return nil, h, model.Diag{}, err
	}
	d, err := observe.Diagnose(e.NS, h)
	if err != nil {
		e.Close()
		return nil, h, d, err
	}
	return e, h, d, nil
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{out: stdout}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "guestnet:", err)
		// With -o json, stdout is JSON on every path: a script reading it
		// gets the error too, not an empty document.
		if g.json() {
			g.printJSON(struct {
				Error string `json:"error"`
			}{err.Error()})
		}
		return 1
	}
}

// newRoot builds the command tree around g.
func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "guestnet",
		Short:         "Declarative VM networks on a Linux host",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	dir := os.Getenv("GUESTNET_STATE_DIR")
	if dir == "" {
		dir = state.DefaultDir
	}
	root.PersistentFlags().StringVar(&g.netns, "netns", "", "work inside this network namespace (a name as made by 'ip netns add')")
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", dir, "where guestnet records what it owns (env GUESTNET_STATE_DIR)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.output != "text" && g.output != "json" {
			return fmt.Errorf("unknown output format %q: -o text or -o json", g.output)
		}
		return nil
	}
	root.AddCommand(planCmd(g), applyCmd(g), destroyCmd(g), attachCmd(g), detachCmd(g),
		ifupCmd(g, "ifup"), ifupCmd(g, "ifdown"), qemuScriptCmd(g), routesCmd(g), statusCmd(g),
		serveCmd(g), leasesCmd(g), bgpCmd(g), doctorCmd(g), traceCmd(g), forwardCmd(g), importCmd(g))
	root.Version = version()
	document(root)
	complete(g, root)
	return root
}
