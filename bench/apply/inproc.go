package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/spec"
)

// inproc applies specText the way `guestnet apply` does (spec.Load, then
// engine.Open and Converge on the namespace), inside this process, and
// times that alone: the figure without process start, flag parsing and
// printing the plan, which the whole-command wall clock includes.
func inproc(dir, ns, specText string) result {
	path := filepath.Join(dir, "spec.yaml")
	check(os.WriteFile(path, []byte(specText), 0o644))
	start := time.Now()
	s, err := spec.Load(path)
	check(err)
	e, err := engine.Open(ns, filepath.Join(dir, "state"))
	check(err)
	defer e.Close()
	_, err = e.Converge(context.Background(), s)
	took := time.Since(start)
	check(err)
	return result{took: took, writes: e.Writes()}
}
