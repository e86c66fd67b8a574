// Package etcdlease keeps the DHCP leases of stretched networks in etcd,
// the way Calico's IPAM keeps its allocations: a host claims blocks of a
// network's range with a compare-and-swap and allocates inside them with
// no round trip; each lease is written with a transaction that fails when
// another client's live lease holds the address (no address is ever given
// twice, even if two hosts believed they owned one block); every host
// watches every lease and keeps its pool in step. A host's liveness is a
// key bound to an etcd lease: when it lapses, the host's blocks become
// claimable once the leases inside them have expired.
//
// Keys under the prefix (model.Leases.Prefix, "/guestnet/"):
//
//	host/<host>                       liveness, bound to an etcd lease
//	net/<network>/block/<first addr>  a block's owner (blockRec)
//	net/<network>/lease/<addr>        a lease (dhcp.Lease, with Host)
//
// Addresses in keys are dotted with three digits each (010.060.000.100):
// the keys of a block's leases are one contiguous key range, which a
// transaction can compare at once.
package etcdlease

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// blockRec is the value of a block key.
type blockRec struct {
	Host    string    `json:"host"`
	Claimed time.Time `json:"claimed"`
	Last    string    `json:"last"` // the block's last address, for people reading etcd
}

type keys struct{ prefix string }

func (k keys) host(h string) string   { return k.prefix + "host/" + h }
func (k keys) hosts() string          { return k.prefix + "host/" }
func (k keys) net(n string) string    { return k.prefix + "net/" + n + "/" }
func (k keys) blocks(n string) string { return k.net(n) + "block/" }
func (k keys) leases(n string) string { return k.net(n) + "lease/" }
func (k keys) nets() string           { return k.prefix + "net/" }
func (k keys) block(n string, first netip.Addr) string {
	return k.blocks(n) + addrKey(first)
}
func (k keys) lease(n string, a netip.Addr) string { return k.leases(n) + addrKey(a) }

// addrKey spells an IPv4 address with three digits a byte, so that keys
// sort as addresses do.
func addrKey(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("%03d.%03d.%03d.%03d", b[0], b[1], b[2], b[3])
}

// parseAddrKey reads addrKey's form back.
func parseAddrKey(s string) (netip.Addr, bool) {
	var b [4]byte
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	for i, p := range parts {
		var v int
		if _, err := fmt.Sscanf(p, "%d", &v); err != nil || v < 0 || v > 255 {
			return netip.Addr{}, false
		}
		b[i] = byte(v)
	}
	return netip.AddrFrom4(b), true
}

// parse splits a key under nets() into network, kind ("block" or
// "lease") and address.
func (k keys) parse(key string) (network, kind string, a netip.Addr, ok bool) {
	rest, found := strings.CutPrefix(key, k.nets())
	if !found {
		return "", "", a, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return "", "", a, false
	}
	a, ok = parseAddrKey(parts[2])
	return parts[0], parts[1], a, ok
}

// rangeEnd is the end of the key range of a block's leases.
func (k keys) leaseRange(n string, b model.Range) (start, end string) {
	return k.lease(n, b.From), k.lease(n, b.To) + "\x00"
}

// Blocks cuts ranges into blocks of size addresses: consecutive spans
// from each range's first address, the last one of a range shorter. Every
// host computes the same blocks from the same spec.
func Blocks(ranges []model.Range, size int) []model.Range {
	if size <= 0 {
		size = model.LeaseBlockSize
	}
	var out []model.Range
	for _, r := range ranges {
		for a := r.From; a.IsValid() && r.Contains(a); {
			last := a
			for i := 1; i < size; i++ {
				n := last.Next()
				if !r.Contains(n) {
					break
				}
				last = n
			}
			out = append(out, model.Range{From: a, To: last})
			a = last.Next()
		}
	}
	return out
}
