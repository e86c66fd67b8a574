package spec

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

var dhcpFields = []string{"range", "lease", "hosts", "dns", "domain", "mtu", "routes", "per_port"}

// DefaultPerPort caps the dynamic addresses one bridge port holds (live
// leases and outstanding offers) when the spec says nothing: a guest that
// invents client MACs cannot empty the pool. A VM with a few interfaces
// on one TAP, or a small nested setup, fits; per_port: 0 lifts the cap.
const DefaultPerPort = 8

// DefaultLease is the lease time when the spec gives none (libvirt's too).
const DefaultLease = time.Hour

// parseDHCP reads a network's dhcp: block. Fields are named
// "dhcp.range", "dhcp.hosts[2].ip" and so on in errors.
func (n *Network) parseDHCP(v *yaml.Node) error {
	d := &model.DHCP{Lease: DefaultLease, PerPort: DefaultPerPort}
	n.DHCP = d
	if v.Kind != yaml.MappingNode {
		return n.errorf("dhcp", "want a mapping (%s)", strings.Join(dhcpFields, ", "))
	}
	var errs []error
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		f := "dhcp." + k.Value
		n.Lines[f] = k.Line
		var err error
		switch k.Value {
		case "range":
			d.Ranges, err = n.parseRanges(f, val, parseRange, "addresses, like 10.99.0.100-10.99.0.200")
		case "lease":
			d.Lease, err = n.parseLease(f, val)
		case "dns":
			err = n.eachScalar(f, val, func(field, s string) error {
				a, perr := netip.ParseAddr(s)
				if perr != nil || !a.Is4() {
					return n.errorf(field, "want an IPv4 address, not %q", s)
				}
				d.DNS = append(d.DNS, a)
				return nil
			})
		case "domain":
			d.Domain = strings.TrimSuffix(val.Value, ".")
			if val.Kind != yaml.ScalarNode || !domainRE.MatchString(d.Domain) {
				err = n.errorf(f, "want a domain name like lab.internal, not %q", val.Value)
			}
		case "mtu":
			m, perr := strconv.Atoi(val.Value)
			if perr != nil || m < 68 || m > 65535 {
				err = n.errorf(f, "want a number from 68 to 65535, not %q", val.Value)
			}
			d.MTU = m
		case "per_port":
			d.PerPort, err = n.parsePerPort(f, val)
		case "hosts":
			err = n.parseHosts(f, val)
		case "routes":
			err = n.parseRoutes(f, val)
		default:
			err = n.errorf(f, "unknown key (want one of %s)", strings.Join(dhcpFields, ", "))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// parseRanges reads a range or a list of them, FIRST-LAST each, as parse
// reads one; what says what a range is made of, for the error.
func (n *Network) parseRanges(field string, v *yaml.Node, parse func(string) (model.Range, bool), what string) ([]model.Range, error) {
	var out []model.Range
	err := n.eachScalar(field, v, func(f, s string) error {
		r, ok := parse(s)
		if !ok {
			return n.errorf(f, "want FIRST-LAST %s, not %q", what, s)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// parseLease reads a lease time: at least a minute.
func (n *Network) parseLease(field string, v *yaml.Node) (time.Duration, error) {
	d, err := time.ParseDuration(v.Value)
	if err != nil || d < time.Minute {
		return d, n.errorf(field, "want a duration of at least 1m, like 1h or 30m, not %q", v.Value)
	}
	return d, nil
}

// parsePerPort reads a per-port cap: 0 (none) to 65535.
func (n *Network) parsePerPort(field string, v *yaml.Node) (int, error) {
	m, err := strconv.Atoi(v.Value)
	if v.Kind != yaml.ScalarNode || err != nil || m < 0 || m > 65535 {
		return m, n.errorf(field, "want the number of addresses one port may hold, 0 for no cap, like 8, not %q", v.Value)
	}
	return m, nil
}

// eachScalar calls fn for a scalar or for each item of a list of scalars.
func (n *Network) eachScalar(field string, v *yaml.Node, fn func(field, s string) error) error {
	if v.Kind == yaml.ScalarNode {
		return fn(field, v.Value)
	}
	if v.Kind != yaml.SequenceNode {
		return n.errorf(field, "want a value or a list of values")
	}
	var errs []error
	for i, it := range v.Content {
		f := field + "[" + itoa(i) + "]"
		n.Lines[f] = it.Line
		if it.Kind != yaml.ScalarNode {
			errs = append(errs, n.errorf(f, "want a single value"))
			continue
		}
		if err := fn(f, it.Value); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func itoa(i int) string { return strconv.Itoa(i) }

var (
	domainRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)
	hostRE   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
)

func parseRange(s string) (model.Range, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return model.Range{}, false
	}
	from, err1 := netip.ParseAddr(strings.TrimSpace(a))
	to, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !from.Is4() || !to.Is4() || to.Less(from) {
		return model.Range{}, false
	}
	return model.Range{From: from, To: to}, true
}

// mapping walks a list of mappings, calling fn with each item's fields.
func (n *Network) mappings(field string, v *yaml.Node, keys []string, fn func(field string, kv map[string]string) error) error {
	if v.Kind != yaml.SequenceNode {
		return n.errorf(field, "want a list")
	}
	var errs []error
	for i, it := range v.Content {
		f := field + "[" + itoa(i) + "]"
		n.Lines[f] = it.Line
		if it.Kind != yaml.MappingNode {
			errs = append(errs, n.errorf(f, "want a mapping with keys %s", strings.Join(keys, ", ")))
			continue
		}
		kv := map[string]string{}
		for j := 0; j < len(it.Content); j += 2 {
			k, val := it.Content[j], it.Content[j+1]
			n.Lines[f+"."+k.Value] = k.Line
			if !slices.Contains(keys, k.Value) || val.Kind != yaml.ScalarNode {
				errs = append(errs, n.errorf(f+"."+k.Value, "unknown key or not a single value (want %s)", strings.Join(keys, ", ")))
				continue
			}
			kv[k.Value] = val.Value
		}
		if err := fn(f, kv); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (n *Network) parseHosts(field string, v *yaml.Node) error {
	return n.mappings(field, v, []string{"mac", "ip", "name"}, func(f string, kv map[string]string) error {
		mac, err := net.ParseMAC(kv["mac"])
		if err != nil || len(mac) != 6 {
			return n.errorf(f+".mac", "want a MAC address like 52:54:00:aa:bb:cc, not %q", kv["mac"])
		}
		ip, err := netip.ParseAddr(kv["ip"])
		if err != nil || !ip.Is4() {
			return n.errorf(f+".ip", "want an IPv4 address, not %q", kv["ip"])
		}
		if name := kv["name"]; name != "" && !hostRE.MatchString(name) {
			return n.errorf(f+".name", "want a host name (letters, digits, '-'), not %q", name)
		}
		n.DHCP.Hosts = append(n.DHCP.Hosts, model.StaticHost{MAC: mac.String(), IP: ip, Name: kv["name"]})
		return nil
	})
}

func (n *Network) parseRoutes(field string, v *yaml.Node) error {
	return n.mappings(field, v, []string{"to", "via"}, func(f string, kv map[string]string) error {
		to, err := netip.ParsePrefix(kv["to"])
		if err != nil || !to.Addr().Is4() {
			return n.errorf(f+".to", "want an IPv4 prefix like 172.20.0.0/16, not %q", kv["to"])
		}
		via, err := netip.ParseAddr(kv["via"])
		if err != nil || !via.Is4() {
			return n.errorf(f+".via", "want an IPv4 address, not %q", kv["via"])
		}
		n.DHCP.Routes = append(n.DHCP.Routes, model.StaticRoute{To: to.Masked(), Via: via})
		return nil
	})
}

// checkDHCP validates the dhcp block against the network's subnet.
func (n *Network) checkDHCP() error {
	d := n.DHCP
	if d == nil {
		return nil
	}
	if n.DNS != nil { // guests ask guestnet's DNS, under its domain
		if len(d.DNS) == 0 && n.IPv4.IsValid() {
			d.DNS = []netip.Addr{n.IPv4.Addr()}
		}
		if d.Domain == "" {
			d.Domain = n.DNS.Domain
		}
	}
	if !n.IPv4.IsValid() {
		return n.errorf("dhcp", "needs the network's ipv4 (the server's address and the guests' subnet)")
	}
	sub, gw := n.Subnet(), n.IPv4.Addr()
	inside := func(a netip.Addr) bool { return sub.Contains(a) && a != sub.Addr() && a != model.Broadcast(sub) }
	var errs []error
	if len(d.Ranges) == 0 && len(d.Hosts) == 0 {
		errs = append(errs, n.errorf("dhcp", "needs a range or static hosts"))
	}
	for i, r := range d.Ranges {
		f := "dhcp.range"
		if _, ok := n.Lines[f+"["+itoa(i)+"]"]; ok {
			f += "[" + itoa(i) + "]"
		}
		if !inside(r.From) || !inside(r.To) {
			errs = append(errs, n.errorf(f, "%s-%s is not inside the hosts of %s", r.From, r.To, sub))
		}
		for _, o := range d.Ranges[:i] {
			if o.Contains(r.From) || o.Contains(r.To) || r.Contains(o.From) {
				errs = append(errs, n.errorf(f, "%s-%s overlaps %s-%s", r.From, r.To, o.From, o.To))
			}
		}
	}
	macs, ips := map[string]bool{}, map[netip.Addr]bool{}
	for i, h := range d.Hosts {
		f := "dhcp.hosts[" + itoa(i) + "]"
		switch {
		case !inside(h.IP) || h.IP == gw:
			errs = append(errs, n.errorf(f+".ip", "%s is not a guest address of %s", h.IP, sub))
		case macs[h.MAC]:
			errs = append(errs, n.errorf(f+".mac", "%s is listed twice", h.MAC))
		case ips[h.IP]:
			errs = append(errs, n.errorf(f+".ip", "%s is listed twice", h.IP))
		}
		macs[h.MAC], ips[h.IP] = true, true
	}
	for i, r := range d.Routes {
		if !sub.Contains(r.Via) {
			errs = append(errs, n.errorf("dhcp.routes["+itoa(i)+"].via", "gateway %s is not on %s", r.Via, sub))
		}
	}
	return errors.Join(errs...)
}

// parseDNS reads a network's dns: block.
func (n *Network) parseDNS(v *yaml.Node) error {
	d := &model.DNS{}
	n.DNS = d
	if v.Kind != yaml.MappingNode {
		return n.errorf("dns", "want a mapping (domain, upstream)")
	}
	var errs []error
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		f := "dns." + k.Value
		n.Lines[f] = k.Line
		switch k.Value {
		case "domain":
			d.Domain = strings.TrimSuffix(val.Value, ".")
			if val.Kind != yaml.ScalarNode || !domainRE.MatchString(d.Domain) {
				errs = append(errs, n.errorf(f, "want a domain name like lab.internal, not %q", val.Value))
			}
		case "upstream":
			errs = append(errs, n.eachScalar(f, val, func(field, s string) error {
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
					return n.errorf(field, "want an IPv4 or IPv6 address, not %q", s)
				}
				d.Upstream = append(d.Upstream, a.Unmap())
				return nil
			}))
		default:
			errs = append(errs, n.errorf(f, "unknown key (want domain, upstream)"))
		}
	}
	if d.Domain == "" {
		errs = append(errs, n.errorf("dns", "needs a domain"))
	}
	return errors.Join(errs...)
}
