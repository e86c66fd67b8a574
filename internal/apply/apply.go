// Package apply carries out a plan against a Kernel with an undo journal:
// if any step fails, every earlier step is reversed, newest first, and the
// error names the step that failed.
package apply

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/guestnet/guestnet/internal/plan"
)

// Kernel is the one seam through which guestnet changes a host. Each call
// is a single kernel write (an nft call is one transaction); EEXIST and
// ENOENT on an already-done step count as success.
type Kernel interface {
	Do(a plan.Action) error
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
func Run(k Kernel, acts []plan.Action) error {
	for i, a := range acts {
		if err := k.Do(a); err != nil {
			se := &StepError{Step: i + 1, Steps: len(acts), Action: a, Err: err}
			se.Rollback = undo(k, acts[:i])
			return se
		}
	}
	return nil
}

func undo(k Kernel, done []plan.Action) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		inv := done[i].Inverse()
		if err := k.Do(inv); err != nil {
			errs = append(errs, fmt.Errorf("undo %q: %w", inv, err))
		}
	}
	return errors.Join(errs...)
}

// Counter wraps a Kernel and counts the writes that reach it.
type Counter struct {
	Kernel
	Writes int
}

func (c *Counter) Do(a plan.Action) error {
	c.Writes++
	return c.Kernel.Do(a)
}

// FailAt wraps a Kernel and fails the Nth write (1-based) before it reaches
// the kernel; later writes (the rollback) pass. Tests use it to prove that a
// failure at any step leaves the host as it was.
type FailAt struct {
	Kernel
	N, seen int
}

// ErrInjected is the error FailAt returns.
var ErrInjected = errors.New("injected failure")

func (f *FailAt) Do(a plan.Action) error {
	f.seen++
	if f.seen == f.N {
		return ErrInjected
	}
	return f.Kernel.Do(a)
}

// CrashAfter is a test hook: it wraps a Kernel and stops the process
// right after the Nth write (1-based) returns, whether that write worked
// or not, as a kill -9 would at that instant. guestnet wires it only when
// the environment says GUESTNET_CRASH_AFTER_WRITES=N, for tests that prove
// a crash at any step leaves a state the next apply or destroy completes.
type CrashAfter struct {
	Kernel
	N, seen int
	// Kill stops the process; nil sends it SIGKILL. Unit tests panic
	// instead and recover.
	Kill func()
}

func (c *CrashAfter) Do(a plan.Action) error {
	err := c.Kernel.Do(a)
	if c.seen++; c.seen == c.N {
		if c.Kill != nil {
			c.Kill()
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way: write nothing more
	}
	return err
}

var (
	_ Kernel = (*Counter)(nil)
	_ Kernel = (*FailAt)(nil)
	_ Kernel = (*CrashAfter)(nil)
)
