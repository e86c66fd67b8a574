package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/state"
)

// TestStateNotMovedAsideWhenOutOfFiles: a state file that cannot be
// opened because the daemon is out of file descriptors (a guest holding
// 22,000 DNS connections did that) is not damaged: it stays where it is.
// Before the fix keepState took the failed read for a corrupt file, moved
// it aside, then failed to write it back (out of descriptors still): a
// daemon dying then (it did: a nil dereference in mdlayher/socket v0.5.0
// under EMFILE) left no state file, and attach's ports and bindings were
// lost.
func TestStateNotMovedAsideWhenOutOfFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	st := state.State{Networks: map[string]state.Net{"default": {}}}
	if err := state.Save(path, st); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Engine: engine.New(nil, path), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), lastState: &st}

	// The lowest free descriptor number: a limit at it leaves none.
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	free := probe.Fd()
	probe.Close()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(free)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	_, openErr := os.Open(path)
	d.keepState()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if openErr == nil || !strings.Contains(openErr.Error(), "too many open files") {
		t.Fatalf("the test did not run out of descriptors: open gave %v", openErr)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	got, err := state.Load(path) // (a missing file loads as empty)
	if err != nil || len(names) != 1 || names[0] != "state.json" || len(got.Networks) != 1 {
		t.Errorf("after a read that failed for lack of descriptors: folder %v, state %+v %v; want state.json alone, as it was", names, got, err)
	}
}
