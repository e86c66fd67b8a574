package observe

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// tableRules reads every rule of guestnet's table in one dump, by chain
// name. A table of 1,000 networks has 5,000 chains: a request per chain
// (GetRules) costs a round trip each, a second or more in all. The kernel
// dumps a whole table's rules when the request names no chain, but
// google/nftables always names one, so the request is sent here and its
// answer handed to the library's own rule parser (through its test dialer,
// which returns what it is given).
// Equivalent to: nft list table inet guestnet (its rules).
func tableRules(ns *netns.NS) (map[string][]*nftables.Rule, error) {
	raw, err := ns.Netfilter()
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(model.Table + "\x00")}})
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Dump,
		},
		Data: append([]byte{byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0}, attrs...), // struct nfgenmsg
	}
	msgs, err := raw.Execute(req)
	if err != nil {
		return nil, fmt.Errorf("observe table inet %s rules: %w", model.Table, err)
	}
	// Execute drops the dump's closing message; the parser's connection
	// reads a multi-part answer up to it, so it is put back.
	msgs = append(msgs, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)})
	parse, err := nftables.New(nftables.WithTestDial(func([]netlink.Message) ([]netlink.Message, error) { return msgs, nil }))
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	rules, err := parse.GetRules(t, &nftables.Chain{Name: "", Table: t})
	if err != nil {
		return nil, fmt.Errorf("observe table inet %s rules: %w", model.Table, err)
	}
	out := map[string][]*nftables.Rule{}
	for _, r := range rules {
		if r.Chain != nil {
			out[r.Chain.Name] = append(out[r.Chain.Name], r)
		}
	}
	return out, nil
}
