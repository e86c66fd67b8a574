package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

// BGP is the declared bgp section and where each of its fields was
// written.
type BGP struct {
	model.BGP
	File  string
	Line  int            // line of the "bgp" key
	Lines map[string]int // field name ("peers[1].asn") -> line
}

func (b *BGP) errorf(field, format string, args ...any) *Error {
	line := b.Line
	// A missing key has no line: take its parent's ("peers[0]").
	for k := field; k != ""; {
		if l, ok := b.Lines[k]; ok {
			line = l
			break
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	f := "bgp"
	if field != "" {
		f += "." + field
	}
	return &Error{File: b.File, Line: line, Field: f, Msg: fmt.Sprintf(format, args...)}
}

var bgpFields = []string{"asn", "router_id", "listen", "port", "peers", "import"}

// parseBGP reads the bgp section of a file.
func parseBGP(file string, key, v *yaml.Node) (*BGP, error) {
	b := &BGP{File: file, Line: key.Line, Lines: map[string]int{}}
	if v.Kind != yaml.MappingNode {
		return nil, b.errorf("", "want a mapping with keys %s", strings.Join(bgpFields, ", "))
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for i := 0; i < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if _, dup := b.Lines[k.Value]; dup {
			add(b.errorf(k.Value, "set twice"))
			continue
		}
		b.Lines[k.Value] = k.Line
		switch k.Value {
		case "asn":
			b.ASN, _ = b.asn(k.Value, val, &errs)
		case "router_id":
			a, err := netip.ParseAddr(val.Value)
			if val.Kind != yaml.ScalarNode || err != nil || !a.Is4() || a.IsUnspecified() {
				add(b.errorf(k.Value, "want an IPv4 address (the BGP identifier), not %q", val.Value))
			}
			b.RouterID = a
		case "port":
			p, err := strconv.Atoi(val.Value)
			if val.Kind != yaml.ScalarNode || err != nil || p < 1 || p > 65535 {
				add(b.errorf(k.Value, "want a TCP port from 1 to 65535, not %q", val.Value))
			}
			b.Port = p
		case "listen":
			b.Listen = b.addrs(k.Value, val, &errs)
		case "import":
			b.Import = b.prefixes(k.Value, val, &errs)
		case "peers":
			b.parsePeers(val, &errs)
		default:
			add(b.errorf(k.Value, "unknown key (want one of %s)", strings.Join(bgpFields, ", ")))
		}
	}
	if _, ok := b.Lines["asn"]; !ok {
		add(b.errorf("asn", "missing: this host's AS number"))
	}
	if _, ok := b.Lines["peers"]; !ok {
		add(b.errorf("peers", "missing: the neighbours to open sessions with, like [{address: 10.10.0.2, asn: 65002}]"))
	}
	if b.Port == 0 {
		b.Port = model.BGPPort
	}
	if _, ok := b.Lines["router_id"]; !ok && len(b.Peers) > 0 && !slices.ContainsFunc(b.Peers, func(p model.BGPPeer) bool { return p.Address.Is4() }) {
		// The identifier is an IPv4 address even on IPv6 sessions (RFC
		// 4271, RFC 6286 only widens its meaning): nothing to take it from.
		add(b.errorf("router_id", "missing: every peer is IPv6, and the BGP identifier is an IPv4 address taken from the first IPv4 peer's subnet; set router_id to one of this host's IPv4 addresses (any unique dotted quad works)"))
	}
	if _, ok := b.Lines["import"]; !ok {
		b.Import = slices.Clone(model.DefaultImport)
	}
	seen := map[netip.Addr]int{}
	for i, p := range b.Peers {
		f := "peers[" + itoa(i) + "]"
		if j, dup := seen[p.Address]; dup && p.Address.IsValid() {
			add(b.errorf(f+".address", "%s is also peers[%d]", p.Address, j))
		}
		seen[p.Address] = i
		if slices.Contains(b.Listen, p.Address) || p.Address == b.RouterID && b.RouterID.IsValid() {
			add(b.errorf(f+".address", "%s is this host's own address (listen or router_id)", p.Address))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

// asn reads an AS number (1 to 4294967294: 0 and 4294967295 are
// reserved, RFC 7607 and RFC 7300).
func (b *BGP) asn(field string, v *yaml.Node, errs *[]error) (uint32, bool) {
	n, err := strconv.ParseUint(v.Value, 10, 32)
	if v.Kind != yaml.ScalarNode || err != nil || n == 0 || n == 4294967295 {
		*errs = append(*errs, b.errorf(field, "want an AS number from 1 to 4294967294, not %q", v.Value))
		return 0, false
	}
	return uint32(n), true
}

// list returns the items of a sequence (a single scalar counts as a list
// of one).
func (b *BGP) list(field, want string, v *yaml.Node, errs *[]error) []*yaml.Node {
	switch v.Kind {
	case yaml.SequenceNode:
		return v.Content
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil
		}
		return []*yaml.Node{v}
	}
	*errs = append(*errs, b.errorf(field, "want a list of %s", want))
	return nil
}

func (b *BGP) addrs(field string, v *yaml.Node, errs *[]error) []netip.Addr {
	var out []netip.Addr
	for i, it := range b.list(field, "IP addresses", v, errs) {
		f := field + "[" + itoa(i) + "]"
		b.Lines[f] = it.Line
		a, err := netip.ParseAddr(it.Value)
		if it.Kind != yaml.ScalarNode || err != nil || !(a.Is4() || unicastAddr(a)) {
			*errs = append(*errs, b.errorf(f, "want one of this host's IPv4 or IPv6 addresses (global or unique local), not %q", it.Value))
			continue
		}
		out = append(out, a)
	}
	return out
}

func (b *BGP) prefixes(field string, v *yaml.Node, errs *[]error) []netip.Prefix {
	out := []netip.Prefix{} // an empty list is written: install nothing
	for i, it := range b.list(field, "prefixes like 10.0.0.0/8 or fd00::/8", v, errs) {
		f := field + "[" + itoa(i) + "]"
		b.Lines[f] = it.Line
		p, err := netip.ParsePrefix(it.Value)
		if it.Kind != yaml.ScalarNode || err != nil || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			*errs = append(*errs, b.errorf(f, "want an IPv4 or IPv6 prefix like 10.0.0.0/8 or fd00::/8, not %q", it.Value))
			continue
		}
		if p != p.Masked() {
			*errs = append(*errs, b.errorf(f, "%s has host bits set: did you mean %s?", p, p.Masked()))
			continue
		}
		out = append(out, p)
	}
	return out
}

var peerFields = []string{"address", "asn", "hold", "max_prefixes"}

func (b *BGP) parsePeers(v *yaml.Node, errs *[]error) {
	for i, it := range b.list("peers", "{address, asn, hold}", v, errs) {
		f := "peers[" + itoa(i) + "]"
		b.Lines[f] = it.Line
		if it.Kind != yaml.MappingNode {
			*errs = append(*errs, b.errorf(f, "want a mapping with keys %s", strings.Join(peerFields, ", ")))
			continue
		}
		p := model.BGPPeer{Hold: model.BGPHold, MaxPrefixes: model.BGPMaxPrefixes}
		for j := 0; j < len(it.Content); j += 2 {
			k, val := it.Content[j], it.Content[j+1]
			kf := f + "." + k.Value
			b.Lines[kf] = k.Line
			switch k.Value {
			case "address":
				a, err := netip.ParseAddr(val.Value)
				if val.Kind != yaml.ScalarNode || err != nil || !unicastAddr(a) {
					*errs = append(*errs, b.errorf(kf, "want the neighbour's IPv4 or IPv6 address (global or unique local: a link-local one names no interface), not %q", val.Value))
				}
				p.Address = a
			case "asn":
				p.ASN, _ = b.asn(kf, val, errs)
			case "hold":
				d, err := time.ParseDuration(val.Value)
				if err != nil {
					if s, serr := strconv.Atoi(val.Value); serr == nil {
						d, err = time.Duration(s)*time.Second, nil
					}
				}
				if val.Kind != yaml.ScalarNode || err != nil || d < model.BGPMinHold || d > model.BGPMaxHold || d%time.Second != 0 {
					*errs = append(*errs, b.errorf(kf, "want whole seconds from 3s to 65535s (keepalives go every third of it), not %q", val.Value))
				}
				p.Hold = d
			case "max_prefixes":
				n, err := strconv.Atoi(val.Value)
				if val.Kind != yaml.ScalarNode || err != nil || n < 1 || n > model.BGPMaxMaxPrefixes {
					*errs = append(*errs, b.errorf(kf, "want a number of prefixes from 1 to %d (default %d), not %q", model.BGPMaxMaxPrefixes, model.BGPMaxPrefixes, val.Value))
				}
				p.MaxPrefixes = n
			default:
				*errs = append(*errs, b.errorf(kf, "unknown key (want one of %s)", strings.Join(peerFields, ", ")))
			}
		}
		if _, ok := b.Lines[f+".address"]; !ok {
			*errs = append(*errs, b.errorf(f+".address", "missing: the neighbour's IPv4 or IPv6 address"))
		}
		if _, ok := b.Lines[f+".asn"]; !ok {
			*errs = append(*errs, b.errorf(f+".asn", "missing: the neighbour's AS number"))
		}
		b.Peers = append(b.Peers, p)
	}
}

// unicastAddr reports whether a can be a session's end: an IPv4 address
// that is neither unspecified, multicast nor loopback, or a global or
// unique local IPv6 one (a link-local address needs an interface, which
// the spec does not name; a v4-mapped one is written in its IPv4 form).
func unicastAddr(a netip.Addr) bool {
	if a.Is4() {
		return !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback()
	}
	return a.IsGlobalUnicast() && !a.Is4In6() && a.Zone() == ""
}
