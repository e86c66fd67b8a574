package netns

import (
	"context"
	"errors"
	"fmt"
	"time"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch calls changed after every kernel notification that could mean the
// namespace drifted: links, addresses and routes of both families, netconf
// of both (the forwarding sysctls announce themselves there), and any
// nftables commit. It
// returns when ctx ends. Event-driven: there is no polling.
// Equivalent to: ip monitor link address route netconf & nft monitor
func (n *NS) Watch(ctx context.Context, changed func()) error {
	route, err := mnl.Dial(unix.NETLINK_ROUTE, &mnl.Config{NetNS: int(n.handle)})
	if err != nil {
		return fmt.Errorf("watch rtnetlink: %w", err)
	}
	for _, g := range []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_NETCONF,
		unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_IPV6_NETCONF} {
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
				msgs, err := c.Receive()
				if err != nil {
					if ctx.Err() != nil {
						errc <- nil
						return
					}
					// ENOBUFS: events were lost; a full re-check covers them.
					if !isNoBufs(err) {
						errc <- err
						return
					}
				} else if c == route && onlyBGPRoutes(msgs) {
					continue // the BGP speaker's own routes are not the spec's: no drift
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

// neighBuffer is the receive buffer of the neighbour subscription
// (SO_RCVBUFFORCE: root may exceed net.core.rmem_max). A guest sending
// from random source MACs makes the bridge learn an entry per frame, each
// a notification; the default buffer (about 200 KiB) overflows within a
// few thousand of them.
const neighBuffer = 8 << 20

// The waits before resubscribing after a lost subscription: 50 ms
// doubling up to 5 s, back to the first after a subscription that lived
// neighSteady.
const (
	neighFirstWait = 50 * time.Millisecond
	neighMaxWait   = 5 * time.Second
	neighSteady    = 30 * time.Second
)

// WatchNeigh calls fn with every neighbour and bridge forwarding-database
// entry, first those that exist, then each change, until ctx ends.
// Whatever ends the subscription (ENOBUFS after a flood of changes, a
// message from a wrong sender, an interrupted dump, a closed socket), it
// calls lost with the reason and the wait, then subscribes again, which
// lists the existing entries again: the caller should forget what it
// knew (entries removed meanwhile are not reported). It never gives up.
// Equivalent to: while :; do bridge fdb show; bridge monitor fdb; done
func (n *NS) WatchNeigh(ctx context.Context, fn func(netlink.NeighUpdate), lost func(err error, retryIn time.Duration)) {
	var wait time.Duration
	for {
		start := time.Now()
		err := n.watchNeighOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) >= neighSteady {
			wait = 0
		}
		wait = min(max(2*wait, neighFirstWait), neighMaxWait)
		lost(err, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// watchNeighOnce is one subscription: it returns why it ended (never nil
// unless ctx ended).
func (n *NS) watchNeighOnce(ctx context.Context, fn func(netlink.NeighUpdate)) error {
	ch := make(chan netlink.NeighUpdate, 256)
	errc := make(chan error, 1)
	done := make(chan struct{})
	h := n.handle
	err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace: &h, ListExisting: true,
		ReceiveBufferSize: neighBuffer, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		close(done)
		return fmt.Errorf("watch neighbours: %w", err)
	}
	stop := func() {
		close(done) // closes the socket: the reader ends and closes ch
		for range ch {
		}
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return nil
		case err := <-errc:
			stop()
			return fmt.Errorf("watch neighbours: %w", err)
		case u, ok := <-ch:
			if !ok {
				close(done)
				select {
				case err := <-errc:
					return fmt.Errorf("watch neighbours: %w", err)
				default:
					return errors.New("watch neighbours: the kernel closed the subscription")
				}
			}
			fn(u)
		}
	}
}

// onlyBGPRoutes reports whether every message is a route change of
// protocol bgp (186), which only the BGP speaker writes and repairs
// (rtmsg: family, dst_len, src_len, tos, table, protocol, ...).
func onlyBGPRoutes(msgs []mnl.Message) bool {
	for _, m := range msgs {
		t := m.Header.Type
		if t != unix.RTM_NEWROUTE && t != unix.RTM_DELROUTE || len(m.Data) < 6 || m.Data[5] != protoBGP {
			return false
		}
	}
	return len(msgs) > 0
}

// protoBGP is model.ProtoBGP (netns imports no model).
const protoBGP = 186
