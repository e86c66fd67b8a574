package state

import (
	"path/filepath"
	"testing"
	"time"
)

// TestLockExcludes: a second holder (another open file, as in another
// process) waits until the first releases the lock.
func TestLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "netns", "x", "state.json")
	unlock, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time)
	go func() {
		u, err := Lock(path)
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		u()
	}()
	select {
	case <-got:
		t.Fatal("a second holder took the lock while the first held it")
	case <-time.After(100 * time.Millisecond):
	}
	released := time.Now()
	unlock()
	if at := <-got; at.Before(released) {
		t.Fatal("the second holder went ahead before the release")
	}
}
