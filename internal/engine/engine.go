// Package engine is guestnet as a library: it wires spec, observe, plan and
// apply for one network namespace and keeps the state file in step with the
// kernel. It owns the kernel seam (Kernel), through which it and the daemon
// read and change the namespace. The CLI and the daemon are thin layers
// over its verbs, which take the state lock themselves.
package engine

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// Engine acts on one namespace, through its Kernel. Its verbs take the
// namespace's state lock themselves (Converge, Repair, Destroy, Attach,
// Detach); Plan and the reads do not lock.
type Engine struct {
	// NS is the namespace when it is a real one (nil on a fake kernel):
	// the daemon opens its sockets in it.
	NS        *netns.NS
	nl        *netlink.Handle
	StatePath string
	// Kernel is the namespace, both ways: every read and every write.
	// Open sets it to the real namespace behind a write counter; tests
	// wrap it (FailAt, CrashAfter) or use internal/fake.
	Kernel  Kernel
	counter *Counter
	// Log receives retries after kernel errors; nil discards them.
	Log *slog.Logger
	// Planned, when set, is shown each plan of Converge and Destroy
	// before its first write (the CLI prints it).
	Planned func(plan.Plan)
	// Locked, when set, is called by Converge and Repair as soon as they
	// hold the state lock, before they read the state (the daemon writes
	// back a state file removed under it).
	Locked func()

	ownMu  sync.Mutex
	ownGen map[uint32]bool // generations made by Learn alone
}

// Open targets the named namespace ("" for the current one) with state
// kept under stateDir.
func Open(nsName, stateDir string) (*Engine, error) {
	ns, err := netns.Open(nsName)
	if err != nil {
		return nil, err
	}
	nl, err := ns.Netlink()
	if err != nil {
		ns.Close()
		return nil, err
	}
	e := New(NewLinux(ns, nl), state.Path(stateDir, nsName))
	e.NS, e.nl = ns, nl
	return e, nil
}

// New returns an engine over kernel k (a fake one, in tests) with its
// state file at statePath.
func New(k Kernel, statePath string) *Engine {
	c := &Counter{Kernel: k}
	return &Engine{StatePath: statePath, Kernel: c, counter: c}
}

// Close releases the namespace handles.
func (e *Engine) Close() {
	if e.nl != nil {
		e.nl.Close()
	}
	if e.NS != nil {
		e.NS.Close()
	}
}

// Name is the namespace's name ("" for the current one or a fake).
func (e *Engine) Name() string {
	if e.NS == nil {
		return ""
	}
	return e.NS.Name
}

// Writes is how many kernel writes this engine has made.
func (e *Engine) Writes() int { return e.counter.Writes() }

// Observe reads the whole namespace.
func (e *Engine) Observe(ctx context.Context) (model.Host, error) { return e.observe(ctx, nil) }

func (e *Engine) observe(ctx context.Context, hint *observe.Hint) (model.Host, error) {
	if err := ctx.Err(); err != nil {
		return model.Host{}, err
	}
	h, err := e.Kernel.Observe(hint)
	if err != nil {
		return h, &observeError{err}
	}
	return h, nil
}

// diff observes and plans. It first trusts the state's ruleset mark (no
// rule read-back when the nftables generation has not moved): the plan
// then renders the applied networks again, and if their digest is the
// mark's, that is the old ruleset its delta starts from. Only if the plan
// replaces the table with the old rules unknown does it read them back,
// which the undo journal needs.
func (e *Engine) diff(ctx context.Context, st state.State, check func(model.Host) error, want func() []model.Network) (plan.Plan, error) {
	var hint *observe.Hint
	if st.Nft != nil {
		hint = &observe.Hint{Gen: st.Nft.Gen, Sum: st.Nft.Sum, Own: e.own}
	}
	for {
		var gen *uint32 // see nftMark
		if g, err := e.Kernel.NftGen(); err == nil {
			gen = &g
		}
		h, err := e.observe(ctx, hint)
		if err != nil {
			return plan.Plan{}, err
		}
		// A bridge a kill -9 left half made is not the user's: Diff
		// deletes it first, so check the host as it is after that.
		if err := check(withoutHalfMade(st, h)); err != nil {
			return plan.Plan{}, err
		}
		p, err := plan.Diff(want(), st, h)
		p.ObservedGen = gen
		if err != nil || hint == nil || h.Ruleset.Digest == "" || !slices.ContainsFunc(p.Actions, needsRules) {
			return p, err
		}
		hint = nil
	}
}

// onlyOwn reports whether every commit from generation from to to was one
// of the daemon's own leased-binding writes (Learn), which touch only the
// anti-spoofing sets and never guestnet's table.
func (e *Engine) onlyOwn(from, to uint32) bool {
	if to-from > 64 {
		return false
	}
	for i := uint32(1); i <= to-from; i++ { // uint32: a wrapped counter too
		if !e.own(from + i) {
			return false
		}
	}
	return true
}

func (e *Engine) own(gen uint32) bool {
	e.ownMu.Lock()
	defer e.ownMu.Unlock()
	return e.ownGen[gen]
}

// Learn changes the daemon's leased bindings (sets "learned",
// "learned_ports", "learned_macs" and "learned_port_macs" of the
// anti-spoofing table). When its commit is the only one in between, the
// generation it makes is remembered as guestnet's own, so that the next
// plan can still skip reading back guestnet's unchanged rules.
func (e *Engine) Learn(ctx context.Context, add, del model.Elems) error {
	if add.Len()+del.Len() == 0 {
		return nil // nothing to write
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g0, err0 := e.Kernel.NftGen()
	if err := e.Kernel.Learn(add, del); err != nil {
		return err
	}
	if g1, err := e.Kernel.NftGen(); err == nil && err0 == nil && g1 == g0+1 {
		e.ownMu.Lock()
		if e.ownGen == nil || len(e.ownGen) > 1<<14 {
			e.ownGen = map[uint32]bool{} // forgetting only costs one read-back
		}
		e.ownGen[g1] = true
		e.ownMu.Unlock()
	}
	return nil
}

func withoutHalfMade(st state.State, h model.Host) model.Host {
	h, _ = plan.HalfMade(st, h)
	return h
}

func isNft(a plan.Action) bool { return a.IsNft() }

// needsRules reports whether a is a full replace whose undo lacks the old
// rules (observe vouched for them by digest only).
func needsRules(a plan.Action) bool {
	return a.Op == plan.OpNft && a.OldRules != nil && a.OldRules.Digest != ""
}

// lock serialises read-plan-write of this namespace's state between
// processes (the CLI and the daemon); every verb that writes holds it
// from its plan to its last write.
func (e *Engine) lock() (unlock func(), err error) { return state.Lock(e.StatePath) }

// State reads the state file.
func (e *Engine) State() (state.State, error) { return state.Load(e.StatePath) }

// Plan checks the spec against the host and returns what Converge would
// do (a dry run: it takes no lock and writes nothing).
func (e *Engine) Plan(ctx context.Context, s *spec.Spec) (plan.Plan, error) {
	st, err := e.State()
	if err != nil {
		return plan.Plan{}, err
	}
	return e.diff(ctx, st, s.CheckHost, s.Models)
}

// PlanDestroy returns the plan that removes the named networks and keeps
// every other network guestnet applied (a dry run). Names guestnet owns
// nothing of are returned as unknown: destroy is idempotent, so they are
// not an error.
func (e *Engine) PlanDestroy(ctx context.Context, names []string) (p plan.Plan, unknown []string, err error) {
	st, err := e.State()
	if err != nil {
		return p, nil, err
	}
	var keep []model.Network
	for _, n := range st.Sorted() {
		if !slices.Contains(names, n.Name) {
			keep = append(keep, n)
		}
	}
	// Known names are those in the state or owning a link: read off the
	// host that diff observes anyway.
	known := func(h model.Host) error {
		unknown = nil
		for _, n := range names {
			_, inState := st.Networks[n]
			if !inState && !slices.ContainsFunc(h.Links, func(l model.Link) bool { return l.Owner() == n }) {
				unknown = append(unknown, n)
			}
		}
		return nil
	}
	p, err = e.diff(ctx, st, known, func() []model.Network { return keep })
	return p, unknown, err
}

// Converge makes the host carry exactly the networks of spec s: under the
// lock it plans and applies the plan (apply, and the daemon's reload). It
// returns the plan it ran, also when running it failed.
func (e *Engine) Converge(ctx context.Context, s *spec.Spec) (plan.Plan, error) {
	unlock, err := e.lock()
	if err != nil {
		return plan.Plan{}, err
	}
	defer unlock()
	if e.Locked != nil {
		e.Locked()
	}
	return e.converge(ctx, s)
}

func (e *Engine) converge(ctx context.Context, s *spec.Spec) (plan.Plan, error) {
	st, err := e.State() // read once, for the plan and the journal (1,000 networks: ~20 ms each)
	if err != nil {
		return plan.Plan{}, err
	}
	p, err := e.diff(ctx, st, s.CheckHost, s.Models)
	if err != nil {
		return p, err
	}
	if err := ctx.Err(); err != nil {
		return p, err
	}
	if e.Planned != nil {
		e.Planned(p)
	}
	return p, e.commitFrom(st, p, e.nftMark(p))
}

// Repair is Converge trying again (observing and planning anew) when the
// kernel fails it: the daemon's drift repair. Each try holds the lock.
func (e *Engine) Repair(ctx context.Context, s *spec.Spec) (plan.Plan, error) {
	unlock, err := e.lock()
	if err != nil {
		return plan.Plan{}, fmt.Errorf("drift check: %w", err)
	}
	defer unlock()
	if e.Locked != nil {
		e.Locked()
	}
	var p plan.Plan
	err = e.retry(ctx, "drift repair", func() error {
		var err error
		p, err = e.converge(ctx, s)
		return err
	})
	return p, err
}

// Destroy removes the named networks (see PlanDestroy) under the lock.
func (e *Engine) Destroy(ctx context.Context, names []string) (p plan.Plan, unknown []string, err error) {
	unlock, err := e.lock()
	if err != nil {
		return p, nil, err
	}
	defer unlock()
	if p, unknown, err = e.PlanDestroy(ctx, names); err != nil {
		return p, unknown, err
	}
	return p, unknown, e.apply(ctx, p)
}

// apply runs a plan and records the state it reaches, write-ahead (see
// journal): before the first kernel write the state names everything of
// both the old and the new state, so a kill -9 at any step leaves a state
// from which the next apply or destroy finishes the job. If the final state
// cannot be saved the kernel changes are undone too: state and host never
// part. The caller holds the lock.
func (e *Engine) apply(ctx context.Context, p plan.Plan) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.Planned != nil {
		e.Planned(p)
	}
	return e.commit(p, e.nftMark(p))
}

// commit runs p through the journal; done adjusts the state to record
// once every write is made.
func (e *Engine) commit(p plan.Plan, done func(*state.State)) error {
	old, err := e.State()
	if err != nil {
		return err
	}
	return e.commitFrom(old, p, done)
}

// commitFrom is commit with the state as read under the lock already.
func (e *Engine) commitFrom(old state.State, p plan.Plan, done func(*state.State)) error {
	if err := journal(e.Kernel, e.StatePath, old, state.Intent(old, p.State), p.State, p.Actions, done); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

// nftMark reads the ruleset generation before p runs and returns what
// sets the state's ruleset mark after it: the generation reached, if p's
// nftables transactions (guestnet's table, its anti-spoofing table) were
// the only commits in between, and the digest of guestnet's table then:
// the one p wrote, or, when p wrote only the anti-spoofing table, the one
// the old mark vouched for at the start.
func (e *Engine) nftMark(p plan.Plan) func(*state.State) {
	writes, nft := uint32(0), -1
	for i, a := range p.Actions {
		if isNft(a) || a.Op == plan.OpGuard {
			writes++
		}
		if isNft(a) && nft < 0 {
			nft = i
		}
	}
	if writes == 0 {
		return nil
	}
	g0, gerr := e.Kernel.NftGen()
	if og := p.ObservedGen; gerr == nil && og != nil && !e.onlyOwn(*og, g0) {
		// Someone committed between the observation and now: the plan did
		// not see it, and a delta leaves it in place. Vouch for nothing, so
		// the next plan reads the table back.
		gerr = fmt.Errorf("nftables generation moved from %d to %d while planning", *og, g0)
	}
	return func(target *state.State) {
		old := target.Nft
		target.Nft = nil
		g1, err := e.Kernel.NftGen()
		if err != nil || gerr != nil || g1 != g0+writes {
			return
		}
		sum := ""
		switch {
		case nft >= 0:
			sum = p.Actions[nft].NftSum() // "" with no rules: nothing to skip reading
		case old != nil && (&observe.Hint{Gen: old.Gen, Sum: old.Sum, Own: e.own}).Trusts(g0):
			sum = old.Sum
		}
		if sum != "" {
			target.Nft = &state.NftMark{Gen: g1, Sum: sum}
		}
	}
}

// Network returns an applied network by name.
func (e *Engine) Network(name string) (model.Network, error) {
	st, err := e.State()
	if err != nil {
		return model.Network{}, err
	}
	n, ok := st.Networks[name]
	if !ok {
		return model.Network{}, fmt.Errorf("no network %q has been applied here (state %s)", name, e.StatePath)
	}
	return n.Network, nil
}

// Attach puts iface into a network's bridge, and binds it to addresses
// when o.Bind says so. Kernel errors are retried (see retry).
func (e *Engine) Attach(ctx context.Context, network, iface string, o plan.AttachOptions) ([]plan.Action, error) {
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var acts []plan.Action
	err = e.retry(ctx, fmt.Sprintf("attach %s to %s", iface, network), func() (err error) {
		acts, err = e.attach(ctx, network, iface, o)
		return err
	})
	return acts, err
}

func (e *Engine) attach(ctx context.Context, network, iface string, o plan.AttachOptions) ([]plan.Action, error) {
	n, err := e.Network(network)
	if err != nil {
		return nil, err
	}
	if o.Bind != nil && !n.Guarded() {
		return nil, fmt.Errorf("attach %s to %s --ip/--mac: the network has no anti-spoofing (mode %s, anti_spoofing: false or mode open), so a binding would not be enforced", iface, network, n.Mode)
	}
	h, err := e.Observe(ctx)
	if err != nil {
		return nil, err
	}
	acts, err := plan.Attach(n, iface, h, o)
	if err != nil {
		return nil, err
	}
	acts, err = e.changePort(network, iface, true, o.Bind, h, acts)
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", iface, network, err)
	}
	return acts, nil
}

// Detach takes iface out of a network's bridge. Kernel errors are retried.
func (e *Engine) Detach(ctx context.Context, network, iface string) ([]plan.Action, error) {
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var acts []plan.Action
	err = e.retry(ctx, fmt.Sprintf("detach %s from %s", iface, network), func() (err error) {
		acts, err = e.detach(ctx, network, iface)
		return err
	})
	return acts, err
}

func (e *Engine) detach(ctx context.Context, network, iface string) ([]plan.Action, error) {
	n, err := e.Network(network)
	if err != nil {
		return nil, err
	}
	h, err := e.Observe(ctx)
	if err != nil {
		return nil, err
	}
	acts, err := e.changePort(network, iface, false, nil, h, downFirst(plan.Detach(n, iface, h)))
	if err != nil {
		return nil, fmt.Errorf("detach %s from %s: %w", iface, network, err)
	}
	return acts, nil
}

// downFirst puts a detach's "link down" before its "nomaster". The state
// forgets the port before the writes (journal), so a detach killed between
// them leaves what the next detach can finish: a port still in the bridge,
// but down. The other order left a port out of the bridge and up, which a
// second detach does not touch ("nothing to do": it cannot tell that port
// from any other of the host's links), and an up port outside the bridge
// lets its guest talk to the host's own stack (ARP for the host's
// addresses, IPv6 link-local) past the bridge's rules.
func downFirst(acts []plan.Action) []plan.Action {
	out := slices.Clone(acts)
	slices.SortStableFunc(out, func(a, b plan.Action) int {
		return cmp.Compare(downRank(a), downRank(b))
	})
	return out
}

func downRank(a plan.Action) int {
	if a.Op == plan.OpLinkDown {
		return 0
	}
	return 1
}

// changePort records an attached interface (and its binding) in the state,
// or forgets it, so that a re-created bridge gets its ports back, and makes
// the kernel writes acts together with the anti-spoofing update the new
// bindings need. The state is written first (journal): after a kill -9 the
// next apply finishes an attach (it puts recorded ports back into their
// bridge and binds them), and never re-attaches a port being detached.
// An attach binds the port before it joins the bridge, so a bound guest's
// first frame is already checked; a detach unbinds it after it left.
func (e *Engine) changePort(network, iface string, add bool, bind *model.PortBind, h model.Host, acts []plan.Action) ([]plan.Action, error) {
	old, err := e.State()
	if err != nil {
		return nil, err
	}
	st := old.Clone()
	n, ok := st.Networks[network]
	if !ok {
		return nil, fmt.Errorf("no network %q has been applied here (state %s)", network, e.StatePath)
	}
	if add && !slices.Contains(n.Ports, iface) {
		n.Ports = append(n.Ports, iface)
	}
	if !add {
		n.Ports = slices.DeleteFunc(n.Ports, func(p string) bool { return p == iface })
		delete(n.Binds, iface)
	}
	if bind != nil {
		if n.Binds == nil {
			n.Binds = map[string]model.PortBind{}
		}
		n.Binds[iface] = *bind
	}
	st.Networks[network] = n
	guard := plan.GuardFor(st, h)
	all := append(slices.Clone(acts), guard...)
	if add {
		all = append(slices.Clone(guard), acts...)
	}
	if err := journal(e.Kernel, e.StatePath, old, st, st, all, nil); err != nil {
		return nil, err
	}
	return all, nil
}

func sameJSON(a, b state.State) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// LinkIndex returns the ifindex of a link in the namespace.
func (e *Engine) LinkIndex(name string) (int, error) {
	ls, err := e.Kernel.Links()
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", name, err)
	}
	for _, l := range ls {
		if l.Name == name {
			return l.Index, nil
		}
	}
	return 0, fmt.Errorf("find %s: %w", name, unix.ENODEV)
}

// RouteGet asks the kernel which interface it would send dst out of, for a
// packet from src arriving on iif ("" or "lo": locally generated).
// Equivalent to: ip route get DST from SRC iif IIF
func (e *Engine) RouteGet(dst, src netip.Addr, iif string) (string, error) {
	return e.Kernel.RouteGet(dst, src, iif)
}
