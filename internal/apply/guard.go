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

// keyTypes are nft's data types of the guard's set key types.
var keyTypes = map[string]nftables.SetDatatype{
	"ifname": nftables.TypeIFName, "ether_addr": nftables.TypeEtherAddr,
	"ipv4_addr": nftables.TypeIPAddr, "ipv6_addr": nftables.TypeIP6Addr,
	"ether_type": nftables.TypeEtherType,
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
		if d.Hook == "prerouting" {
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter,
				nftables.ChainHookPrerouting, nftables.ChainPriorityRef(-200), &accept
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
	for _, b := range e.Binds {
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
	for i, els := range [][]nftables.SetElement{ports, binds, macs, owners} {
		s := sets[names[i]]
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
// learned_ports, learned_macs, learned_port_macs) in one transaction.
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
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft set bridge %s %s: %w", model.Table, model.GuardLearned, err)
	}
	return nil
}
