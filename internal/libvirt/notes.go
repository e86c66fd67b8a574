package libvirt

import (
	"encoding/xml"
	"fmt"
)

// note is what guestnet says about an element or attribute it has no
// field for: an error when guestnet cannot do what it asks, a warning when
// leaving it out changes nothing a guest depends on.
type note struct {
	err bool
	msg string
}

// notes are keyed "parent/element" and "element@attribute" (local names).
// What is not here is unknown, and an error: guestnet cannot tell whether
// it matters.
var notes = map[string]note{
	"network@ipv6":                {false, "guests talk IPv6 to each other on every guestnet bridge; nothing to set"},
	"network@trustGuestRxFilters": {false, "it applies to macvtap interfaces, which guestnet does not make"},
	"network@connections":         {false, "a live count of libvirt's, not configuration"},
	"network/uuid":                {false, "libvirt's identifier of the network; guestnet knows networks by name"},
	"network/metadata":            {false, "application data libvirt keeps for others; guestnet keeps none"},
	"network/mac":                 {false, "the bridge's MAC address: the kernel picks it; guests find their gateway by ARP either way"},
	"network/bandwidth":           {true, "QoS: guestnet shapes no traffic; remove the element to import the network without it (tc can shape the bridge)"},
	"network/vlan":                {true, "VLAN tags apply to Open vSwitch and SR-IOV connections, which guestnet does not make"},
	"network/portgroup":           {true, "port groups give interfaces QoS, VLAN or virtualport settings, none of which guestnet has"},
	"network/virtualport":         {true, "Open vSwitch and 802.1Qbg/802.1Qbh ports: guestnet makes Linux bridges only"},
	"network/port":                {true, "<port isolated='yes'> keeps the guests of a network from each other; guestnet's guests of one network reach each other (give each guest a network of its own instead)"},
	"network/dnsmasq:options":     {true, "raw dnsmasq options: guestnet runs no dnsmasq; remove them, or express them in guestnet's dhcp: and dns:"},
	"forward@managed":             {false, "it applies to hostdev networks only"},
	"forward/pf":                  {true, "an SR-IOV physical function's pool of virtual functions: guestnet makes no direct or hostdev connections"},
	"forward/address":             {true, "PCI devices for hostdev passthrough: guestnet makes no hostdev connections"},
	"forward/driver":              {true, "the driver of hostdev passthrough: guestnet makes no hostdev connections"},
	"nat/address":                 {true, "NAT to a range of public addresses: guestnet masquerades to the address of the interface the route picks; remove <address> to accept that, or give guests public addresses with floating:"},
	"nat/port":                    {false, "guestnet masquerades with the source ports the kernel picks"},
	"bridge@stp":                  {false, "guestnet makes its bridges with the kernel's default, STP off (guest ports cannot make a loop)"},
	"bridge@delay":                {false, "the forward delay matters with STP only, which guestnet's bridges do not run"},
	"bridge@macTableManager":      {false, "the kernel learns the bridge's MAC table (libvirt's default, 'kernel')"},
	"bridge@zone":                 {false, "a firewalld zone: guestnet keeps its own nftables table and leaves firewalld alone"},
	"domain@register":             {false, "guestnet does not register the domain with systemd-resolved; the host resolves guests' names by asking the bridge address"},
	"dns@forwardPlainNames":       {false, "guestnet forwards every name outside its domain to dns.upstream"},
	"dns/txt":                     {false, "guestnet's DNS serves the guests' address and reverse records only, no TXT records"},
	"dns/srv":                     {false, "guestnet's DNS serves the guests' address and reverse records only, no SRV records"},
	"ip@localPtr":                 {false, "guestnet answers the reverse names of its subnets itself"},
	"ip/tftp":                     {true, "TFTP: guestnet serves no boot files; keep a TFTP server of your own and remove the element"},
	"dhcp/bootp":                  {true, "BOOTP boot file (network boot): guestnet's DHCP sends no boot file name; remove the element to import the network without it"},
}

// leftovers reports r's unknown attributes and elements, read inside the
// element named parent at line.
func (c *conv) leftovers(parent string, line int, r rest) {
	for _, a := range r.Attrs {
		if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
			continue // a namespace declaration
		}
		what := fmt.Sprintf("attribute %s=%q of <%s>", a.Name.Local, a.Value, parent)
		c.noted(parent+"@"+a.Name.Local, line, what)
	}
	for _, e := range r.Elems {
		what := fmt.Sprintf("<%s> in <%s>", qname(e.V.XMLName), parent)
		c.noted(parent+"/"+qname(e.V.XMLName), e.Line, what)
	}
}

func (c *conv) noted(key string, line int, what string) {
	n, ok := notes[key]
	switch {
	case !ok:
		c.errorf(line, "%s: guestnet does not know it, so cannot say it does what libvirt does; remove it if it does not matter", what)
	case n.err:
		c.errorf(line, "%s is not supported: %s", what, n.msg)
	default:
		c.warnf(line, "%s is left out: %s", what, n.msg)
	}
}

// qname is an element's name as written, with "dnsmasq:" for libvirt's
// dnsmasq namespace.
func qname(n xml.Name) string {
	if n.Space == dnsmasqNS {
		return "dnsmasq:" + n.Local
	}
	return n.Local
}
