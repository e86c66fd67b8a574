package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/state"
)

// applied lists the networks guestnet applied in the target namespace, read
// from its state file (no namespace is entered), sorted by name.
func (g *globals) applied() ([]string, error) {
	st, err := state.Load(state.Path(g.stateDir, g.netns))
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range st.Networks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// checkApplied refuses a network name guestnet did not apply here: a typo
// must not print a script for, or "destroy", a network that is not there.
func (g *globals) checkApplied(name string) error {
	known, err := g.applied()
	if err != nil {
		return err
	}
	if slices.Contains(known, name) {
		return nil
	}
	return unknownNetwork(name, known, "applied here")
}

// unknownNetwork is the error for a name not among known.
func unknownNetwork(name string, known []string, where string) error {
	if len(known) == 0 {
		return fmt.Errorf("no network %q: no network is %s (guestnet apply FILE makes them)", name, where)
	}
	return fmt.Errorf("no network %q: the networks %s are %s", name, listNames(known), where)
}

// listNames is "a, b and c".
func listNames(names []string) string {
	switch len(names) {
	case 0:
		return "(none)"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// plural is "1 change", "2 changes".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
