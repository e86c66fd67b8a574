package fake

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/observe"
)

// Observe returns a copy of the host: a later write does not change what
// a caller read. Like the real kernel's observe, it does not read its rules
// back when the hint's generation still holds: the ruleset is then only
// the hint's digest, and the plan must make do with that.
func (k *Kernel) Observe(hint *observe.Hint) (model.Host, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.readErr != nil {
		return model.Host{}, k.readErr
	}
	h := k.Host
	h.Links = slices.Clone(h.Links)
	for i := range h.Links {
		h.Links[i].Addrs = slices.Clone(h.Links[i].Addrs)
		h.Links[i].Brd = maps.Clone(h.Links[i].Brd)
		if x := h.Links[i].VXLAN; x != nil {
			c := *x
			h.Links[i].VXLAN = &c
		}
	}
	h.Routes = slices.Clone(h.Routes)
	h.RAUplinks = slices.Clone(h.RAUplinks)
	h.Ruleset = h.Ruleset.Clone()
	if hint.Trusts(k.gen) {
		h.Ruleset = model.Ruleset{Digest: hint.Sum}
	}
	return h, nil
}

// Guard returns the anti-spoofing table.
func (k *Kernel) Guard() (model.Guard, error) {
	h, err := k.Observe(nil)
	return h.Guard, err
}

// NftGen counts the nftables transactions made (rulesets, element updates,
// the guard table, learned bindings), as the kernel's generation does.
func (k *Kernel) NftGen() (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gen, nil
}

// Links lists the links.
func (k *Kernel) Links() ([]model.Link, error) {
	h, err := k.Observe(nil)
	return h.Links, err
}

// Routes is the fake's routing table.
func (k *Kernel) Routes() ([]model.Route, error) {
	h, err := k.Observe(nil)
	return h.Routes, err
}

// RouteGet picks the route with the longest prefix containing dst (the
// fake has one table and no policy routing; iif is not consulted).
func (k *Kernel) RouteGet(dst, _ netip.Addr, _ string) (string, error) {
	h, err := k.Observe(nil)
	if err != nil {
		return "", err
	}
	best := -1
	dev := ""
	for _, r := range h.Routes {
		if r.Dst.Contains(dst) && r.Dst.Bits() > best {
			best, dev = r.Dst.Bits(), r.Dev
		}
	}
	if best < 0 {
		return "", fmt.Errorf("route to %s: %w", dst, unix.ENETUNREACH)
	}
	return dev, nil
}

// FDB returns the forwarding-database entries SetFDB set.
func (k *Kernel) FDB() ([]netlink.Neigh, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.neighs), nil
}

// SetFDB sets what FDB returns.
func (k *Kernel) SetFDB(ns []netlink.Neigh) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.neighs = slices.Clone(ns)
}

// FailReads makes every read return err from now on (nil: read again).
func (k *Kernel) FailReads(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readErr = err
}

// Learn adds and removes learned bindings (and IPv6 claims) in one
// transaction; like the kernel, it fails when the table is not there or
// an element to delete is missing (nft add element of one already there
// is no error).
func (k *Kernel) Learn(add, del model.Elems) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if add.Len()+del.Len() == 0 {
		return nil
	}
	g := &k.Host.Guard
	if !g.On {
		return fmt.Errorf("nft set bridge guestnet learned: %w", unix.ENOENT)
	}
	have := g.LearnedElems()
	for _, b := range del.Binds {
		if !slices.Contains(have.Binds, b) {
			return fmt.Errorf("nft delete element learned %v: %w", b, unix.ENOENT)
		}
	}
	for _, c := range del.Claims6 {
		if !slices.ContainsFunc(g.Claims6, func(x model.Claim6) bool { return x.Port == c.Port && x.IP == c.IP }) {
			return fmt.Errorf("nft delete element claims6 %v: %w", c, unix.ENOENT)
		}
	}
	g.Claims6 = slices.DeleteFunc(g.Claims6, func(x model.Claim6) bool {
		return slices.ContainsFunc(del.Claims6, func(c model.Claim6) bool { return x.Port == c.Port && x.IP == c.IP })
	})
	g.Claims6 = append(g.Claims6, add.Claims6...)
	binds := slices.DeleteFunc(slices.Clone(have.Binds), func(b model.Bind) bool { return slices.Contains(del.Binds, b) })
	e := model.ElemsOf(append(binds, add.Binds...))
	g.LearnedPorts, g.Learned, g.LearnedMACs, g.LearnedPortMACs = e.Ports, e.Binds, e.MACs, e.PortMACs
	for _, p := range del.Guests6 {
		if !slices.Contains(g.LearnedGuests6, p) {
			return fmt.Errorf("nft delete element guests6_learned %q: %w", p, unix.ENOENT)
		}
	}
	g.LearnedGuests6 = slices.DeleteFunc(g.LearnedGuests6, func(p string) bool { return slices.Contains(del.Guests6, p) })
	g.LearnedGuests6 = append(g.LearnedGuests6, add.Guests6...)
	slices.Sort(g.LearnedGuests6)
	g.LearnedGuests6 = slices.Compact(g.LearnedGuests6)
	g.LearnedPrefixes6 = slices.DeleteFunc(g.LearnedPrefixes6, func(p model.PortPrefix) bool { return slices.Contains(del.Prefixes6, p) })
	g.LearnedPrefixes6 = model.SortPortPrefixes(append(g.LearnedPrefixes6, add.Prefixes6...))
	k.gen++
	return nil
}
