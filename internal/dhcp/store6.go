package dhcp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Lease6 is one DHCPv6 address (IA_NA) bound to a client, named by its
// DUID and the IA's IAID (RFC 8415 §12: a client may hold several IAs),
// or kept out of the pool (Declined).
type Lease6 struct {
	DUID     string     `json:"duid"` // hex bytes, lower case, colon-separated (model.StaticHost6's form)
	IAID     uint32     `json:"iaid"`
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac,omitempty"` // the client's MAC, when known (DUID-LL/LLT or its frames)
	Hostname string     `json:"hostname,omitempty"`
	Expiry   time.Time  `json:"expiry"` // end of the valid lifetime
	Declined bool       `json:"declined,omitempty"`
	// Port, PortIndex and PortHW are the bridge port the client asked
	// from, as in Lease: what IPv6 anti-spoofing binds.
	Port      string `json:"port,omitempty"`
	PortIndex int    `json:"port_index,omitempty"`
	PortHW    string `json:"port_hw,omitempty"`
}

// PortID is the port identity l was bound with.
func (l Lease6) PortID() PortID { return PortID{Name: l.Port, Index: l.PortIndex, HW: l.PortHW} }

// Bucket6 is the top-level bucket of the DHCPv6 leases, one sub-bucket per
// network, keyed by the 16-byte address. Its name holds a character no
// network name may have ('#'), so it never collides with a network's
// DHCPv4 bucket; the DHCPv4 walks (Networks, inspect) skip it.
const Bucket6 = "#dhcp6"

func key6(ip netip.Addr) []byte { b := ip.As16(); return b[:] }

// decode6 reads one DHCPv6 record; its key must be its address.
func decode6(k, v []byte) (Lease6, error) {
	var l Lease6
	if err := json.Unmarshal(v, &l); err != nil {
		return l, fmt.Errorf("lease6 record %x: %w", k, err)
	}
	if !l.IP.Is6() || l.IP.Is4In6() || string(key6(l.IP)) != string(k) {
		return l, fmt.Errorf("lease6 record %x: holds address %v, not its key", k, l.IP)
	}
	return l, nil
}

// Load6 returns a network's DHCPv6 leases.
func (s *BoltStore) Load6(network string) ([]Lease6, error) {
	var out []Lease6
	err := s.db.View(func(tx *bolt.Tx) error {
		b := bucket6(tx, network)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			l, err := decode6(k, v)
			if err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load DHCPv6 leases of %s: %w", network, err)
	}
	return out, nil
}

func bucket6(tx *bolt.Tx, network string) *bolt.Bucket {
	top := tx.Bucket([]byte(Bucket6))
	if top == nil {
		return nil
	}
	return top.Bucket([]byte(network))
}

// Networks6 lists the networks that have DHCPv6 leases stored.
func (s *BoltStore) Networks6() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		top := tx.Bucket([]byte(Bucket6))
		if top == nil {
			return nil
		}
		return top.ForEachBucket(func(name []byte) error {
			out = append(out, string(name))
			return nil
		})
	})
	return out, err
}

// Put6 stores a DHCPv6 lease durably (grouped with other writers' changes,
// as Put).
func (s *BoltStore) Put6(network string, l Lease6) error {
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		top, err := tx.CreateBucketIfNotExists([]byte(Bucket6))
		if err != nil {
			return err
		}
		b, err := top.CreateBucketIfNotExists([]byte(network))
		if err != nil {
			return err
		}
		return b.Put(key6(l.IP), v)
	})
}

// Delete6 removes a DHCPv6 lease durably.
func (s *BoltStore) Delete6(network string, ip netip.Addr) error {
	return s.update(func(tx *bolt.Tx) error {
		b := bucket6(tx, network)
		if b == nil {
			return nil
		}
		return b.Delete(key6(ip))
	})
}
