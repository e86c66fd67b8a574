package main

import (
	"net/netip"
	"slices"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/doctor"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
)

// askStretch gathers what doctor's checks of stretched networks read and
// doctor itself cannot (it is pure): the kernel's route to every remote
// VTEP and BGP peer (ip route get), and the daemon's view of the lease
// cluster. declared is the spec's bgp section when --config gave one.
// Nothing is asked when no checked network is stretched.
func askStretch(g *globals, e *engine.Engine, in *doctor.Input, declared *model.BGP) {
	stretched, dhcp := false, false
	for _, n := range in.Networks {
		if n.Stretched() {
			stretched, dhcp = true, dhcp || n.DHCP != nil
		}
	}
	if !stretched {
		return
	}
	var peers, self []netip.Addr
	for _, l := range in.Host.Links {
		for _, a := range l.Addrs {
			self = append(self, a.Addr())
		}
	}
	for _, n := range in.Networks {
		if n.Stretched() && n.VXLAN.Local.IsValid() {
			self = append(self, n.VXLAN.Local)
		}
	}
	if declared != nil {
		self = append(self, declared.RouterID)
		for _, p := range declared.Peers {
			peers = append(peers, p.Address)
		}
	}
	var remote model.EVPN
	if in.BGP != nil {
		if in.BGP.EVPN != nil {
			remote = in.BGP.EVPN.Remote // the flood list: every remote VTEP per VNI
		}
		self = append(self, in.BGP.RouterID)
		for _, p := range in.BGP.Peers {
			peers = append(peers, p.Address)
		}
	}
	in.Underlay = doctor.Targets(in.Networks, peers, remote, slices.DeleteFunc(self, func(a netip.Addr) bool { return !a.IsValid() }))
	for i, u := range in.Underlay {
		dev, err := e.RouteGet(u.Addr, netip.Addr{}, "")
		if err != nil {
			in.Underlay[i].Err = err.Error()
			continue
		}
		in.Underlay[i].Dev = dev
	}
	if !dhcp {
		return
	}
	if !in.Diag.Daemon {
		in.ClusterErr = daemon.ErrNoDaemon.Error()
		return
	}
	c, err := daemon.Cluster(g.dir()) // ErrOldDaemon and ErrNoCluster say what to do
	if err != nil {
		in.ClusterErr = err.Error()
		return
	}
	in.Cluster = &c
}
