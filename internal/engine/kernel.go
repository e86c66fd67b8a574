package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/observe"
	"github.com/guestnet/guestnet/internal/plan"
)

// Kernel is the one seam between guestnet and a network namespace, both
// ways: everything the engine and the daemon read of the kernel, and every
// change they make, goes through it. The real namespace (NewLinux), the
// in-memory kernel of the tests (internal/fake), the write counter and the
// failure injectors implement it, so a test on the fake runs the same
// engine and daemon code that ships.
//
// Writes report the kernel's error as it is: whether an error means
// "already done" is decided once, above every Kernel, by apply.Run.
type Kernel interface {
	// Observe reads the whole namespace. With a hint whose generation
	// still holds, guestnet's own rules are not read back.
	Observe(hint *observe.Hint) (model.Host, error)
	// Do makes one change (one kernel write; an nft call is one
	// transaction).
	Do(a plan.Action) error
	// Learn adds and removes elements of the daemon's learned sets of
	// table bridge guestnet in one transaction.
	Learn(add, del model.Elems) error
	// Guard reads table bridge guestnet alone.
	Guard() (model.Guard, error)
	// NftGen is the namespace's nftables generation.
	NftGen() (uint32, error)
	// Links lists the links with name, index and master (Observe without
	// addresses, routes or rules).
	Links() ([]model.Link, error)
	// RouteGet names the interface the kernel would send dst out of, for
	// a packet from src arriving on iif ("" or "lo": locally generated).
	RouteGet(dst, src netip.Addr, iif string) (string, error)
	// FDB lists the bridges' forwarding databases.
	FDB() ([]netlink.Neigh, error)
	// Routes lists the main table's IPv4 routes (no links, no rules).
	Routes() ([]model.Route, error)
}

// linux is the Kernel of a real namespace: apply.Linux for writes,
// observe for reads, both through the namespace's handles.
type linux struct {
	ns *netns.NS
	nl *netlink.Handle
	w  *apply.Linux
}

// NewLinux returns the kernel of namespace ns, reached through handle nl.
func NewLinux(ns *netns.NS, nl *netlink.Handle) Kernel {
	return &linux{ns: ns, nl: nl, w: apply.NewLinux(ns, nl)}
}

func (k *linux) Observe(hint *observe.Hint) (model.Host, error) {
	return observe.Host(k.ns, k.nl, hint)
}

func (k *linux) Do(a plan.Action) error           { return k.w.Do(a) }
func (k *linux) Learn(add, del model.Elems) error { return apply.Learn(k.ns, add, del) }
func (k *linux) Guard() (model.Guard, error)      { return observe.Guard(k.ns) }
func (k *linux) NftGen() (uint32, error)          { return k.ns.NftGen() }

// Links is ip link show, names and masters only.
func (k *linux) Links() ([]model.Link, error) {
	ls, err := k.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]model.Link, 0, len(ls))
	for _, l := range ls {
		at := l.Attrs()
		out = append(out, model.Link{Name: at.Name, Index: at.Index, Kind: l.Type(), Master: names[at.MasterIndex]})
	}
	return out, nil
}

// RouteGet is: ip route get DST from SRC iif IIF
func (k *linux) RouteGet(dst, src netip.Addr, iif string) (string, error) {
	opts := &netlink.RouteGetOptions{}
	if iif != "" && iif != "lo" {
		l, err := k.nl.LinkByName(iif)
		if err != nil {
			return "", fmt.Errorf("find %s: %w", iif, err)
		}
		opts.IifIndex, opts.SrcAddr = l.Attrs().Index, src.AsSlice()
	}
	rs, err := k.nl.RouteGetWithOptions(dst.AsSlice(), opts)
	if err != nil {
		return "", err
	}
	if len(rs) == 0 {
		return "", fmt.Errorf("no route")
	}
	l, err := k.nl.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// FDB is: bridge fdb show
func (k *linux) FDB() ([]netlink.Neigh, error) { return k.nl.NeighList(0, unix.AF_BRIDGE) }

func (k *linux) Routes() ([]model.Route, error) {
	links, err := k.Links()
	if err != nil {
		return nil, err
	}
	return observe.Routes(k.nl, links)
}

// Counter wraps a Kernel and counts the writes that reach it (the
// daemon's BGP speaker writes through it too, beside applies: atomic).
type Counter struct {
	Kernel
	writes atomic.Int64
}

// Writes is the number of writes so far.
func (c *Counter) Writes() int { return int(c.writes.Load()) }

func (c *Counter) Do(a plan.Action) error {
	c.writes.Add(1)
	return c.Kernel.Do(a)
}

func (c *Counter) Learn(add, del model.Elems) error {
	c.writes.Add(1)
	return c.Kernel.Learn(add, del)
}

// FailAt wraps a Kernel and fails the Nth write (1-based; Do and Learn
// both count) before it reaches the kernel; later writes (the rollback)
// pass. Tests use it to prove that a failure at any step leaves the host
// as it was.
type FailAt struct {
	Kernel
	N, seen int
}

// ErrInjected is the error FailAt returns.
var ErrInjected = errors.New("injected failure")

func (f *FailAt) fail() bool { f.seen++; return f.seen == f.N }

func (f *FailAt) Do(a plan.Action) error {
	if f.fail() {
		return ErrInjected
	}
	return f.Kernel.Do(a)
}

func (f *FailAt) Learn(add, del model.Elems) error {
	if f.fail() {
		return ErrInjected
	}
	return f.Kernel.Learn(add, del)
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
	c.after()
	return err
}

func (c *CrashAfter) Learn(add, del model.Elems) error {
	err := c.Kernel.Learn(add, del)
	c.after()
	return err
}

func (c *CrashAfter) after() {
	if c.seen++; c.seen == c.N {
		if c.Kill != nil {
			c.Kill()
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way: write nothing more
	}
}

var (
	_ Kernel = (*linux)(nil)
	_ Kernel = (*Counter)(nil)
	_ Kernel = (*FailAt)(nil)
	_ Kernel = (*CrashAfter)(nil)
)
