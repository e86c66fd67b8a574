package model

import "net/netip"

// Overlay is what trace reads of the stretched networks on demand (part
// of Diag): the forwarding entries of their VXLAN devices and the IPv4
// neighbours of their bridges, to tell which host a guest's frame goes to.
type Overlay struct {
	FDB    []FDBEntry `json:"fdb,omitempty"`
	Neighs []Neigh    `json:"neighs,omitempty"`
}

// FDBEntry is one forwarding entry of a bridge port (bridge fdb show):
// on a VXLAN device, an entry of the device itself (NTF_SELF) carries the
// VTEP it sends the MAC to (all-zero MAC: the flood list), and the
// bridge's entry (NTF_MASTER) says the MAC is behind that port.
type FDBEntry struct {
	Dev    string     `json:"dev"`
	MAC    string     `json:"mac"`
	Dst    netip.Addr `json:"dst,omitzero"` // the VTEP, on a VXLAN device's own entry
	Master bool       `json:"master,omitempty"`
}

// Neigh is one IPv4 neighbour of a bridge (ip neigh show dev BR).
type Neigh struct {
	Dev string     `json:"dev"`
	IP  netip.Addr `json:"ip"`
	MAC string     `json:"mac"`
}

// FloodMAC is the MAC of a VXLAN device's flood-list entries.
const FloodMAC = "00:00:00:00:00:00"

// Path says how a frame to mac leaves bridge through the VXLAN device
// dev: the VTEPs it goes to, and whether the MAC has an entry of its own
// (false: unknown unicast, sent to every VTEP of the flood list).
func (o Overlay) Path(dev, mac string) (vteps []netip.Addr, known bool) {
	for _, e := range o.FDB {
		if e.Dev == dev && !e.Master && e.MAC == mac && e.Dst.IsValid() {
			vteps, known = append(vteps, e.Dst), true
		}
	}
	if known {
		return vteps, true
	}
	for _, e := range o.FDB {
		if e.Dev == dev && !e.Master && e.MAC == FloodMAC && e.Dst.IsValid() {
			vteps = append(vteps, e.Dst)
		}
	}
	return vteps, false
}

// PortOf is the port of the bridge's own forwarding entry for mac (the
// port the bridge sends it out of), or "" (unknown: flooded).
func (o Overlay) PortOf(mac string) string {
	for _, e := range o.FDB {
		if e.Master && e.MAC == mac {
			return e.Dev
		}
	}
	return ""
}

// MACOf is the MAC of ip in bridge's neighbour table, or "".
func (o Overlay) MACOf(bridge string, ip netip.Addr) string {
	for _, n := range o.Neighs {
		if n.Dev == bridge && n.IP == ip {
			return n.MAC
		}
	}
	return ""
}
