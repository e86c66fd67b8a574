package apply

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
)

func guardTable() *nftables.Table {
	return &nftables.Table{Name: model.Table, Family: nftables.TableFamilyBridge}
}

// guardSets are the sets of the guard table, by name.
func guardSets(t *nftables.Table) map[string]*nftables.Set {
	key := nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	return map[string]*nftables.Set{
		model.GuardPorts:        {Table: t, Name: model.GuardPorts, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		model.GuardBound:        {Table: t, Name: model.GuardBound, KeyType: key, Interval: true, Concatenation: true},
		model.GuardLearnedPorts: {Table: t, Name: model.GuardLearnedPorts, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		model.GuardLearned:      {Table: t, Name: model.GuardLearned, KeyType: key, Concatenation: true},
		model.GuardDropped: {Table: t, Name: model.GuardDropped, KeyType: key, Concatenation: true,
			Dynamic: true, HasTimeout: true, Timeout: model.DropMemory, Size: model.DropEntries},
	}
}

// guard makes table bridge guestnet match want in one transaction. An
// intact table only has its declared elements changed; the learned ones,
// the daemon's, stay. Equivalent to: nft -f FILE, or nft add/delete element.
func (k *Linux) guard(want, old model.Guard) error {
	c, err := k.ns.Nft(1<<20 + (len(want.Bound)+len(old.Bound))<<8)
	if err != nil {
		return err
	}
	t := guardTable()
	sets := guardSets(t)
	switch {
	case old.On && !old.Broken && want.On:
		add, del := model.Diff(old.Bound, want.Bound)
		addP, delP := model.Diff(old.Ports, want.Ports)
		if err := bindElements(c.SetDeleteElements, sets[model.GuardPorts], sets[model.GuardBound], delP, del); err != nil {
			return err
		}
		if err := bindElements(c.SetAddElements, sets[model.GuardPorts], sets[model.GuardBound], addP, add); err != nil {
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
	if err := bindElements(c.SetAddElements, sets[model.GuardPorts], sets[model.GuardBound], g.Ports, g.Bound); err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	check := c.AddChain(&nftables.Chain{Name: "check", Table: t})
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept})
	rules := nft.GuardChains()
	for _, ch := range []*nftables.Chain{pre, check} {
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

// bindElements queues ports for portSet and bindings for bindSet (with
// their range ends when bindSet holds intervals), in chunks.
func bindElements(op func(*nftables.Set, []nftables.SetElement) error, portSet, bindSet *nftables.Set, ports []string, binds []model.Bind) error {
	var pe, be []nftables.SetElement
	for _, p := range ports {
		pe = append(pe, nftables.SetElement{Key: nft.PortKey(p)})
	}
	for _, b := range binds {
		e := nftables.SetElement{}
		e.Key, e.KeyEnd = nft.GuardKey(b)
		if !bindSet.Interval {
			e.KeyEnd = nil
		}
		be = append(be, e)
	}
	for _, part := range []struct {
		s   *nftables.Set
		els []nftables.SetElement
	}{{portSet, pe}, {bindSet, be}} {
		for len(part.els) > 0 {
			n := min(len(part.els), elementsPerMessage)
			if err := op(part.s, part.els[:n]); err != nil {
				return fmt.Errorf("nft set %s elements: %w", part.s.Name, err)
			}
			part.els = part.els[n:]
		}
	}
	return nil
}

// Learn adds and removes bindings of the daemon's own sets (learned and
// learned_ports) in one transaction. Ports are given whole: addPorts are
// ports that gain their first binding, delPorts those that lose their last.
// Equivalent to: nft add/delete element bridge guestnet learned { ... }
func Learn(ns *netns.NS, add, del []model.Bind, addPorts, delPorts []string) error {
	if len(add)+len(del)+len(addPorts)+len(delPorts) == 0 {
		return nil
	}
	c, err := ns.Nft(1<<20 + (len(add)+len(del))<<8)
	if err != nil {
		return err
	}
	sets := guardSets(guardTable())
	ports, learned := sets[model.GuardLearnedPorts], sets[model.GuardLearned]
	if err := bindElements(c.SetDeleteElements, ports, learned, delPorts, del); err != nil {
		return err
	}
	if err := bindElements(c.SetAddElements, ports, learned, addPorts, add); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft set bridge %s %s: %w", model.Table, model.GuardLearned, err)
	}
	return nil
}
