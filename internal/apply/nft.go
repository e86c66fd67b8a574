package apply

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
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
		if len(want) == 0 && (strings.Contains(err.Error(), "no such file") || isNotExist(err)) {
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

func isNotExist(err error) bool {
	var errno unix.Errno
	for e := err; e != nil; {
		if x, ok := e.(unix.Errno); ok {
			errno = x
			break
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return errno == unix.ENOENT
}
