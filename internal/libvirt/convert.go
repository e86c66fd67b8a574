package libvirt

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// Diag is one finding about a libvirt file, at the line of the element it
// is about. As an error it means the network was not converted.
type Diag struct {
	File string
	Line int
	Msg  string
}

func (d *Diag) Error() string { return fmt.Sprintf("%s:%d: %s", d.File, d.Line, d.Msg) }

// Result is one converted network.
type Result struct {
	File     string
	Line     int    // the <network> element's
	Libvirt  string // the network's libvirt name
	Network  model.Network
	Warnings []*Diag
	// lines maps a spec field ("ipv4", "dhcp.hosts[1]") to the line of
	// the XML element it came from, to place guestnet's own refusals.
	lines map[string]int
}

// conv is one conversion under way.
type conv struct {
	file  string
	res   *Result
	errs  []error
	lines map[string]int
	// domain is libvirt's <domain name>, without the trailing dot.
	domain string
}

func (c *conv) errorf(line int, format string, args ...any) {
	c.errs = append(c.errs, &Diag{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (c *conv) warnf(line int, format string, args ...any) {
	c.res.Warnings = append(c.res.Warnings, &Diag{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// Convert reads one libvirt <network> and returns it as a guestnet network.
// The error joins every *Diag that keeps it from converting; warnings are in
// the result either way (nil when data is not XML at all).
func Convert(file string, data []byte) (*Result, error) {
	var n at[network]
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := decodeOne(dec, &n); err != nil {
		line, _ := dec.InputPos()
		msg := "not a libvirt network: " + err.Error()
		var se *xml.SyntaxError
		var xe *xmlError
		switch {
		case errors.As(err, &xe):
			line, msg = xe.Line, xe.Msg
		case errors.As(err, &se):
			line, msg = se.Line, "not a libvirt network: "+se.Msg
		}
		return nil, &Diag{File: file, Line: line, Msg: msg}
	}
	c := &conv{file: file, res: &Result{File: file, Line: n.Line, lines: map[string]int{}}}
	c.lines = c.res.lines
	c.network(n.Line, &n.V)
	if len(c.errs) == 0 {
		c.errs = append(c.errs, c.check())
	}
	byLine := func(a, b *Diag) int { return a.Line - b.Line }
	slices.SortStableFunc(c.res.Warnings, byLine)
	slices.SortStableFunc(c.errs, func(a, b error) int {
		da, _ := a.(*Diag)
		db, _ := b.(*Diag)
		if da == nil || db == nil {
			return 0
		}
		return byLine(da, db)
	})
	return c.res, errors.Join(c.errs...)
}

// decodeOne decodes the document's one element into n, and refuses text
// or a second element around it: encoding/xml's Decode reads the first
// element and stops, so a file of two <network>s (or a network followed
// by what is left of an edit) converted its first alone, without a word.
// Comments, processing instructions and the DOCTYPE pass, as in libvirt.
func decodeOne(dec *xml.Decoder, n *at[network]) error {
	root := false
	for {
		line, _ := dec.InputPos()
		tok, err := dec.Token()
		if err == io.EOF {
			if !root {
				return errors.New("no element in it (want a <network>)")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root {
				line, _ = dec.InputPos()
				return &xmlError{line, fmt.Sprintf("a second element <%s> after the <network>: one file holds one network (virsh net-dumpxml prints one; split the file)", t.Name.Local)}
			}
			root = true
			if err := dec.DecodeElement(n, &t); err != nil {
				return err
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(t)); s != "" {
				where := "before"
				if root {
					where = "after"
				}
				if len(s) > 40 {
					s = s[:40] + "..."
				}
				return &xmlError{line + strings.Count(string(t)[:strings.Index(string(t), s[:1])], "\n"), fmt.Sprintf("text %q %s the <network>: not a libvirt network file", s, where)}
			}
		}
	}
}

// check loads the converted network's YAML the way guestnet will, so that
// what spec.Load refuses is refused here, at the XML element it came from.
func (c *conv) check() error {
	r := c.res
	_, err := spec.ParseFile(c.file+" (converted)", []byte(Render([]*Result{r})))
	return r.placed(err)
}

// placed turns spec errors into Diags at the line of the XML element each
// field came from.
func (r *Result) placed(err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var se *spec.Error
		if !errors.As(e, &se) {
			out = append(out, &Diag{File: r.File, Line: r.Line, Msg: "guestnet refuses the converted network: " + e.Error()})
			continue
		}
		field := strings.TrimPrefix(se.Field, "networks."+r.Network.Name)
		field = strings.TrimPrefix(field, ".")
		line, best := r.Line, -1
		for f, l := range r.lines {
			if (field == f || strings.HasPrefix(field, f+".") || strings.HasPrefix(field, f+"[")) && len(f) > best {
				line, best = l, len(f)
			}
		}
		what := field
		if what == "" {
			what = "network " + r.Network.Name
		}
		out = append(out, &Diag{File: r.File, Line: line, Msg: "guestnet refuses the converted network: " + what + ": " + se.Msg})
	}
	return errors.Join(out...)
}

// flatten lists the leaves of a tree of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// nameRE is what guestnet accepts as a network name (spec's rule).
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$`)

// Name maps a libvirt network name to a guestnet one: characters guestnet
// refuses become '-', a leading '.', '_' or '-' goes, and the rest is cut
// to 32 bytes. ok is false when nothing is left.
func Name(s string) (string, bool) {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '.' || ch == '-') {
			b[i] = '-'
		}
	}
	out := strings.TrimLeft(string(b), "._-")
	if len(out) > 32 {
		out = out[:32]
	}
	return out, nameRE.MatchString(out)
}

func (c *conv) network(line int, n *network) {
	r := c.res
	c.leftovers("network", line, n.rest)
	if n.Name == nil || strings.TrimSpace(n.Name.V.Text) == "" {
		c.errorf(line, "<network> has no <name>")
		return
	}
	r.Libvirt = strings.TrimSpace(n.Name.V.Text)
	c.leftovers("name", n.Name.Line, n.Name.V.rest)
	name, ok := Name(r.Libvirt)
	if !ok {
		c.errorf(n.Name.Line, "network name %q has nothing guestnet can use (network names are 1-32 letters, digits, '.', '_' or '-')", r.Libvirt)
		return
	}
	if name != r.Libvirt {
		c.warnf(n.Name.Line, "network %q is named %q in guestnet (network names are 1-32 letters, digits, '.', '_' or '-'; others became '-')", r.Libvirt, name)
	}
	r.Network.Name = name
	c.lines[""] = line

	if n.Bridge != nil {
		c.leftovers("bridge", n.Bridge.Line, n.Bridge.V.rest)
		r.Network.Bridge = n.Bridge.V.Name
		c.lines["bridge"] = n.Bridge.Line
	}
	c.forward(line, n)
	if r.Network.Bridge == "" {
		r.Network.Bridge = "gn-" + name
		if r.Network.Mode != model.Bridge {
			c.warnf(line, "no <bridge name>: libvirt names the bridge virbrN when it defines the network; guestnet's is %s (say bridge: to keep libvirt's)", r.Network.Bridge)
		}
	}
	if n.MTU != nil {
		c.leftovers("mtu", n.MTU.Line, n.MTU.V.rest)
		c.lines["mtu"] = n.MTU.Line
		m, err := strconv.Atoi(n.MTU.V.Size)
		if err != nil {
			c.errorf(n.MTU.Line, "<mtu size=%q>: want a number", n.MTU.V.Size)
		}
		r.Network.MTU = m
	}
	if n.Domain != nil {
		c.domain = strings.TrimSuffix(n.Domain.V.Name, ".") // host names are read against it
	}
	for _, ipe := range n.IPs {
		c.ip(ipe.Line, &ipe.V)
	}
	c.dns(line, n)
	for _, rt := range n.Routes {
		c.route(rt.Line, &rt.V)
	}
	c.defaults()
}

// forward sets the mode (and uplink) from <forward>.
func (c *conv) forward(line int, n *network) {
	nw := &c.res.Network
	if n.Forward == nil {
		nw.Mode = model.Isolated
		c.lines["mode"] = line
		return
	}
	f, fl := &n.Forward.V, n.Forward.Line
	c.lines["mode"] = fl
	c.leftovers("forward", fl, f.rest)
	mode := "nat" // libvirt's default for a <forward> without mode
	if f.Mode != nil {
		mode = *f.Mode
	}
	var devs []string
	if f.Dev != "" {
		devs = append(devs, f.Dev)
	}
	for _, i := range f.Interfaces {
		c.leftovers("interface", i.Line, i.V.rest)
		if !slices.Contains(devs, i.V.Dev) {
			devs = append(devs, i.V.Dev)
		}
	}
	if f.NAT != nil {
		c.leftovers("nat", f.NAT.Line, f.NAT.V.rest)
		if mode != "nat" {
			c.errorf(f.NAT.Line, "<nat> in a <forward mode=%q>: libvirt allows it in mode nat only", mode)
		}
	}
	switch mode {
	case "nat", "route":
		nw.Mode = model.NAT
		if mode == "route" {
			nw.Mode = model.Routed
		}
		if len(devs) > 0 {
			c.warnf(fl, "<forward dev=%q> is left out: libvirt forwards only through %s; guestnet forwards through whatever interface the routing table picks", devs[0], strings.Join(devs, ", "))
		}
		if mode == "nat" && hasIPv6(n) && (f.NAT == nil || f.NAT.V.IPv6 != "yes") {
			c.warnf(fl, "libvirt routes a nat network's IPv6 without NAT unless <nat ipv6='yes'>; guestnet's mode nat masquerades IPv6 too (NAT66); for routed IPv6, make it a network of mode routed")
		}
	case "open":
		nw.Mode = model.Open
	case "bridge":
		nw.Mode = model.Bridge
		switch {
		case n.Bridge == nil || n.Bridge.V.Name == "":
			c.errorf(fl, "<forward mode='bridge'> without <bridge name> is macvtap (guests on the NIC directly, no bridge): guestnet's networks are Linux bridges; for one, say <bridge name='br0'/> and the NIC as <forward mode='bridge' dev='eth0'/>")
		case len(devs) == 0:
			c.errorf(fl, "<forward mode='bridge'> on bridge %s, which libvirt finds made by someone else: guestnet makes the bridge itself and moves the NIC into it, so it needs the NIC: say <forward mode='bridge' dev='eth0'/> (guestnet reads it; libvirt itself refuses dev beside a bridge name), and remove the existing bridge before guestnet apply", n.Bridge.V.Name)
		case len(devs) > 1:
			c.errorf(fl, "<forward mode='bridge'> names %d interfaces (%s): guestnet's mode bridge takes one uplink", len(devs), strings.Join(devs, ", "))
		default:
			nw.Uplink = devs[0]
			c.lines["uplink"] = fl
		}
	case "private", "vepa", "passthrough":
		c.errorf(fl, "<forward mode=%q> is macvtap (guests on the NIC directly, no bridge): guestnet's networks are Linux bridges; mode bridge with an uplink comes closest", mode)
	case "hostdev":
		c.errorf(fl, "<forward mode='hostdev'> passes SR-IOV devices to guests: no bridge, nothing guestnet makes; keep it in libvirt")
	default:
		c.errorf(fl, "<forward mode=%q> is not a libvirt mode guestnet knows (nat, route, open, bridge)", mode)
	}
}

func hasIPv6(n *network) bool {
	return slices.ContainsFunc(n.IPs, func(i at[ip]) bool { return i.V.Family == "ipv6" })
}

// ip reads one <ip>: the bridge address and its DHCP.
func (c *conv) ip(line int, x *ip) {
	nw := &c.res.Network
	c.leftovers("ip", line, x.rest)
	a, err := netip.ParseAddr(x.Address)
	if err != nil || a.Zone() != "" {
		c.errorf(line, "<ip address=%q>: want an IPv4 or IPv6 address", x.Address)
		return
	}
	family := x.Family
	if family == "" {
		family = "ipv4"
	}
	if family != "ipv4" && family != "ipv6" || (family == "ipv6") != (a.Is6() && !a.Is4In6()) {
		c.errorf(line, "<ip family=%q address=%q>: the family and the address disagree", x.Family, x.Address)
		return
	}
	bitsLen, ok := prefixLen(x.Prefix, x.Netmask, a.Is4())
	if !ok {
		c.errorf(line, "<ip address=%q> with prefix=%q netmask=%q: want one valid prefix length or netmask", x.Address, x.Prefix, x.Netmask)
		return
	}
	p := netip.PrefixFrom(a, bitsLen)
	field := "ipv4"
	if a.Is6() {
		field = "ipv6"
	}
	if _, dup := c.lines[field]; dup {
		c.errorf(line, "a second %s address (%s): a guestnet network has one address of each family on its bridge", strings.ToUpper(field[:2])+field[2:], p)
		return
	}
	c.lines[field] = line
	if a.Is4() {
		nw.IPv4 = p
	} else {
		nw.IPv6 = p
	}
	if x.DHCP != nil {
		c.dhcp(x.DHCP.Line, &x.DHCP.V, a.Is4())
	}
}

// prefixLen reads prefix='24' or netmask='255.255.255.0' (IPv4 only).
func prefixLen(prefix, netmask string, v4 bool) (int, bool) {
	max := 128
	if v4 {
		max = 32
	}
	switch {
	case prefix != "" && netmask != "":
		return 0, false
	case prefix != "":
		n, err := strconv.Atoi(prefix)
		return n, err == nil && n >= 0 && n <= max
	case netmask != "":
		m, err := netip.ParseAddr(netmask)
		if err != nil || !m.Is4() || !v4 {
			return 0, false
		}
		b := m.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ones := bits.LeadingZeros32(^v)
		want := uint32(0)
		if ones > 0 {
			want = ^uint32(0) << (32 - ones)
		}
		return ones, v == want
	case v4:
		return 0, false // libvirt requires one for IPv4
	}
	return 64, true // libvirt's default for IPv6
}

// dhcp reads an <ip>'s <dhcp> into dhcp: (IPv4) or dhcp6:.
func (c *conv) dhcp(line int, d *dhcp, v4 bool) {
	nw := &c.res.Network
	c.leftovers("dhcp", line, d.rest)
	key := "dhcp6"
	if v4 {
		key = "dhcp"
	}
	c.lines[key] = line
	var ranges []model.Range
	var lease time.Duration
	leaseLine := 0
	for i, r := range d.Ranges {
		c.leftovers("range", r.Line, r.V.rest)
		from, e1 := netip.ParseAddr(r.V.Start)
		to, e2 := netip.ParseAddr(r.V.End)
		if e1 != nil || e2 != nil || from.Is4() != v4 || to.Is4() != v4 || to.Less(from) {
			c.errorf(r.Line, "<range start=%q end=%q>: want two addresses of the <ip>'s family, the first no greater", r.V.Start, r.V.End)
			continue
		}
		ranges = append(ranges, model.Range{From: from, To: to})
		c.lines[fmt.Sprintf("%s.range[%d]", key, i)] = r.Line
		if r.V.Lease == nil {
			continue
		}
		l, ok := c.lease(r.V.Lease)
		switch {
		case !ok:
		case leaseLine == 0:
			lease, leaseLine = l, r.V.Lease.Line
			c.lines[key+".lease"] = leaseLine
		case l != lease:
			c.warnf(r.V.Lease.Line, "lease %s is left out: guestnet has one lease time per network, %s (line %d)", duration(l), duration(lease), leaseLine)
		}
	}
	if v4 {
		nw.DHCP = &model.DHCP{Ranges: ranges, Lease: lease}
	} else {
		nw.DHCP6 = &model.DHCP6{Ranges: ranges, Lease: lease}
	}
	for _, h := range d.Hosts {
		c.dhcpHost(key, &h, v4)
	}
}

// lease reads a <lease>; ok is false when guestnet cannot keep it.
func (c *conv) lease(l *at[lease]) (time.Duration, bool) {
	c.leftovers("lease", l.Line, l.V.rest)
	n, err := strconv.Atoi(l.V.Expiry)
	unit := map[string]time.Duration{"": time.Minute, "seconds": time.Second, "minutes": time.Minute, "hours": time.Hour}[l.V.Unit]
	switch {
	case err != nil || n < 0 || unit == 0:
		c.errorf(l.Line, "<lease expiry=%q unit=%q>: want a whole number of seconds, minutes or hours", l.V.Expiry, l.V.Unit)
		return 0, false
	case n == 0:
		c.warnf(l.Line, "an infinite lease (expiry='0') is left out: guestnet's leases expire; the network's lease time applies")
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// dhcpHost reads one <host> of a <dhcp>.
func (c *conv) dhcpHost(key string, h *at[dhcpHost], v4 bool) {
	nw := &c.res.Network
	x := &h.V
	c.leftovers("host", h.Line, x.rest)
	if x.Lease != nil {
		if l, ok := c.lease(x.Lease); ok {
			c.warnf(x.Lease.Line, "the host's own lease %s is left out: guestnet has one lease time per network", duration(l))
		}
	}
	ipa, err := netip.ParseAddr(x.IP)
	if x.IP == "" {
		c.warnf(h.Line, "<host mac=%q name=%q> without ip is left out: guestnet's static hosts give an address (the guest gets one from the range)", x.MAC, x.Name)
		return
	}
	if err != nil || ipa.Is4() != v4 || ipa.Zone() != "" {
		c.errorf(h.Line, "<host ip=%q>: want an address of the <ip>'s family", x.IP)
		return
	}
	name := c.hostName(h.Line, x.Name)
	if v4 {
		if x.MAC == "" {
			c.warnf(h.Line, "<host ip=%q> is left out: it names no mac, and guestnet's DHCP matches a client by MAC only (not by id or the name it sends): the guest gets an address from the range instead", x.IP)
			return
		}
		mac, err := net.ParseMAC(x.MAC)
		if err != nil || len(mac) != 6 {
			c.errorf(h.Line, "<host mac=%q>: want a MAC address like 52:54:00:aa:bb:cc", x.MAC)
			return
		}
		if x.ID != "" {
			c.warnf(h.Line, "<host id=%q> is left out: guestnet matches the client by its MAC %s", x.ID, mac)
		}
		c.lines[fmt.Sprintf("dhcp.hosts[%d]", len(nw.DHCP.Hosts))] = h.Line
		nw.DHCP.Hosts = append(nw.DHCP.Hosts, model.StaticHost{MAC: mac.String(), IP: ipa, Name: name})
		return
	}
	h6 := model.StaticHost6{IP: ipa, Name: name}
	switch {
	case x.ID != "":
		duid, ok := parseDUID(x.ID)
		if !ok {
			c.errorf(h.Line, "<host id=%q>: want a DUID as hex bytes separated by ':'", x.ID)
			return
		}
		h6.DUID = duid
	case x.MAC != "":
		mac, err := net.ParseMAC(x.MAC)
		if err != nil || len(mac) != 6 {
			c.errorf(h.Line, "<host mac=%q>: want a MAC address like 52:54:00:aa:bb:cc", x.MAC)
			return
		}
		h6.MAC = mac.String()
	default:
		c.warnf(h.Line, "<host name=%q ip=%q> is left out: guestnet's DHCPv6 matches a client by DUID or MAC, not by the name it sends: give the host id='DUID' to keep its address (the guest gets one from the range, if any, instead)", x.Name, x.IP)
		return
	}
	c.lines[fmt.Sprintf("dhcp6.hosts[%d]", len(nw.DHCP6.Hosts))] = h.Line
	nw.DHCP6.Hosts = append(nw.DHCP6.Hosts, h6)
}

// parseDUID reads libvirt's "0:1:0:1:18:aa:..." (a byte per group, leading
// zeros optional) as guestnet writes DUIDs, "00:01:00:01:18:aa:...".
func parseDUID(s string) (string, bool) {
	var out []string
	for _, g := range strings.Split(strings.ToLower(s), ":") {
		v, err := strconv.ParseUint(g, 16, 8)
		if err != nil || g == "" {
			return "", false
		}
		out = append(out, fmt.Sprintf("%02x", v))
	}
	return strings.Join(out, ":"), len(out) >= 3
}

var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// hostName maps a libvirt host name to guestnet's (one label: guestnet
// adds dns.domain): "foo.example.com" becomes "foo", with a warning unless
// example.com is the network's domain.
func (c *conv) hostName(line int, name string) string {
	if name == "" {
		return ""
	}
	label, domain, dotted := strings.Cut(name, ".")
	if dotted && !strings.EqualFold(strings.TrimSuffix(domain, "."), c.domain) {
		c.warnf(line, "host name %q becomes %q: guestnet's host names are one label, under the network's dns domain", name, label)
	}
	if !hostRE.MatchString(label) {
		c.warnf(line, "host name %q is left out: guestnet's host names are letters, digits and '-'", name)
		return ""
	}
	return label
}

// dns reads <domain> and <dns> into dns: (and warns of what libvirt's
// dnsmasq does that guestnet's DNS does not).
func (c *conv) dns(line int, n *network) {
	nw := &c.res.Network
	enabled := true
	var d *dns
	dl := line
	if n.DNS != nil {
		d, dl = &n.DNS.V, n.DNS.Line
		c.leftovers("dns", dl, d.rest)
		switch d.Enable {
		case "", "yes":
		case "no":
			enabled = false
		default:
			c.errorf(dl, "<dns enable=%q>: want yes or no", d.Enable)
		}
	}
	hasAddr := nw.IPv4.IsValid() || nw.IPv6.IsValid()
	if n.Domain != nil {
		c.leftovers("domain", n.Domain.Line, n.Domain.V.rest)
		if lo := n.Domain.V.LocalOnly; lo != "" && lo != "yes" && lo != "no" {
			c.errorf(n.Domain.Line, "<domain localOnly=%q>: want yes or no", lo)
		}
	}
	if !enabled || !hasAddr {
		if d != nil && (len(d.Forwarders) > 0 || len(d.Hosts) > 0) {
			c.warnf(dl, "<dns> is left out: libvirt serves no DNS on this network (disabled, or no address on the bridge)")
		}
		return
	}
	if n.Domain == nil || n.Domain.V.Name == "" {
		c.warnf(dl, "no <domain>: libvirt answers DNS on the bridge for every network, forwarding to the host's resolvers; guestnet serves DNS only with dns: {domain: ..., upstream: [...]}, so guests get no DNS server from DHCP until you add it")
		if d != nil && (len(d.Forwarders) > 0 || len(d.Hosts) > 0) {
			c.warnf(dl, "<dns> is left out with it")
		}
		return
	}
	nw.DNS = &model.DNS{Domain: c.domain}
	if n.Domain.V.LocalOnly != "yes" {
		c.warnf(n.Domain.Line, "names under %s that guestnet does not know get no answer from upstream: guestnet answers its domain itself, as libvirt's localOnly='yes' does", c.domain)
	}
	c.lines["dns"] = n.Domain.Line
	c.lines["dns.domain"] = n.Domain.Line
	if d == nil {
		c.warnf(n.Domain.Line, "libvirt forwards names outside %s to the host's resolvers; guestnet forwards them to dns.upstream only: none is given, so add upstream: [your resolver] to resolve the internet", c.domain)
		return
	}
	for _, f := range d.Forwarders {
		c.leftovers("forwarder", f.Line, f.V.rest)
		switch {
		case f.V.Domain != "":
			c.warnf(f.Line, "<forwarder domain=%q> is left out: guestnet forwards every name outside %s to the same upstream", f.V.Domain, c.domain)
		case f.V.Addr == "":
			c.errorf(f.Line, "<forwarder> with neither addr nor domain")
		default:
			a, err := netip.ParseAddr(f.V.Addr)
			if err != nil || a.Zone() != "" {
				c.errorf(f.Line, "<forwarder addr=%q>: want an address", f.V.Addr)
				continue
			}
			c.lines[fmt.Sprintf("dns.upstream[%d]", len(nw.DNS.Upstream))] = f.Line
			nw.DNS.Upstream = append(nw.DNS.Upstream, a.Unmap())
		}
	}
	if len(nw.DNS.Upstream) == 0 {
		c.warnf(dl, "libvirt forwards names outside %s to the host's resolvers; guestnet forwards them to dns.upstream only: none is given, so add upstream: [your resolver] to resolve the internet", c.domain)
	}
	for _, h := range d.Hosts {
		c.leftovers("host", h.Line, h.V.rest)
		a, _ := netip.ParseAddr(h.V.IP)
		for _, hn := range h.V.Hostnames {
			c.leftovers("hostname", hn.Line, hn.V.rest)
			name := strings.TrimSpace(hn.V.Text)
			if c.served(a, name) {
				continue
			}
			c.warnf(hn.Line, "DNS host %s -> %s is left out: guestnet's DNS answers the names of DHCP hosts and leases only (give the guest a dhcp host entry with that name)", name, h.V.IP)
		}
	}
}

// served reports whether guestnet's DNS answers name with a: a static
// host of that address has that name (as one label under the domain).
func (c *conv) served(a netip.Addr, name string) bool {
	label, dom, dotted := strings.Cut(name, ".")
	if dotted && !strings.EqualFold(strings.TrimSuffix(dom, "."), c.domain) {
		return false
	}
	nw := &c.res.Network
	if nw.DHCP != nil && slices.ContainsFunc(nw.DHCP.Hosts, func(h model.StaticHost) bool { return h.IP == a && strings.EqualFold(h.Name, label) }) {
		return true
	}
	return nw.DHCP6 != nil && slices.ContainsFunc(nw.DHCP6.Hosts, func(h model.StaticHost6) bool { return h.IP == a && strings.EqualFold(h.Name, label) })
}

// route warns of a <route>: libvirt adds it to the host's routing table
// (through a guest acting as router); guestnet adds no such route.
func (c *conv) route(line int, r *route) {
	c.leftovers("route", line, r.rest)
	a, err := netip.ParseAddr(r.Address)
	gw, gerr := netip.ParseAddr(r.Gateway)
	n, ok := prefixLen(r.Prefix, r.Netmask, err == nil && a.Is4())
	if err != nil || gerr != nil || !ok {
		c.errorf(line, "<route address=%q prefix=%q netmask=%q gateway=%q>: want an address, a prefix length or netmask, and a gateway", r.Address, r.Prefix, r.Netmask, r.Gateway)
		return
	}
	cmd := fmt.Sprintf("ip route add %s via %s", netip.PrefixFrom(a, n).Masked(), gw)
	if r.Metric != "" {
		cmd += " metric " + r.Metric
	}
	c.warnf(line, "<route> is left out: guestnet adds no routes through guests; after guestnet apply, add it yourself: %s", cmd)
}

// defaults fills what spec.Load fills, so that the result equals what
// loading its YAML gives.
func (c *conv) defaults() {
	nw := &c.res.Network
	if d := nw.DHCP; d != nil {
		if d.Lease == 0 {
			d.Lease = spec.DefaultLease
		}
		d.PerPort = spec.DefaultPerPort
		if nw.DNS != nil {
			if nw.IPv4.IsValid() {
				d.DNS = []netip.Addr{nw.IPv4.Addr()}
			}
			d.Domain = nw.DNS.Domain
		}
	}
	if d := nw.DHCP6; d != nil {
		if d.Lease == 0 {
			d.Lease = spec.DefaultLease
		}
		d.PerPort = spec.DefaultPerPort
	}
}
