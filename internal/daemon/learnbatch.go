package daemon

import (
	"github.com/guestnet/guestnet/internal/groupcommit"
	"github.com/guestnet/guestnet/internal/model"
)

// learnBatch writes the bindings of leases granted at the same time in
// one nftables transaction, as the lease store syncs them in one commit:
// while one transaction is in flight, the bindings asked for meanwhile
// gather and go in the next (groupcommit). Each caller returns once its
// own bindings are in the kernel (or failed), before its ACK leaves. A
// burst of new guests then costs the kernel a few transactions, not one
// per lease, and moves the ruleset's generation (which the drift watcher
// follows) as little. The zero value is ready.
type learnBatch struct {
	g groupcommit.Group[[]model.Bind]
}

// add writes binds with write, in one transaction with whatever other
// callers add meanwhile.
func (b *learnBatch) add(binds []model.Bind, write func(add model.Elems) error) error {
	return b.g.Do(binds, func(groups [][]model.Bind) error {
		var all []model.Bind
		for _, bs := range groups {
			all = append(all, bs...)
		}
		return write(model.ElemsOf(all))
	})
}
