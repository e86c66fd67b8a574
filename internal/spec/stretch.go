package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

var vxlanFields = []string{"vni", "port", "local"}

// parseVXLAN reads a network's vxlan: {vni, port, local}.
func (n *Network) parseVXLAN(v *yaml.Node) error {
	if v.Kind != yaml.MappingNode {
		return n.errorf("vxlan", "want a mapping like {vni: 6000} (keys %s)", strings.Join(vxlanFields, ", "))
	}
	x := &model.VXLAN{}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		f := "vxlan." + k.Value
		n.Lines[f] = k.Line
		if seen[k.Value] {
			errs = append(errs, n.errorf(f, "set twice"))
			continue
		}
		seen[k.Value] = true
		if val.Kind != yaml.ScalarNode {
			errs = append(errs, n.errorf(f, "want a single value"))
			continue
		}
		switch k.Value {
		case "vni":
			u, err := strconv.ParseUint(val.Value, 10, 32)
			if err != nil || u < 1 || u > model.MaxVNI {
				errs = append(errs, n.errorf(f, "want a VXLAN network identifier from 1 to %d, not %q", model.MaxVNI, val.Value))
			}
			x.VNI = uint32(u)
		case "port":
			p, err := strconv.Atoi(val.Value)
			if err != nil || p < 1 || p > 65535 {
				errs = append(errs, n.errorf(f, "want a UDP port from 1 to 65535 (4789 unless set), not %q", val.Value))
			}
			x.Port = p
		case "local":
			a, err := netip.ParseAddr(val.Value)
			if err != nil || !a.Is4() || !unicastAddr(a) {
				errs = append(errs, n.errorf(f, "want this host's IPv4 address for VXLAN (the VTEP; bgp.router_id unless set), not %q", val.Value))
			}
			x.Local = a
		default:
			errs = append(errs, n.errorf(f, "unknown key (want one of %s)", strings.Join(vxlanFields, ", ")))
		}
	}
	if !seen["vni"] {
		errs = append(errs, n.errorf("vxlan.vni", "missing: the VXLAN network identifier, the same on every host (1 to %d)", model.MaxVNI))
	}
	if x.Port == 0 {
		x.Port = model.VXLANPort
	}
	n.VXLAN = x
	return errors.Join(errs...)
}

// checkVXLAN checks a stretched network on its own and fills its MTU.
func (n *Network) checkVXLAN() error {
	if n.VXLAN == nil {
		return nil
	}
	var errs []error
	switch n.Mode {
	case model.Isolated, model.Routed, model.NAT:
	default:
		errs = append(errs, n.errorf("vxlan", "mode %s cannot be stretched: vxlan needs mode isolated, routed or nat (every host is the gateway of its own guests)", n.Mode))
	}
	if n.IPv6.IsValid() {
		errs = append(errs, n.errorf("ipv6", "not yet on a stretched network (vxlan): its router advertisements and DHCPv6 leases are per host"))
	}
	if n.DHCP6 != nil {
		errs = append(errs, n.errorf("dhcp6", "not yet on a stretched network (vxlan): DHCPv6 leases are kept per host"))
	}
	// Each host routes and NATs for its own guests only (frames from the
	// anycast gateway MAC never cross the VXLAN device): a forward or a
	// floating address on one host could not reach a guest on another.
	if len(n.Forwards) > 0 {
		errs = append(errs, n.errorf("forwards", "not on a stretched network (vxlan): a host reaches only the guests it holds, and a guest may live on any host"))
	}
	if len(n.Floating) > 0 {
		errs = append(errs, n.errorf("floating", "not on a stretched network (vxlan): a host reaches only the guests it holds, and a guest may live on any host"))
	}
	if n.MTU == 0 {
		n.MTU = model.StretchMTU
	} else if n.MTU > 65535-model.VXLANOverhead {
		errs = append(errs, n.errorf("mtu", "%d leaves no room for the %d bytes VXLAN adds", n.MTU, model.VXLANOverhead))
	}
	if n.DHCP != nil && n.DHCP.MTU == 0 {
		n.DHCP.MTU = n.MTU // guests learn the smaller MTU (option 26)
	}
	return errors.Join(errs...)
}

// Leases is the declared leases section and where it was written.
type Leases struct {
	model.Leases
	File  string
	Line  int
	Lines map[string]int
}

func (l *Leases) errorf(field, format string, args ...any) *Error {
	line := l.Line
	if x, ok := l.Lines[field]; ok {
		line = x
	}
	f := "leases"
	if field != "" {
		f += "." + field
	}
	return &Error{File: l.File, Line: line, Field: f, Msg: fmt.Sprintf(format, args...)}
}

var leasesFields = []string{"etcd", "prefix", "block", "host"}

// parseLeases reads the leases section: where stretched networks keep
// their leases.
func parseLeases(file string, key, v *yaml.Node) (*Leases, error) {
	l := &Leases{File: file, Line: key.Line, Lines: map[string]int{}}
	if v.Kind != yaml.MappingNode {
		return nil, l.errorf("", "want a mapping with keys %s", strings.Join(leasesFields, ", "))
	}
	var errs []error
	add := func(field, format string, args ...any) { errs = append(errs, l.errorf(field, format, args...)) }
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if _, dup := l.Lines[k.Value]; dup {
			add(k.Value, "set twice")
			continue
		}
		l.Lines[k.Value] = k.Line
		switch k.Value {
		case "etcd":
			items := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				items = val.Content
			}
			for j, it := range items {
				u, err := url.Parse(it.Value)
				if it.Kind != yaml.ScalarNode || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
					add(k.Value, "item %d: want an etcd client URL like http://10.10.0.200:2379, not %q", j, it.Value)
					continue
				}
				l.Etcd = append(l.Etcd, it.Value)
			}
			if len(items) == 0 {
				add(k.Value, "empty: name the etcd cluster's client URLs")
			}
		case "prefix":
			if val.Kind != yaml.ScalarNode || !strings.HasPrefix(val.Value, "/") || strings.ContainsAny(val.Value, " \t\n") {
				add(k.Value, "want a key prefix starting with '/', like /guestnet/, not %q", val.Value)
			}
			l.Prefix = val.Value
		case "block":
			b, err := strconv.Atoi(val.Value)
			if val.Kind != yaml.ScalarNode || err != nil || b < 4 || b > 1024 || b&(b-1) != 0 {
				add(k.Value, "want a power of two from 4 to 1024 (addresses a host claims at once; %d unless set), not %q", model.LeaseBlockSize, val.Value)
			}
			l.Block = b
		case "host":
			if val.Kind != yaml.ScalarNode || !nameRE.MatchString(val.Value) {
				add(k.Value, "want this host's name in etcd: 1-32 letters, digits, '.', '_' or '-', not %q", val.Value)
			}
			l.Host = val.Value
		default:
			add(k.Value, "unknown key (want one of %s)", strings.Join(leasesFields, ", "))
		}
	}
	if _, ok := l.Lines["etcd"]; !ok {
		add("etcd", "missing: the etcd cluster's client URLs, like [http://10.10.0.200:2379]")
	}
	if l.Prefix == "" {
		l.Prefix = model.LeasePrefix
	}
	if !strings.HasSuffix(l.Prefix, "/") {
		l.Prefix += "/"
	}
	if l.Block == 0 {
		l.Block = model.LeaseBlockSize
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

// validateStretch checks stretched networks against the rest of the spec:
// a VNI is one network's, EVPN needs the bgp section, DHCP needs etcd.
func (s *Spec) validateStretch() []error {
	var errs []error
	vni := map[uint32]string{}
	stretched := false
	for i := range s.Networks {
		n := &s.Networks[i]
		if n.VXLAN == nil {
			continue
		}
		stretched = true
		if o, dup := vni[n.VXLAN.VNI]; dup {
			errs = append(errs, n.errorf("vxlan.vni", "%d is also network %s's VNI", n.VXLAN.VNI, o))
		}
		vni[n.VXLAN.VNI] = n.Name
		if !n.VXLAN.Local.IsValid() && s.BGP != nil {
			n.VXLAN.Local = s.BGP.RouterID // invalid too in a shared spec: the host derives it
		}
		if s.BGP == nil {
			errs = append(errs, n.errorf("vxlan", "needs a bgp section: the hosts of a stretched network find each other's guests by BGP EVPN over its sessions"))
		}
		if n.DHCP != nil && s.Leases == nil {
			errs = append(errs, n.errorf("dhcp", "a stretched network's leases live in etcd, shared by its hosts: add a leases section, like leases: {etcd: [http://10.10.0.200:2379]} (a per-host pool would give one address twice)"))
		}
	}
	if s.BGP != nil {
		s.BGP.EVPN = stretched
	}
	return errs
}
