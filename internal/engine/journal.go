package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/state"
)

// journal makes the kernel writes acts with the state file at path kept
// ahead of them (write-ahead), so that a kill -9 at any instant leaves a
// state that names everything the writes may have left on the host:
//
//  1. intent is saved before the first write;
//  2. the writes are made (apply.Run: a failed one undoes the earlier ones);
//  3. on success, done adjusts target and target is saved; if every write
//     was undone after a failure, old is saved back.
//
// A failure to save target undoes the writes too (state and host never
// part); intent stays on disk, and it covers the host as it was.
// Nothing is written when acts is empty and target equals old.
//
// Between the writes, states are compared by reflect.DeepEqual, not by
// their JSON (each encoding of 1,000 networks costs milliseconds): equal
// values always encode alike, and two that differ only in form (a nil and
// an empty list) merely cost a save that changes nothing on disk.
func journal(k apply.Writer, path string, old, intent, target state.State, acts []plan.Action, done func(*state.State)) error {
	if len(acts) == 0 {
		if sameState(old, target) {
			return nil // a no-op writes nothing at all
		}
		return state.Save(path, target)
	}
	_, statErr := os.Stat(path)
	restore := func() error { return state.Save(path, old) }
	if errors.Is(statErr, fs.ErrNotExist) {
		restore = func() error { return os.Remove(path) } // as it was: no file
	}
	changed := !reflect.DeepEqual(old, intent)
	if changed {
		if err := state.Save(path, intent); err != nil {
			return fmt.Errorf("record what is about to change (nothing was changed): %w", err)
		}
	}
	if err := apply.Run(k, acts); err != nil {
		var se *apply.StepError
		if errors.As(err, &se) && se.Rollback == nil && changed {
			if serr := restore(); serr != nil {
				return fmt.Errorf("%w; and recording that it was undone failed (the next apply finishes the job): %v", err, serr)
			}
		}
		return err
	}
	if done != nil {
		done(&target)
	}
	if reflect.DeepEqual(intent, target) {
		return nil // already on disk (or, with intent equal to old, never changed)
	}
	if err := state.Save(path, target); err != nil {
		rev := make([]plan.Action, len(acts))
		for i, a := range acts {
			rev[len(acts)-1-i] = a.Inverse()
		}
		if rerr := apply.Run(k, rev); rerr != nil {
			return fmt.Errorf("%w; and undoing the kernel changes failed: %v", err, rerr)
		}
		return fmt.Errorf("%w (kernel changes undone)", err)
	}
	return nil
}

// observeError is a failed read of the host: someone changing the host
// while guestnet reads it can cause it, so it is worth another try.
type observeError struct{ err error }

func (e *observeError) Error() string { return e.err.Error() }
func (e *observeError) Unwrap() error { return e.err }

// retryable reports whether err came from the kernel: a write that failed
// (and was undone), or a read of the host. Netlink and nftables fail this
// way for a moment while someone else changes the host (a `nft flush
// ruleset` between guestnet's read and its write turns its element update
// into ENOENT). User errors (an unknown network, a missing interface, a
// spec the host contradicts) are not retried.
func retryable(err error) bool {
	var se *apply.StepError
	var oe *observeError
	return errors.As(err, &se) || errors.As(err, &oe)
}

// Tries bounds the retries of attach, detach and drift repair; the waits
// between tries double from firstWait (10+20+40+80 ms in all).
const (
	Tries     = 5
	firstWait = 10 * time.Millisecond
)

// retry runs try until it succeeds, fails with an error that is not
// retryable, or has run Tries times. Each try must observe and plan anew,
// so that it acts on the host as it is then. Each retry is logged.
func (e *Engine) retry(ctx context.Context, what string, try func() error) error {
	wait := firstWait
	for n := 1; ; n++ {
		err := try()
		if err == nil || !retryable(err) || n == Tries {
			return err
		}
		e.log().Warn("retrying", "what", what, "try", n, "of", Tries, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (stopped retrying: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (e *Engine) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// sameState reports whether a and b are the same state on disk: equal
// values first (no encoding), else equal JSON. A no-op apply asks this
// once, and the file is not rewritten when the answer is yes.
func sameState(a, b state.State) bool {
	return reflect.DeepEqual(a, b) || sameJSON(a, b)
}
