// Package groupcommit writes the changes of concurrent callers together:
// one durable write (a lease store's commit and its disk syncs, an
// nftables transaction) for all the changes asked for while the previous
// one was in flight.
//
// bbolt's own DB.Batch closes a batch on a timer (MaxBatchDelay) even
// while the previous commit still holds the writer's lock: under load its
// batches stay small and queue one commit each behind that lock, so the
// wait grows with the queue. Here a batch is closed only when the writer
// is free to take it: its size follows the load, and a caller waits at
// most for the write in flight and its own.
package groupcommit

import "sync"

// Group gathers items of type T for one writer at a time. The zero value
// is ready to use; Write must be the same function for every Do of a
// Group (the first one starts the writer).
type Group[T any] struct {
	mu      sync.Mutex
	pending []req[T]
	running bool
}

type req[T any] struct {
	item T
	done chan error
}

// Do hands item to write, with whatever items other callers hand over
// meanwhile, and returns once write has taken it: write's error for the
// whole group, or, when that failed for a group of several, the error of
// writing item alone (every item of a failed group is tried again alone,
// so that one bad item fails only its own caller).
func (g *Group[T]) Do(item T, write func([]T) error) error {
	r := req[T]{item: item, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, r)
	if !g.running {
		g.running = true
		go g.run(write)
	}
	g.mu.Unlock()
	return <-r.done
}

// run writes groups until none is pending.
func (g *Group[T]) run(write func([]T) error) {
	for {
		g.mu.Lock()
		batch := g.pending
		g.pending = nil
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		items := make([]T, len(batch))
		for i, r := range batch {
			items[i] = r.item
		}
		err := write(items)
		for _, r := range batch {
			if err != nil && len(batch) > 1 {
				r.done <- write([]T{r.item})
				continue
			}
			r.done <- err
		}
	}
}
