package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// VXLAN stretches a network across hosts: its bridge gets a VXLAN device
// (learning off) whose remote MACs and flood list come from BGP EVPN, and
// every host carries the same gateway address and MAC (anycast).
type VXLAN struct {
	// VNI is the VXLAN network identifier, 1 to 16777215, the same on
	// every host; it also makes the EVPN route target (ASN:VNI).
	VNI uint32 `json:"vni"`
	// Port is the UDP destination port (4789, IANA's, unless set).
	Port int `json:"port,omitempty"`
	// Local is this host's VTEP address; invalid means the BGP router ID
	// (which itself defaults to the address that reaches the first peer).
	// A spec shared by every host leaves it out.
	Local netip.Addr `json:"local,omitzero"`
}

// Defaults of stretched networks.
const (
	VXLANPort = 4789
	// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer
	// Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
	VXLANOverhead = 50
	// StretchMTU is a stretched network's MTU when the spec sets none: a
	// 1500-byte underlay less VXLANOverhead. DHCP announces it (option 26).
	StretchMTU = 1450
	MaxVNI     = 1<<24 - 1
	// VXLANPrefix starts the name of a network's VXLAN device: VXLANPrefix
	// and the VNI in decimal (at most 11 bytes).
	VXLANPrefix = "gvx"
)

// VXLANName is the name of the VXLAN device of VNI vni.
func VXLANName(vni uint32) string { return fmt.Sprintf("%s%d", VXLANPrefix, vni) }

// Stretched reports whether the network spans hosts over VXLAN.
func (n Network) Stretched() bool { return n.VXLAN != nil }

// Leases says where the leases of stretched networks live: an etcd
// cluster every host reaches. Local networks keep theirs in leases.db.
type Leases struct {
	// Etcd are the cluster's client URLs (http://10.10.0.200:2379).
	Etcd []string `json:"etcd"`
	// Prefix starts every key guestnet writes ("/guestnet/" unless set);
	// two clusters of hosts may share one etcd with two prefixes.
	Prefix string `json:"prefix"`
	// Block is how many addresses of a range a host claims at once
	// (LeaseBlockSize unless set), a power of two.
	Block int `json:"block"`
	// Host is this host's name in etcd (the owner of its blocks); empty
	// means the VTEP address of its stretched networks.
	Host string `json:"host,omitempty"`
}

// Defaults of the leases section.
const (
	LeasePrefix    = "/guestnet/"
	LeaseBlockSize = 16
)

// EVPNFlood is an EVPN type-3 route (inclusive multicast Ethernet tag):
// VTEP wants the broadcast and unknown traffic of VNI, by head-end
// replication (the kernel's all-zero FDB entry with dst VTEP).
type EVPNFlood struct {
	VNI  uint32     `json:"vni"`
	VTEP netip.Addr `json:"vtep"`
}

// EVPNMAC is an EVPN type-2 route (MAC/IP advertisement): the guest with
// MAC (and IP, when known) sits behind VTEP in VNI. Seq is the MAC
// mobility sequence number (RFC 7432 §15): a host that learns a MAC
// another VTEP announces sends its own route with a higher Seq, and the
// highest Seq wins (the lowest VTEP on a tie).
type EVPNMAC struct {
	VNI  uint32     `json:"vni"`
	VTEP netip.Addr `json:"vtep"`
	MAC  string     `json:"mac"` // canonical lower-case form
	IP   netip.Addr `json:"ip,omitzero"`
	Seq  uint32     `json:"seq,omitempty"`
}

// EVPN is a set of EVPN routes: what one host announces, or what it
// received from its peers.
type EVPN struct {
	Flood []EVPNFlood `json:"flood,omitempty"`
	MACs  []EVPNMAC   `json:"macs,omitempty"`
}

// Sort puts e in a canonical order (VNI, then VTEP, MAC, IP), so that two
// equal sets compare equal with slices.Equal.
func (e *EVPN) Sort() {
	slices.SortFunc(e.Flood, func(a, b EVPNFlood) int {
		return cmp.Or(cmp.Compare(a.VNI, b.VNI), a.VTEP.Compare(b.VTEP))
	})
	slices.SortFunc(e.MACs, func(a, b EVPNMAC) int {
		return cmp.Or(cmp.Compare(a.VNI, b.VNI), a.VTEP.Compare(b.VTEP), cmp.Compare(a.MAC, b.MAC), a.IP.Compare(b.IP))
	})
}

// Better reports whether route a wins over route b for the same MAC: a
// higher mobility sequence number, then the lower VTEP address (RFC 7432
// §15.1).
func (a EVPNMAC) Better(b EVPNMAC) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	return a.VTEP.Less(b.VTEP)
}

// LeaseBlock is a span of a stretched network's DHCP range that one host
// claimed in etcd: it allocates inside it without asking anyone.
type LeaseBlock struct {
	Network string     `json:"network"`
	First   netip.Addr `json:"first"`
	Last    netip.Addr `json:"last"`
	Host    string     `json:"host"`
	Leases  int        `json:"leases"` // live leases inside
}

// EtcdHealth is what a host last saw of the lease cluster.
type EtcdHealth struct {
	Endpoints []string  `json:"endpoints"`
	Reachable []string  `json:"reachable,omitempty"` // endpoints that answered
	Quorum    bool      `json:"quorum"`              // a linearizable read succeeded
	Error     string    `json:"error,omitempty"`
	Checked   time.Time `json:"checked,omitzero"`
}

// ClusterLeases is the lease cluster as one host sees it (the daemon's
// GET /v1/leases/cluster; status and doctor print it).
type ClusterLeases struct {
	Host   string       `json:"host"` // this host's name in etcd
	Etcd   EtcdHealth   `json:"etcd"`
	Blocks []LeaseBlock `json:"blocks"`
}

// VXLANLink is a VXLAN device as observed: the settings guestnet makes it
// with, and its flags as a bridge port.
type VXLANLink struct {
	VNI  uint32 `json:"vni"`
	Port int    `json:"port"` // UDP destination port
	// Local is the source address of its packets, invalid when the
	// kernel picks one by route.
	Local netip.Addr `json:"local,omitzero"`
	// Learning is the device's own learning of remote VTEPs from the
	// packets it receives (ip link add … learning; guestnet's: off).
	Learning bool `json:"learning,omitempty"`
	// PortLearning and NeighSuppress are its bridge port flags (bridge
	// link set dev … learning, neigh_suppress): both false when it is
	// no bridge's port. guestnet's: learning off, neigh_suppress on.
	PortLearning  bool `json:"port_learning,omitempty"`
	NeighSuppress bool `json:"neigh_suppress,omitempty"`
}
