package netns

import (
	"context"
	"errors"
	"fmt"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch calls changed after every kernel notification that could mean the
// namespace drifted: links, IPv4 addresses and routes, IPv4 netconf (the
// forwarding sysctl announces itself there), and any nftables commit. It
// returns when ctx ends. Event-driven: there is no polling.
// Equivalent to: ip monitor link address route netconf & nft monitor
func (n *NS) Watch(ctx context.Context, changed func()) error {
	route, err := mnl.Dial(unix.NETLINK_ROUTE, &mnl.Config{NetNS: int(n.handle)})
	if err != nil {
		return fmt.Errorf("watch rtnetlink: %w", err)
	}
	for _, g := range []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_NETCONF} {
		if err := route.JoinGroup(g); err != nil {
			route.Close()
			return fmt.Errorf("watch rtnetlink group %d: %w", g, err)
		}
	}
	nft, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(n.handle)})
	if err != nil {
		route.Close()
		return fmt.Errorf("watch nftables: %w", err)
	}
	if err := nft.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		route.Close()
		nft.Close()
		return fmt.Errorf("watch nftables: %w", err)
	}
	errc := make(chan error, 2)
	for _, c := range []*mnl.Conn{route, nft} {
		go func() {
			for {
				if _, err := c.Receive(); err != nil {
					if ctx.Err() != nil {
						errc <- nil
						return
					}
					// ENOBUFS: events were lost; a full re-check covers them.
					if !isNoBufs(err) {
						errc <- err
						return
					}
				}
				changed()
			}
		}()
	}
	select {
	case <-ctx.Done():
		route.Close()
		nft.Close()
		return nil
	case err := <-errc:
		route.Close()
		nft.Close()
		return err
	}
}

func isNoBufs(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// WatchNeigh calls fn with every neighbour and bridge forwarding-database
// entry, first those that exist, then each change, until ctx ends.
// Equivalent to: bridge fdb show; bridge monitor fdb
func (n *NS) WatchNeigh(ctx context.Context, fn func(netlink.NeighUpdate)) error {
	ch := make(chan netlink.NeighUpdate, 256)
	errc := make(chan error, 1)
	h := n.handle
	err := netlink.NeighSubscribeWithOptions(ch, ctx.Done(), netlink.NeighSubscribeOptions{
		Namespace: &h, ListExisting: true,
		ErrorCallback: func(err error) {
			if !isNoBufs(err) {
				select {
				case errc <- err:
				default:
				}
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch neighbours: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("watch neighbours: %w", err)
		case u, ok := <-ch:
			if !ok {
				return nil
			}
			fn(u)
		}
	}
}
