package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// overlayHop says where a frame that leaves bridge br for dst goes when
// br holds a VXLAN device (a stretched network): to a guest of this host,
// or over the VXLAN device to the VTEP the device's forwarding entry
// names (EVPN installs them; see model.Overlay). ok is false when br
// holds no VXLAN device or dst is this host's.
func overlayHop(h model.Host, d model.Diag, br string, dst netip.Addr) (Hop, bool) {
	vx := ""
	for _, l := range h.Links {
		if l.Master == br && l.Kind == "vxlan" {
			vx = l.Name
		}
	}
	if vx == "" || isLocal(h, dst) {
		return Hop{}, false
	}
	o := d.Overlay
	mac := o.MACOf(br, dst)
	if mac == "" {
		vteps, _ := o.Path(vx, model.FloodMAC)
		return Hop{"bridge", "note", fmt.Sprintf("%s is stretched over %s: the MAC of %s is unknown here (no neighbour entry on %s), so its ARP request floods to this host's ports and over %s to %s",
			br, vx, dst, br, vx, vtepList(vteps))}, true
	}
	port := o.PortOf(mac)
	switch {
	case port == vx:
		vteps, known := o.Path(vx, mac)
		if known {
			return Hop{"bridge", "deliver", fmt.Sprintf("bridged over %s to %s: %s is MAC %s, a guest of another host (bridge fdb: %s dev %s dst %s)",
				vx, vtepList(vteps), dst, mac, mac, vx, vteps[0])}, true
		}
		return Hop{"bridge", "deliver", fmt.Sprintf("bridged over %s: %s is MAC %s behind it, which the device has no entry for: sent to every VTEP of its flood list (%s)",
			vx, dst, mac, vtepList(vteps))}, true
	case port != "":
		return Hop{"bridge", "deliver", fmt.Sprintf("%s is MAC %s on port %s: a guest of this host", dst, mac, port)}, true
	}
	vteps, _ := o.Path(vx, model.FloodMAC)
	return Hop{"bridge", "note", fmt.Sprintf("%s is MAC %s, which %s has not learned on any port: flooded to this host's ports and over %s to %s",
		dst, mac, br, vx, vtepList(vteps))}, true
}

// vtepList names VTEPs: "VTEP 10.10.0.2", "VTEPs 10.10.0.2, 10.10.0.3",
// or "no VTEP (the flood list is empty)".
func vtepList(vteps []netip.Addr) string {
	switch len(vteps) {
	case 0:
		return "no VTEP (the flood list is empty: no EVPN type-3 route)"
	case 1:
		return "VTEP " + vteps[0].String()
	}
	s := make([]string, len(vteps))
	for i, v := range vteps {
		s[i] = v.String()
	}
	return "VTEPs " + strings.Join(s, ", ")
}
