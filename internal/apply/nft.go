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
		if err := addTableContent(c, t, rs); err != nil {
			return err
		}
	}
	if err := k.replaceDockerUser(c, nftables.TableFamilyIPv4, rs.DockerUser); err != nil {
		return err
	}
	if err := k.replaceDockerUser(c, nftables.TableFamilyIPv6, rs.DockerUser6); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft transaction: %w", err)
	}
	return nil
}

// addTableContent queues, in one transaction, what the new table holds in
// the order the kernel needs it: the maps (a rule's lookup names its map),
// the chains with their rules, and the verdict maps' elements last (an
// element jumps to a chain, which must exist by then).
func addTableContent(c *nftables.Conn, t *nftables.Table, rs *model.Ruleset) error {
	sets := map[string]*nftables.Set{}
	maps := model.MapsOf(*rs)
	exact, ranged := model.SplitForwards(rs.Forwards)
	for _, part := range []struct {
		set *nftables.Set
		fs  []model.Forward
	}{{exactSet(t), exact}, {forwardsSet(t), ranged}} {
		if !slices.Contains(maps, part.set.Name) {
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
	if slices.Contains(maps, model.FloatingIn) {
		for _, name := range []string{model.FloatingIn, model.FloatingOut} {
			s := floatingSet(t, name)
			if err := c.AddSet(s, floatingElements(name, rs.Floating)); err != nil {
				return fmt.Errorf("nft add map %s: %w", name, err)
			}
			sets[name] = s
		}
	}
	for _, v := range rs.Vmaps {
		s, err := nft.VmapSet(t, v.Name)
		if err != nil {
			return err
		}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nft add map %s: %w", v.Name, err)
		}
		sets[v.Name] = s
	}
	accept := nftables.ChainPolicyAccept
	// Chains in the order given (nft lists them in the order they are
	// made): no rule jumps to a regular chain, only map elements do, and
	// those come after every chain.
	for _, mc := range rs.Chains {
		ch := &nftables.Chain{Name: mc.Name, Table: t}
		if mc.Hook != "" {
			ch.Type, ch.Hooknum, ch.Policy = nftables.ChainType(mc.Type), hooks[mc.Hook], &accept
			ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(mc.Priority))
		}
		c.AddChain(ch)
		if err := addRules(c, t, ch, mc.Rules, sets); err != nil {
			return err
		}
	}
	for _, v := range rs.Vmaps {
		if err := vmapChunked(c.SetAddElements, sets[v.Name], v.Elements); err != nil {
			return err
		}
	}
	return nil
}

// addRules queues rules at the end of chain ch. A lookup in a map made in
// this same transaction names it by its transaction ID too.
func addRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, rules []model.Rule, sets map[string]*nftables.Set) error {
	for _, r := range rules {
		exprs, err := nft.Encode(r, true)
		if err != nil {
			return err
		}
		for _, e := range exprs {
			if l, ok := e.(*expr.Lookup); ok && sets[l.SetName] != nil {
				l.SetID = sets[l.SetName].ID
			}
		}
		nr := &nftables.Rule{Table: t, Chain: ch, Exprs: exprs}
		if r.Network != "" { // the dispatch rules serve no one network: no comment
			nr.UserData = nft.Comment(r.Network)
		}
		c.AddRule(nr)
	}
	return nil
}

// applyDelta changes guestnet's table by d in one nftables transaction,
// in the order RulesetDelta documents: elements out, then the chains they
// jumped to; new chains with their rules, changed chains flushed and
// refilled; then the new elements (their chains exist by then), forwards
// and floating addresses, and guestnet's DOCKER-USER rules. The kernel
// takes the transaction whole or not at all.
// Equivalent to: nft -f FILE of delete element / delete chain / add chain /
// flush chain / add rule / add element lines.
func (k *Linux) applyDelta(d *model.RulesetDelta) error {
	c, err := k.ns.Nft(1<<20 + d.Objects()<<10)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	if err := vmapChanges(c.SetDeleteElements, t, d.DelElements); err != nil {
		return err
	}
	for _, mc := range d.DelChains {
		ch := &nftables.Chain{Name: mc.Name, Table: t}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	for _, mc := range d.AddChains {
		ch := c.AddChain(&nftables.Chain{Name: mc.Name, Table: t})
		if err := addRules(c, t, ch, mc.Rules, nil); err != nil {
			return err
		}
	}
	for _, mc := range d.SetChains {
		ch := &nftables.Chain{Name: mc.Name, Table: t}
		c.FlushChain(ch)
		if err := addRules(c, t, ch, mc.Rules, nil); err != nil {
			return err
		}
	}
	if err := vmapChanges(c.SetAddElements, t, d.AddElements); err != nil {
		return err
	}
	if err := queueForwards(c, t, d.DelForwards, d.AddForwards); err != nil {
		return err
	}
	for _, name := range []string{model.FloatingIn, model.FloatingOut} {
		s := floatingSet(t, name)
		if len(d.DelFloating) > 0 {
			if err := c.SetDeleteElements(s, floatingElements(name, d.DelFloating)); err != nil {
				return fmt.Errorf("nft map %s elements: %w", name, err)
			}
		}
		if len(d.AddFloating) > 0 {
			if err := c.SetAddElements(s, floatingElements(name, d.AddFloating)); err != nil {
				return fmt.Errorf("nft map %s elements: %w", name, err)
			}
		}
	}
	if d.DockerUser != nil {
		if err := k.replaceDockerUser(c, nftables.TableFamilyIPv4, *d.DockerUser); err != nil {
			return err
		}
	}
	if d.DockerUser6 != nil {
		if err := k.replaceDockerUser(c, nftables.TableFamilyIPv6, *d.DockerUser6); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft transaction (%s): %w", d, err)
	}
	return nil
}

// vmapChanges queues element additions or deletions, map by map.
func vmapChanges(op func(*nftables.Set, []nftables.SetElement) error, t *nftables.Table, ch []model.VmapChange) error {
	byMap := map[string][]model.VmapElement{}
	for _, e := range ch {
		byMap[e.Map] = append(byMap[e.Map], e.Element)
	}
	for _, v := range model.Vmaps {
		s, err := nft.VmapSet(t, v.Name)
		if err != nil {
			return err
		}
		if err := vmapChunked(op, s, byMap[v.Name]); err != nil {
			return err
		}
		delete(byMap, v.Name)
	}
	for name := range byMap {
		return fmt.Errorf("nft map %s: not a verdict map of guestnet's", name)
	}
	return nil
}

func vmapChunked(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, els []model.VmapElement) error {
	for len(els) > 0 {
		n := min(len(els), elementsPerMessage)
		ses, err := nft.VmapElements(s.Name, els[:n])
		if err != nil {
			return err
		}
		if err := op(s, ses); err != nil {
			return fmt.Errorf("nft map %s elements: %w", s.Name, err)
		}
		els = els[n:]
	}
	return nil
}

func floatingSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
}

// floatingElements are the elements of floating_in (public -> guest) or
// floating_out (guest -> public).
func floatingElements(name string, fs []model.Floating) []nftables.SetElement {
	var els []nftables.SetElement
	for _, f := range fs {
		pub, g := f.Public.AsSlice(), f.Guest.AsSlice() // each in its family's width
		if name == model.FloatingIn {
			els = append(els, nftables.SetElement{Key: pub, Val: g})
		} else {
			els = append(els, nftables.SetElement{Key: g, Val: pub})
		}
	}
	return els
}

// replaceDockerUser queues the removal of guestnet's rules in Docker's
// DOCKER-USER chain of table ip filter (fam IPv4) or table ip6 filter
// (IPv6, Docker's ip6tables) and the insertion of want at its top.
func (k *Linux) replaceDockerUser(c *nftables.Conn, fam nftables.TableFamily, want []model.Rule) error {
	t := &nftables.Table{Name: "filter", Family: fam}
	ch := &nftables.Chain{Name: "DOCKER-USER", Table: t}
	table := "ip"
	if fam == nftables.TableFamilyIPv6 {
		table = "ip6"
	}
	old, err := c.GetRules(t, ch)
	if err != nil {
		if len(want) == 0 && errors.Is(err, unix.ENOENT) {
			return nil // no Docker here: nothing of ours to remove
		}
		return fmt.Errorf("nft list chain %s filter DOCKER-USER: %w", table, err)
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

// queueForwards queues the deletion and addition of forwards map elements:
// a changed forward is one element deleted and one added.
func queueForwards(c *nftables.Conn, t *nftables.Table, del, add []model.Forward) error {
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
