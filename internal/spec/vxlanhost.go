package spec

import (
	"maps"
	"slices"

	"github.com/guestnet/guestnet/internal/model"
)

// checkVXLANHost checks a stretched network's VXLAN device against the
// host: guestnet never touches a VXLAN device it does not own, so a link
// that has the device's name, or a VXLAN device of another owner with the
// same VNI and port (the kernel would refuse a second one), stops the
// apply, named.
func checkVXLANHost(n *Network, links map[string]model.Link) []error {
	if n.VXLAN == nil {
		return nil
	}
	var errs []error
	name := model.VXLANName(n.VXLAN.VNI)
	port := n.VXLAN.Port
	if port == 0 {
		port = model.VXLANPort
	}
	if l, ok := links[name]; ok {
		switch {
		case l.Owner() != n.Name && l.Owner() != "":
			errs = append(errs, n.errorf("vxlan.vni", "the VXLAN device %s belongs to guestnet network %s: destroy that network first", name, l.Owner()))
		case l.Owner() == "":
			errs = append(errs, n.errorf("vxlan.vni", "%s (this network's VXLAN device) already exists and guestnet did not create it: delete it (ip link del %s), or pick another vni", name, name))
		case l.Kind != "vxlan":
			errs = append(errs, n.errorf("vxlan.vni", "%s exists but is a %s, not a VXLAN device", name, l.Kind))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(links)) {
		l := links[k]
		if l.Name == name || l.VXLAN == nil || l.VXLAN.VNI != n.VXLAN.VNI || l.VXLAN.Port != port {
			continue
		}
		owner := "guestnet did not create it"
		if o := l.Owner(); o != "" {
			owner = "it belongs to guestnet network " + o
		}
		errs = append(errs, n.errorf("vxlan.vni", "VXLAN device %s already has VNI %d on port %d (%s): the kernel allows one; delete it (ip link del %s), or pick another vni or port", l.Name, l.VXLAN.VNI, port, owner, l.Name))
	}
	return errs
}
