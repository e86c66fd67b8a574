// Package ra sends a network's router advertisements on its bridge (RFC
// 4861 §6.2): periodic unsolicited ones, an answer to every router
// solicitation, and a last one with router lifetime 0 when the network
// goes or the daemon stops, so that guests drop the default router at
// once instead of holding it for RouterLifetime. Wire format:
// github.com/mdlayher/ndp. What an RA says is model.Network.RA(); this
// package only turns it into packets and times them.
package ra

import (
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"

	"github.com/guestnet/guestnet/internal/model"
)

// CurHopLimit is the hop limit guests are told to use (radvd's and the
// kernel's default).
const CurHopLimit = 64

// Build is the router advertisement of r, sent from a bridge whose hardware
// address is mac (the source link-layer address option, so that a guest
// needs no neighbour solicitation to answer its router). final is the last
// RA of a network that stops: router lifetime 0, so that guests drop the
// default route at once (RFC 4861 §6.2.5), and DNS lifetimes 0 (RFC 8106
// §5.1: the servers are no longer to be used). The prefix keeps its
// lifetimes: a guest keeps its addresses over a daemon restart.
func Build(r model.RA, mac net.HardwareAddr, final bool) *ndp.RouterAdvertisement {
	m := &ndp.RouterAdvertisement{
		CurrentHopLimit:      CurHopLimit,
		ManagedConfiguration: r.Managed,
		OtherConfiguration:   r.Other,
		RouterLifetime:       r.RouterLifetime,
	}
	dnsLife := model.DNSLifetime
	if final {
		m.RouterLifetime, dnsLife = 0, 0
	}
	if len(mac) > 0 {
		m.Options = append(m.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	if r.MTU > 0 {
		m.Options = append(m.Options, ndp.NewMTU(uint32(r.MTU)))
	}
	if r.Prefix.IsValid() {
		m.Options = append(m.Options, &ndp.PrefixInformation{
			PrefixLength:                   uint8(r.Prefix.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: r.Autonomous,
			ValidLifetime:                  model.PrefixValid,
			PreferredLifetime:              model.PrefixPreferred,
			Prefix:                         r.Prefix.Masked().Addr(),
		})
	}
	if len(r.RDNSS) > 0 {
		m.Options = append(m.Options, &ndp.RecursiveDNSServer{Lifetime: dnsLife, Servers: append([]netip.Addr(nil), r.RDNSS...)})
	}
	var domains []string
	for _, d := range r.DNSSL {
		if d != "" {
			domains = append(domains, d)
		}
	}
	if len(domains) > 0 {
		m.Options = append(m.Options, &ndp.DNSSearchList{Lifetime: dnsLife, DomainNames: domains})
	}
	return m
}
