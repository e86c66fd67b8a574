package spec

import (
	"errors"
	"net"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

var dhcp6Fields = []string{"range", "lease", "hosts", "per_port"}

// ulaOrGlobal is where a network's IPv6 prefix may be: unique local
// (fc00::/7) or global unicast (2000::/3).
var ulaOrGlobal = []netip.Prefix{netip.MustParsePrefix("fc00::/7"), netip.MustParsePrefix("2000::/3")}

// checkIPv6 validates the network's ipv6 address on its own.
func (n *Network) checkIPv6() error {
	p := n.IPv6
	if !p.IsValid() {
		if n.DHCP6 != nil {
			return n.errorf("dhcp6", "needs the network's ipv6 (the server's address and the guests' prefix)")
		}
		return nil
	}
	sub := p.Masked()
	switch {
	case !ulaOrGlobal[0].Contains(p.Addr()) && !ulaOrGlobal[1].Contains(p.Addr()):
		return n.errorf("ipv6", "%s is not a unique local (fc00::/7) or global unicast (2000::/3) address", p.Addr())
	case p.Bits() < 48:
		return n.errorf("ipv6", "/%d is wider than any guest network should be (want /48 to /120; /64 for SLAAC)", p.Bits())
	case p.Bits() > 120:
		return n.errorf("ipv6", "/%d leaves too little room for guests (want /120 or shorter; /64 for SLAAC)", p.Bits())
	case p.Addr() == sub.Addr():
		return n.errorf("ipv6", "%s is the prefix's subnet-router anycast address (host bits zero), not a host in %s", p.Addr(), sub)
	case p.Bits() != 64 && n.DHCP6 == nil && n.Mode != model.Isolated:
		return n.errorf("ipv6", "guests form SLAAC addresses only in a /64, and %s is a /%d: use a /64, or add dhcp6 for stateful addresses", sub, p.Bits())
	}
	return nil
}

// parseDHCP6 reads a network's dhcp6: block ("dhcp6.range",
// "dhcp6.hosts[1].duid" in errors).
func (n *Network) parseDHCP6(v *yaml.Node) error {
	d := &model.DHCP6{Lease: DefaultLease, PerPort: DefaultPerPort}
	n.DHCP6 = d
	if v.Kind != yaml.MappingNode {
		return n.errorf("dhcp6", "want a mapping (%s)", strings.Join(dhcp6Fields, ", "))
	}
	var errs []error
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		f := "dhcp6." + k.Value
		n.Lines[f] = k.Line
		var err error
		switch k.Value {
		case "range":
			d.Ranges, err = n.parseRanges(f, val, parseRange6, "IPv6 addresses, like fd42:99::100-fd42:99::1ff")
		case "lease":
			d.Lease, err = n.parseLease(f, val)
		case "hosts":
			err = n.parseHosts6(f, val)
		case "per_port":
			d.PerPort, err = n.parsePerPort(f, val)
		default:
			err = n.errorf(f, "unknown key (want one of %s)", strings.Join(dhcp6Fields, ", "))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func parseRange6(s string) (model.Range, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return model.Range{}, false
	}
	from, err1 := netip.ParseAddr(strings.TrimSpace(a))
	to, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !from.Is6() || !to.Is6() || from.Is4In6() || to.Is4In6() || to.Less(from) {
		return model.Range{}, false
	}
	return model.Range{From: from, To: to}, true
}

func (n *Network) parseHosts6(field string, v *yaml.Node) error {
	return n.mappings(field, v, []string{"duid", "mac", "ip", "name"}, func(f string, kv map[string]string) error {
		h := model.StaticHost6{Name: kv["name"]}
		duid, mac := kv["duid"], kv["mac"]
		switch {
		case duid != "" && mac != "":
			return n.errorf(f, "give duid or mac, not both")
		case duid != "":
			b, ok := parseHex(duid)
			if !ok || len(b) < 3 || len(b) > 130 {
				return n.errorf(f+".duid", "want a DUID as 3 to 130 hex bytes like 00:01:00:01:2c:4f:aa:bb:52:54:00:aa:bb:cc, not %q", duid)
			}
			h.DUID = hexColon(b)
		case mac != "":
			m, err := net.ParseMAC(mac)
			if err != nil || len(m) != 6 {
				return n.errorf(f+".mac", "want a MAC address like 52:54:00:aa:bb:cc, not %q", mac)
			}
			h.MAC = m.String()
		default:
			return n.errorf(f, "needs duid or mac (the client it is for)")
		}
		ip, err := netip.ParseAddr(kv["ip"])
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return n.errorf(f+".ip", "want an IPv6 address, not %q", kv["ip"])
		}
		h.IP = ip
		if h.Name != "" && !hostRE.MatchString(h.Name) {
			return n.errorf(f+".name", "want a host name (letters, digits, '-'), not %q", h.Name)
		}
		n.DHCP6.Hosts = append(n.DHCP6.Hosts, h)
		return nil
	})
}

// parseHex reads hex bytes written with or without ':' or '-' between
// them ("00:01:ab", "0001ab").
func parseHex(s string) ([]byte, bool) {
	s = strings.NewReplacer(":", "", "-", "").Replace(strings.ToLower(s))
	if len(s) == 0 || len(s)%2 != 0 {
		return nil, false
	}
	out := make([]byte, len(s)/2)
	for i := range out {
		var b byte
		for _, c := range s[2*i : 2*i+2] {
			switch {
			case c >= '0' && c <= '9':
				b = b<<4 | byte(c-'0')
			case c >= 'a' && c <= 'f':
				b = b<<4 | byte(c-'a'+10)
			default:
				return nil, false
			}
		}
		out[i] = b
	}
	return out, true
}

func hexColon(b []byte) string {
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		const hex = "0123456789abcdef"
		sb.WriteByte(hex[x>>4])
		sb.WriteByte(hex[x&15])
	}
	return sb.String()
}

// checkDHCP6 validates the dhcp6 block against the network's prefix.
func (n *Network) checkDHCP6() error {
	d := n.DHCP6
	if d == nil || !n.IPv6.IsValid() {
		return nil
	}
	sub, gw := n.Subnet6(), n.IPv6.Addr()
	inside := func(a netip.Addr) bool { return sub.Contains(a) && a != sub.Addr() && a != gw }
	var errs []error
	if len(d.Ranges) == 0 && len(d.Hosts) == 0 {
		errs = append(errs, n.errorf("dhcp6", "needs a range or static hosts"))
	}
	for i, r := range d.Ranges {
		f := "dhcp6.range"
		if _, ok := n.Lines[f+"["+itoa(i)+"]"]; ok {
			f += "[" + itoa(i) + "]"
		}
		if !sub.Contains(r.From) || !sub.Contains(r.To) || r.From == sub.Addr() {
			errs = append(errs, n.errorf(f, "%s-%s is not inside the hosts of %s", r.From, r.To, sub))
		} else if r.Contains(gw) {
			errs = append(errs, n.errorf(f, "%s-%s holds the host's own address %s", r.From, r.To, gw))
		}
		for _, o := range d.Ranges[:i] {
			if o.Contains(r.From) || o.Contains(r.To) || r.Contains(o.From) {
				errs = append(errs, n.errorf(f, "%s-%s overlaps %s-%s", r.From, r.To, o.From, o.To))
			}
		}
	}
	keys, ips := map[string]bool{}, map[netip.Addr]bool{}
	for i, h := range d.Hosts {
		f := "dhcp6.hosts[" + itoa(i) + "]"
		key := "duid " + h.DUID
		if h.MAC != "" {
			key = "mac " + h.MAC
		}
		switch {
		case !inside(h.IP):
			errs = append(errs, n.errorf(f+".ip", "%s is not a guest address of %s", h.IP, sub))
		case keys[key]:
			errs = append(errs, n.errorf(f, "%s is listed twice", key))
		case ips[h.IP]:
			errs = append(errs, n.errorf(f+".ip", "%s is listed twice", h.IP))
		}
		keys[key], ips[h.IP] = true, true
	}
	return errors.Join(errs...)
}
