package observe

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
)

// overlay reads what trace needs of the bridges that hold a VXLAN device
// (none: nothing is read): the forwarding entries of their ports, and
// their IPv4 neighbours.
// Equivalent to: bridge fdb show br BR; ip -4 neigh show dev BR
func overlay(ns *netns.NS, h model.Host) (model.Overlay, error) {
	var o model.Overlay
	byIndex := map[int]model.Link{}
	var bridges []string
	for _, l := range h.Links {
		byIndex[l.Index] = l
		if l.Kind == "vxlan" && l.Master != "" && !slices.Contains(bridges, l.Master) {
			bridges = append(bridges, l.Master)
		}
	}
	if len(bridges) == 0 {
		return o, nil
	}
	nl, err := ns.Netlink()
	if err != nil {
		return o, err
	}
	defer nl.Close()
	fdb, err := nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return o, fmt.Errorf("diagnose: bridge fdb show: %w", err)
	}
	for _, n := range fdb {
		port, ok := byIndex[n.LinkIndex]
		if !ok || !slices.Contains(bridges, port.Master) || len(n.HardwareAddr) != 6 {
			continue
		}
		// The bridge's own entries carry its index (NDA_MASTER); a VXLAN
		// device's are flagged self and carry the VTEP (NDA_DST).
		e := model.FDBEntry{Dev: port.Name, MAC: n.HardwareAddr.String(), Master: n.MasterIndex != 0 && n.Flags&netlink.NTF_SELF == 0}
		if a, ok := netip.AddrFromSlice(n.IP); ok && port.Kind == "vxlan" && !e.Master {
			e.Dst = a.Unmap()
		}
		o.FDB = append(o.FDB, e)
	}
	for _, br := range bridges {
		l, ok := h.Link(br)
		if !ok {
			continue
		}
		neighs, err := nl.NeighList(l.Index, unix.AF_INET)
		if err != nil {
			return o, fmt.Errorf("diagnose: ip neigh show dev %s: %w", br, err)
		}
		for _, n := range neighs {
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok || len(n.HardwareAddr) != 6 || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
				continue
			}
			o.Neighs = append(o.Neighs, model.Neigh{Dev: br, IP: a.Unmap(), MAC: n.HardwareAddr.String()})
		}
	}
	return o, nil
}
