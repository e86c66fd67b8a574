// Package apply carries out a plan against a Writer with an undo journal:
// if any step fails, every earlier step is reversed, newest first, and the
// error names the step that failed.
package apply

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/plan"
)

// Writer makes one kernel write per call (an nft call is one
// transaction) and reports the kernel's error as it is. The engine's
// Kernel is one; Run needs only this of it.
type Writer interface {
	Do(a plan.Action) error
}

// Done reports whether err, from doing a, means the goal of a already
// holds: an address or route that is there already, or already gone. It
// is decided here, once, for every Writer (the real kernel and the fake
// return the same errno).
func Done(a plan.Action, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, unix.EEXIST):
		return a.Op == plan.OpAddrAdd || a.Op == plan.OpRouteAdd
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return a.Op == plan.OpAddrDel
	case errors.Is(err, unix.ESRCH):
		return a.Op == plan.OpRouteDel
	}
	return false
}

// do makes one write; an already-done step counts as success.
func do(w Writer, a plan.Action) error {
	if err := w.Do(a); !Done(a, err) {
		return err
	}
	return nil
}

// StepError reports which step of an apply failed, and whether the
// rollback succeeded.
type StepError struct {
	Step     int // 1-based
	Steps    int
	Action   plan.Action
	Err      error
	Rollback error // nil when every earlier step was undone
}

func (e *StepError) Error() string {
	s := fmt.Sprintf("step %d/%d (%s): %v", e.Step, e.Steps, e.Action, e.Err)
	if e.Rollback != nil {
		return s + fmt.Sprintf("; ROLLBACK FAILED, host is partly changed: %v", e.Rollback)
	}
	if e.Step > 1 {
		return s + fmt.Sprintf("; undid the %d earlier steps", e.Step-1)
	}
	return s + "; nothing was changed"
}

func (e *StepError) Unwrap() error { return e.Err }

// Run does the actions in order. On failure it undoes the done ones in
// reverse and returns a *StepError.
func Run(k Writer, acts []plan.Action) error {
	for i, a := range acts {
		if err := do(k, a); err != nil {
			se := &StepError{Step: i + 1, Steps: len(acts), Action: a, Err: err}
			se.Rollback = undo(k, acts[:i])
			return se
		}
	}
	return nil
}

func undo(k Writer, done []plan.Action) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		inv := done[i].Inverse()
		if err := do(k, inv); err != nil {
			errs = append(errs, fmt.Errorf("undo %q: %w", inv, err))
		}
	}
	return errors.Join(errs...)
}
