package apply

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
	"github.com/guestnet/guestnet/internal/observe"
)

func guardTable() *nftables.Table {
	return &nftables.Table{Name: model.Table, Family: nftables.TableFamilyBridge}
}

// keyTypes are nft's data types of the guard's set key types.
var keyTypes = map[string]nftables.SetDatatype{
	"ifname": nftables.TypeIFName, "ether_addr": nftables.TypeEtherAddr,
	"ipv4_addr": nftables.TypeIPAddr, "ipv6_addr": nftables.TypeIP6Addr,
	"ether_type": nftables.TypeEtherType, "inet_proto": nftables.TypeInetProto,
}

// guardSets are the sets of the guard table, by name, as its description
// (model.GuardTableOf) declares them.
func guardSets(t *nftables.Table) map[string]*nftables.Set {
	sets := map[string]*nftables.Set{}
	for _, d := range model.GuardTableOf(model.GuardFamily).Sets {
		s := &nftables.Set{Table: t, Name: d.Name, Interval: d.Interval, Size: uint32(d.Size)}
		if len(d.Key) == 1 {
			s.KeyType = keyTypes[d.Key[0]]
			if d.Key[0] == "ifname" {
				s.KeyByteOrder = binaryutil.NativeEndian
			}
		} else {
			var types []nftables.SetDatatype
			for _, k := range d.Key {
				types = append(types, keyTypes[k])
			}
			s.KeyType, s.Concatenation = nftables.MustConcatSetType(types...), true
		}
		if d.Timeout > 0 {
			s.Dynamic, s.HasTimeout, s.Timeout = true, true, d.Timeout
		}
		sets[d.Name] = s
	}
	return sets
}

// guard makes table bridge guestnet match want in one transaction. An
// intact table only has its declared elements changed; the learned ones,
// the daemon's, stay. Equivalent to: nft -f FILE, or nft add/delete element.
func (k *Linux) guard(want, old model.Guard) error {
	c, err := k.ns.Nft(1<<20 + (want.Declared().Len()+old.Declared().Len())<<8)
	if err != nil {
		return err
	}
	t := guardTable()
	sets := guardSets(t)
	switch {
	case old.On && !old.Broken && want.On:
		add, del := model.DiffElems(old.Declared(), want.Declared())
		if err := queueElems(c.SetDeleteElements, sets, model.DeclaredSets, del); err != nil {
			return err
		}
		if err := queueElems(c.SetAddElements, sets, model.DeclaredSets, add); err != nil {
			return err
		}
	default:
		if old.On {
			c.DelTable(t)
		}
		if want.On {
			if err := createGuard(c, t, sets, want); err != nil {
				return err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft table bridge %s: %w", model.Table, err)
	}
	return nil
}

func createGuard(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set, g model.Guard) error {
	c.AddTable(t)
	for _, name := range model.GuardSets {
		if err := c.AddSet(sets[name], nil); err != nil {
			return fmt.Errorf("nft add set bridge %s %s: %w", model.Table, name, err)
		}
	}
	if err := queueElems(c.SetAddElements, sets, model.DeclaredSets, g.Declared()); err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	var chains []*nftables.Chain
	for _, d := range model.GuardTableOf(model.GuardFamily).Chains {
		ch := &nftables.Chain{Name: d.Name, Table: t}
		switch d.Hook {
		case "prerouting":
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter,
				nftables.ChainHookPrerouting, nftables.ChainPriorityRef(-200), &accept
		case "postrouting":
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter,
				nftables.ChainHookPostrouting, nftables.ChainPriorityRef(-200), &accept
		}
		chains = append(chains, c.AddChain(ch))
	}
	rules := nft.GuardChains()
	for _, ch := range chains {
		for _, exprs := range rules[ch.Name] {
			for _, e := range exprs {
				switch x := e.(type) { // sets made in this same transaction
				case *expr.Lookup:
					x.SetID = sets[x.SetName].ID
				case *expr.Dynset:
					x.SetID = sets[x.SetName].ID
				}
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
		}
	}
	return nil
}

// queueElems queues one owner's elements for its sets (names in the
// order of model.Elems' fields), in chunks; bindings get their range ends
// when their set holds intervals.
func queueElems(op func(*nftables.Set, []nftables.SetElement) error, sets map[string]*nftables.Set, names [4]string, e model.Elems) error {
	var ports, binds, macs, owners []nftables.SetElement
	for _, p := range e.Ports {
		ports = append(ports, nftables.SetElement{Key: nft.PortKey(p)})
	}
	v4, v6 := model.SplitBinds(e.Binds)
	for _, b := range v4 {
		el := nftables.SetElement{}
		el.Key, el.KeyEnd = nft.GuardKey(b)
		if !sets[names[1]].Interval {
			el.KeyEnd = nil
		}
		binds = append(binds, el)
	}
	for _, m := range e.MACs {
		k, err := nft.MACKey(m)
		if err != nil {
			return err
		}
		macs = append(macs, nftables.SetElement{Key: k})
	}
	for _, p := range e.PortMACs {
		k, err := nft.PortMACKey(p)
		if err != nil {
			return err
		}
		owners = append(owners, nftables.SetElement{Key: k})
	}
	queue := map[string][]nftables.SetElement{names[0]: ports, names[1]: binds, names[2]: macs, names[3]: owners}
	var guests6, prefixes6 []nftables.SetElement
	for _, b := range e.Guests6 {
		guests6 = append(guests6, nftables.SetElement{Key: nft.PortKey(b)})
	}
	for _, p := range e.Prefixes6 {
		el := nftables.SetElement{}
		el.Key, el.KeyEnd = nft.PrefixKey(p)
		prefixes6 = append(prefixes6, el)
	}
	if names == model.LearnedSets { // the daemon's first-come ports
		queue[model.GuardLearnedGuests6], queue[model.GuardLearnedPrefixes6] = guests6, prefixes6
	}
	if names == model.DeclaredSets { // the other IPv6 sets are declared only
		var bound6, ports6, held6 []nftables.SetElement
		for _, b := range v6 {
			el := nftables.SetElement{}
			el.Key, el.KeyEnd = nft.GuardKey(b)
			bound6 = append(bound6, el)
		}
		for _, p := range e.Ports6 {
			ports6 = append(ports6, nftables.SetElement{Key: nft.PortKey(p)})
		}
		var macPorts []nftables.SetElement
		for _, p := range e.MACPorts {
			macPorts = append(macPorts, nftables.SetElement{Key: nft.PortKey(p)})
		}
		queue[model.GuardMACPorts] = macPorts
		for _, a := range e.Held6 {
			held6 = append(held6, nftables.SetElement{Key: nft.AddrKey(a)})
		}
		queue[model.GuardBound6], queue[model.GuardPorts6], queue[model.GuardHeld6] = bound6, ports6, held6
		queue[model.GuardGuests6], queue[model.GuardPrefixes6] = guests6, prefixes6
		var vxPorts, vxGateways, vxMACs []nftables.SetElement
		for _, p := range e.VXLANPorts {
			vxPorts = append(vxPorts, nftables.SetElement{Key: nft.PortKey(p)})
		}
		for _, a := range e.VXLANGateways {
			k, err := nft.Addr4Key(a)
			if err != nil {
				return err
			}
			vxGateways = append(vxGateways, nftables.SetElement{Key: k})
		}
		for _, m := range e.VXLANMACs {
			k, err := nft.MACKey(m)
			if err != nil {
				return err
			}
			vxMACs = append(vxMACs, nftables.SetElement{Key: k})
		}
		queue[model.GuardVXLANPorts], queue[model.GuardVXLANGateways], queue[model.GuardVXLANMACs] = vxPorts, vxGateways, vxMACs
	} else if len(v6) > 0 {
		return fmt.Errorf("nft set %s: IPv6 bindings are declared only (attach --ip), not learned", names[1])
	}
	for _, name := range model.GuardSets { // in a fixed order
		els, s := queue[name], sets[name]
		for len(els) > 0 {
			n := min(len(els), elementsPerMessage)
			if err := op(s, els[:n]); err != nil {
				return fmt.Errorf("nft set %s elements: %w", s.Name, err)
			}
			els = els[n:]
		}
	}
	return nil
}

// Learn adds and removes elements of the daemon's own sets (learned,
// learned_ports, learned_macs, learned_port_macs, guests6_learned,
// prefixes6_learned, and claims: claims6 and claimed6) in one transaction.
// Equivalent to: nft add/delete element bridge guestnet learned { ... }
func Learn(ns *netns.NS, add, del model.Elems) error {
	if add.Len()+del.Len() == 0 {
		return nil
	}
	c, err := ns.Nft(1<<20 + (add.Len()+del.Len())<<8)
	if err != nil {
		return err
	}
	sets := guardSets(guardTable())
	if err := queueElems(c.SetDeleteElements, sets, model.LearnedSets, del); err != nil {
		return err
	}
	if err := queueElems(c.SetAddElements, sets, model.LearnedSets, add); err != nil {
		return err
	}
	if err := queueClaims(c, sets, add.Claims6, del.Claims6); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft set bridge %s %s: %w", model.Table, model.GuardLearned, err)
	}
	return nil
}

// ErrHeld6 is returned by ClaimLease6 for an address another port holds
// (by claim or by attach --ip): the DHCPv6 server must not lease it there.
var ErrHeld6 = errors.New("the address is held by another port")

// ClaimLease6 binds a DHCPv6 lease's address to the port the client asked
// from, for the lease's valid lifetime: it becomes the port's claim (sets
// claims6 and claimed6) as if the port had claimed it by duplicate address
// detection, so that no other port takes it while the guest is quiet. Each
// packet from the address then refreshes the claim to model.ClaimMemory
// (the kernel's update sets the set's timeout), so a lease protects its
// address for its whole lifetime only until its first packet; a claim
// after that lasts while the guest talks. The MAC is not part of a claim
// (first-come claims are by port); it is taken for the log and the
// caller's symmetry with DHCPv4's leaseBinds. A lifetime of 0 releases the
// claim (a RELEASE or DECLINE, or an expiry the server notices).
// Equivalent to: nft add element bridge guestnet claims6 { "PORT" . ADDR timeout LIFETIME }
//
// The daemon makes the same claim through Engine.Learn (daemon/guard.go,
// claims6); this form, for a namespace without a daemon, serves the e2e
// matrix (TestAntiSpoofing6).
func ClaimLease6(ns *netns.NS, port, mac string, addr netip.Addr, lifetime time.Duration) error {
	if !addr.Is6() || addr.Is4In6() {
		return fmt.Errorf("claim %s on port %s (MAC %s): not an IPv6 address", addr, port, mac)
	}
	c, err := ns.Nft(1 << 20)
	if err != nil {
		return err
	}
	sets := guardSets(guardTable())
	cl := []model.Claim6{{Port: port, IP: addr, Left: lifetime}}
	if lifetime <= 0 {
		if err := queueClaims(c, sets, nil, cl); err != nil {
			return err
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("release claim of %s on port %s: %w", addr, port, err)
		}
		return nil
	}
	g, err := observe.Guard(ns)
	if err != nil {
		return err
	}
	if holder, by := g.HolderOf(addr, port); holder != "" {
		return fmt.Errorf("claim %s for port %s (MAC %s): %w: port %s (by %s)", addr, port, mac, ErrHeld6, holder, by)
	}
	if err := queueClaims(c, sets, cl, nil); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("claim %s for port %s (nft add element bridge %s %s): %w", addr, port, model.Table, model.GuardClaims6, err)
	}
	return nil
}

func queueChunks(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, els []nftables.SetElement) error {
	for len(els) > 0 {
		n := min(len(els), elementsPerMessage)
		if err := op(s, els[:n]); err != nil {
			return fmt.Errorf("nft set %s elements: %w", s.Name, err)
		}
		els = els[n:]
	}
	return nil
}

// queueClaims queues first-come claims to remove (each from claims6, its
// address from claimed6) and to add, for their Left (a DHCPv6 lease's
// lifetime) or else the sets' own timeout.
func queueClaims(c *nftables.Conn, sets map[string]*nftables.Set, add, del []model.Claim6) error {
	for _, x := range []struct {
		op      func(*nftables.Set, []nftables.SetElement) error
		claims  []model.Claim6
		timeout bool // a deletion names no timeout
	}{{c.SetDeleteElements, del, false}, {c.SetAddElements, add, true}} {
		var claims, addrs []nftables.SetElement
		for _, cl := range x.claims {
			var t time.Duration
			if x.timeout {
				// The kernel keeps a timeout in milliseconds, at most about
				// 49 days: a longer lease is capped.
				t = min(cl.Left, 30*24*time.Hour)
			}
			claims = append(claims, nftables.SetElement{Key: nft.ClaimKey(cl.Port, cl.IP), Timeout: t})
			addrs = append(addrs, nftables.SetElement{Key: nft.AddrKey(cl.IP), Timeout: t})
		}
		if err := queueChunks(x.op, sets[model.GuardClaims6], claims); err != nil {
			return err
		}
		if err := queueChunks(x.op, sets[model.GuardClaimed6], addrs); err != nil {
			return err
		}
	}
	return nil
}
