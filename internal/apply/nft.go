package apply

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

var hooks = map[string]*nftables.ChainHook{
	"forward":     nftables.ChainHookForward,
	"postrouting": nftables.ChainHookPostrouting,
	"prerouting":  nftables.ChainHookPrerouting,
	"input":       nftables.ChainHookInput,
	"output":      nftables.ChainHookOutput,
}

// replaceRuleset makes guestnet's firewall exactly rs in one nftables
// transaction: table inet guestnet is deleted and rebuilt whole, and
// guestnet's own rules in DOCKER-USER (found by their comment) are
// replaced. Nothing else is touched. Equivalent to: nft -f FILE.
func (k *Linux) replaceRuleset(rs *model.Ruleset) error {
	// About 1 KiB of netlink per rule and its ack, with room to spare.
	c, err := k.ns.Nft(1<<20 + rs.RuleCount()<<10)
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nft list tables: %w", err)
	}
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	if slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == model.Table }) {
		c.DelTable(t)
	}
	if len(rs.Chains) > 0 {
		c.AddTable(t)
		sets := map[string]*nftables.Set{}
		exact, ranged := model.SplitForwards(rs.Forwards)
		for _, part := range []struct {
			set *nftables.Set
			fs  []model.Forward
		}{{exactSet(t), exact}, {forwardsSet(t), ranged}} {
			if len(part.fs) == 0 {
				continue
			}
			if err := c.AddSet(part.set, nil); err != nil {
				return fmt.Errorf("nft add map %s: %w", part.set.Name, err)
			}
			if err := addChunked(c.SetAddElements, part.set, part.fs); err != nil {
				return err
			}
			sets[part.set.Name] = part.set
		}
		if len(rs.Floating) > 0 {
			for _, name := range []string{model.FloatingIn, model.FloatingOut} {
				s := &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
				var els []nftables.SetElement
				for _, f := range rs.Floating {
					pub, g := f.Public.AsSlice(), f.Guest.AsSlice() // each in its family's width
					if name == model.FloatingIn {
						els = append(els, nftables.SetElement{Key: pub, Val: g})
					} else {
						els = append(els, nftables.SetElement{Key: g, Val: pub})
					}
				}
				if err := c.AddSet(s, els); err != nil {
					return fmt.Errorf("nft add map %s: %w", name, err)
				}
				sets[name] = s
			}
		}
		accept := nftables.ChainPolicyAccept
		for _, mc := range rs.Chains {
			ch := c.AddChain(&nftables.Chain{
				Name:     mc.Name,
				Table:    t,
				Type:     nftables.ChainType(mc.Type),
				Hooknum:  hooks[mc.Hook],
				Priority: nftables.ChainPriorityRef(nftables.ChainPriority(mc.Priority)),
				Policy:   &accept,
			})
			for _, r := range mc.Rules {
				exprs, err := nft.Encode(r, true)
				if err != nil {
					return err
				}
				for _, e := range exprs {
					if l, ok := e.(*expr.Lookup); ok && sets[l.SetName] != nil {
						l.SetID = sets[l.SetName].ID // the map is made in this same transaction
					}
				}
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: nft.Comment(r.Network)})
			}
		}
	}
	if err := k.replaceDockerUser(c, rs.DockerUser); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft transaction: %w", err)
	}
	return nil
}

// replaceDockerUser queues the removal of guestnet's rules in Docker's
// DOCKER-USER chain and the insertion of want at its top.
func (k *Linux) replaceDockerUser(c *nftables.Conn, want []model.Rule) error {
	t := &nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4}
	ch := &nftables.Chain{Name: "DOCKER-USER", Table: t}
	old, err := c.GetRules(t, ch)
	if err != nil {
		if len(want) == 0 && errors.Is(err, unix.ENOENT) {
			return nil // no Docker here: nothing of ours to remove
		}
		return fmt.Errorf("nft list chain ip filter DOCKER-USER: %w", err)
	}
	for _, r := range old {
		if strings.HasPrefix(nft.CommentOf(r.UserData), model.AliasPrefix) {
			if err := c.DelRule(r); err != nil {
				return err
			}
		}
	}
	for i := len(want) - 1; i >= 0; i-- { // inserted at the top: last first
		exprs, err := nft.Encode(want[i], false)
		if err != nil {
			return err
		}
		c.InsertRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: nft.Comment(model.OwnerAlias(want[i].Network))})
	}
	return nil
}

func exactSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: model.ForwardsMap, IsMap: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

func forwardsSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: model.ForwardsSrcMap, IsMap: true, Interval: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

func forwardElements(fs []model.Forward) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(fs))
	for _, f := range fs {
		if f.Exact() {
			k, val := nft.EncodeExact(f)
			out = append(out, nftables.SetElement{Key: k, Val: val})
			continue
		}
		k, kEnd, val := nft.EncodeForward(f)
		out = append(out, nftables.SetElement{Key: k, KeyEnd: kEnd, Val: val})
	}
	return out
}

// updateForwards changes only the elements of the forwards map that
// differ, in one transaction: a changed forward is one element deleted and
// one added, whatever the size of the map.
// Equivalent to: nft delete element inet guestnet forwards { ... }; nft add element ...
func (k *Linux) updateForwards(old, cur []model.Forward) error {
	add, del := model.Diff(old, cur)
	c, err := k.ns.Nft(1<<20 + (len(del)+len(add))<<9)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	delExact, delRanged := model.SplitForwards(del)
	addExact, addRanged := model.SplitForwards(add)
	for _, op := range []struct {
		f   func(*nftables.Set, []nftables.SetElement) error
		s   *nftables.Set
		els []model.Forward
	}{{c.SetDeleteElements, exactSet(t), delExact}, {c.SetDeleteElements, forwardsSet(t), delRanged},
		{c.SetAddElements, exactSet(t), addExact}, {c.SetAddElements, forwardsSet(t), addRanged}} {
		if err := addChunked(op.f, op.s, op.els); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft update map %s: %w", model.ForwardsMap, err)
	}
	return nil
}

// elementsPerMessage keeps each element message under netlink's 64 KiB
// attribute limit (a longer list would wrap its length and be cut short);
// the messages still go in one transaction.
const elementsPerMessage = 200

func addChunked(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, fs []model.Forward) error {
	for len(fs) > 0 {
		n := min(len(fs), elementsPerMessage)
		if err := op(s, forwardElements(fs[:n])); err != nil {
			return fmt.Errorf("nft map %s elements: %w", model.ForwardsMap, err)
		}
		fs = fs[n:]
	}
	return nil
}
