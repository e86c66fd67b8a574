package netns

import (
	"encoding/binary"
	"fmt"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NftGen returns the namespace's nftables ruleset generation: a counter the
// kernel bumps on every committed nftables transaction (iptables-nft's
// included). If it has not moved since guestnet's own last commit, nobody
// has changed any rule since. google/nftables has no call for it, so this
// sends NFT_MSG_GETGEN itself. Equivalent to: nft list ruleset (its header).
func (n *NS) NftGen() (uint32, error) {
	c, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(n.handle)})
	if err != nil {
		return 0, fmt.Errorf("nft generation: %w", err)
	}
	defer c.Close()
	req := mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: mnl.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // struct nfgenmsg
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("nft generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mnl.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nft generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("nft generation: no NFTA_GEN_ID in the kernel's answer")
}

// Netfilter returns a raw nfnetlink connection in the namespace, for the
// few requests google/nftables cannot make (the caller closes it).
func (n *NS) Netfilter() (*mnl.Conn, error) {
	c, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(n.handle)})
	if err != nil {
		return nil, fmt.Errorf("nfnetlink in netns %q: %w", n.Name, err)
	}
	return c, nil
}
