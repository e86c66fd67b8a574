// Package libvirt reads libvirt's network XML (virsh net-dumpxml, the files
// of /etc/libvirt/qemu/networks) and turns one <network> into a guestnet
// spec network: the model value and the YAML text spec.Load accepts.
//
// Nothing is dropped without a word: every element and attribute the
// structs below do not name lands in a catch-all (xml:",any" and
// xml:",any,attr") and is reported, as an error when guestnet cannot do
// what it asks, as a warning when leaving it out changes nothing a guest
// depends on. See https://libvirt.org/formatnetwork.html.
package libvirt

import (
	"encoding/xml"
	"fmt"
)

// at is an element with the line it was read at (the line of the start
// tag's closing '>', which is the tag's line for all but tags spread over
// several lines).
type at[T any] struct {
	Line int
	V    T
}

// UnmarshalXML refuses what encoding/xml would read otherwise than
// libvirt (libxml2 and XPath) does: a second element where libvirt reads
// one (the decoder would keep the last, libvirt reads the first), an
// element or attribute of another namespace standing in for libvirt's by
// its local name, an attribute given twice (not well-formed XML, which
// encoding/xml lets through with the last value).
func (a *at[T]) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	line, _ := d.InputPos()
	if a.Line != 0 {
		return &xmlError{line, fmt.Sprintf("a second <%s> (the first is at line %d): libvirt reads the first only; remove the one you do not mean", start.Name.Local, a.Line)}
	}
	if _, unknown := any(&a.V).(*element); !unknown {
		if start.Name.Space != "" {
			return &xmlError{line, fmt.Sprintf("<%s> of namespace %s is not libvirt's <%s>: libvirt's network elements have no namespace", start.Name.Local, start.Name.Space, start.Name.Local)}
		}
		seen := map[string]bool{}
		for _, at := range start.Attr {
			if at.Name.Space == "xmlns" || at.Name.Space == "" && at.Name.Local == "xmlns" {
				continue
			}
			if at.Name.Space != "" && at.Name.Space != "xml" && at.Name.Space != "http://www.w3.org/XML/1998/namespace" {
				return &xmlError{line, fmt.Sprintf("attribute %s of namespace %s in <%s> is not libvirt's %s: libvirt's attributes have no namespace", at.Name.Local, at.Name.Space, start.Name.Local, at.Name.Local)}
			}
			if seen[at.Name.Local] {
				return &xmlError{line, fmt.Sprintf("attribute %s given twice in <%s>: not well-formed XML", at.Name.Local, start.Name.Local)}
			}
			seen[at.Name.Local] = true
		}
	}
	a.Line = line
	return d.DecodeElement(&a.V, &start)
}

// xmlError is a refusal while decoding, at the line it is about.
type xmlError struct {
	Line int
	Msg  string
}

func (e *xmlError) Error() string { return e.Msg }

// dnsmasqNS is the namespace of libvirt's <dnsmasq:options>.
const dnsmasqNS = "http://libvirt.org/schemas/network/dnsmasq/1.0"

// rest is what a struct does not name: its unknown attributes and child
// elements.
type rest struct {
	Attrs []xml.Attr    `xml:",any,attr"`
	Elems []at[element] `xml:",any"`
}

// element is an element nobody decodes: its name, attributes and, skipped,
// its content.
type element struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

type network struct {
	XMLName xml.Name     `xml:"network"`
	Name    *at[text]    `xml:"name"`
	Forward *at[forward] `xml:"forward"`
	Bridge  *at[bridge]  `xml:"bridge"`
	MTU     *at[mtu]     `xml:"mtu"`
	Domain  *at[domain]  `xml:"domain"`
	DNS     *at[dns]     `xml:"dns"`
	IPs     []at[ip]     `xml:"ip"`
	Routes  []at[route]  `xml:"route"`
	rest
}

type text struct {
	Text string `xml:",chardata"`
	rest
}

type forward struct {
	Mode       *string     `xml:"mode,attr"`
	Dev        string      `xml:"dev,attr"`
	NAT        *at[nat]    `xml:"nat"`
	Interfaces []at[iface] `xml:"interface"`
	rest
}

type nat struct {
	IPv6 string `xml:"ipv6,attr"`
	rest
}

type iface struct {
	Dev string `xml:"dev,attr"`
	rest
}

type bridge struct {
	Name string `xml:"name,attr"`
	rest
}

type mtu struct {
	Size string `xml:"size,attr"`
	rest
}

type domain struct {
	Name      string `xml:"name,attr"`
	LocalOnly string `xml:"localOnly,attr"`
	rest
}

type dns struct {
	Enable     string          `xml:"enable,attr"`
	Forwarders []at[forwarder] `xml:"forwarder"`
	Hosts      []at[dnsHost]   `xml:"host"`
	rest
}

type forwarder struct {
	Addr   string `xml:"addr,attr"`
	Domain string `xml:"domain,attr"`
	rest
}

type dnsHost struct {
	IP        string     `xml:"ip,attr"`
	Hostnames []at[text] `xml:"hostname"`
	rest
}

type ip struct {
	Address string    `xml:"address,attr"`
	Netmask string    `xml:"netmask,attr"`
	Prefix  string    `xml:"prefix,attr"`
	Family  string    `xml:"family,attr"`
	DHCP    *at[dhcp] `xml:"dhcp"`
	rest
}

type dhcp struct {
	Ranges []at[dhcpRange] `xml:"range"`
	Hosts  []at[dhcpHost]  `xml:"host"`
	rest
}

type dhcpRange struct {
	Start string     `xml:"start,attr"`
	End   string     `xml:"end,attr"`
	Lease *at[lease] `xml:"lease"`
	rest
}

type dhcpHost struct {
	MAC   string     `xml:"mac,attr"`
	ID    string     `xml:"id,attr"`
	Name  string     `xml:"name,attr"`
	IP    string     `xml:"ip,attr"`
	Lease *at[lease] `xml:"lease"`
	rest
}

type lease struct {
	Expiry string `xml:"expiry,attr"`
	Unit   string `xml:"unit,attr"`
	rest
}

type route struct {
	Family  string `xml:"family,attr"`
	Address string `xml:"address,attr"`
	Prefix  string `xml:"prefix,attr"`
	Netmask string `xml:"netmask,attr"`
	Gateway string `xml:"gateway,attr"`
	Metric  string `xml:"metric,attr"`
	rest
}
