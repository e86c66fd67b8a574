package groupcommit

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

// TestGroupsWhileBusy: the items handed over while a write is in flight
// all go in the next write, together; each caller returns after the write
// that took its item.
func TestGroupsWhileBusy(t *testing.T) {
	var g Group[int]
	var mu sync.Mutex
	var writes [][]int
	first := make(chan struct{})
	release := make(chan struct{})
	write := func(items []int) error {
		mu.Lock()
		writes = append(writes, slices.Clone(items))
		n := len(writes)
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release // the first write is in flight while the others queue
		}
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); g.Do(0, write) }()
	<-first
	for i := 1; i <= 5; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); g.Do(i, write) }()
	}
	// Wait until the five are queued, then let the first write end.
	for {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 5 {
			break
		}
	}
	close(release)
	wg.Wait()
	if len(writes) != 2 {
		t.Fatalf("writes %v: want 2 (the first, then the five together)", writes)
	}
	slices.Sort(writes[1])
	if !slices.Equal(writes[0], []int{0}) || !slices.Equal(writes[1], []int{1, 2, 3, 4, 5}) {
		t.Fatalf("writes %v, want [[0] [1 2 3 4 5]]", writes)
	}
}

// TestBadItemFailsAlone: a group that fails is written again one item at
// a time; only the caller of the bad item gets an error.
func TestBadItemFailsAlone(t *testing.T) {
	var g Group[int]
	bad := errors.New("bad item")
	block := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	write := func(items []int) error {
		once.Do(func() { close(started); <-block })
		if slices.Contains(items, 13) {
			return bad
		}
		return nil
	}
	errs := make([]error, 4)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); errs[0] = g.Do(1, write) }()
	<-started
	for i, v := range []int{2, 13, 4} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i+1] = g.Do(v, write) }()
	}
	for {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 3 {
			break
		}
	}
	close(block)
	wg.Wait()
	for i, want := range []error{nil, nil, bad, nil} {
		if !errors.Is(errs[i], want) {
			t.Errorf("caller %d: err %v, want %v", i, errs[i], want)
		}
	}
}
