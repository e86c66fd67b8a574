// Package spec owns guestnet's file format: parsing YAML into model.Network
// values, defaults, and validation whose errors name file, line and field.
package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

// Network is a declared network and where each of its fields was written.
type Network struct {
	model.Network
	File  string
	Line  int            // line of the network's name
	Lines map[string]int // field name -> line
}

// Spec is the union of one or more files.
type Spec struct {
	Networks []Network // sorted by name
	// BGP is the bgp section (at most one among the files), nil if none.
	BGP *BGP
	// Leases is the leases section (at most one), nil if none.
	Leases *Leases
}

// File is what one file declares.
type File struct {
	Networks []Network
	BGP      *BGP    // nil if the file has no bgp section
	Leases   *Leases // nil if the file has no leases section
}

// Models returns the declared networks as plain model values.
func (s *Spec) Models() []model.Network {
	out := make([]model.Network, len(s.Networks))
	for i, n := range s.Networks {
		out[i] = n.Network
	}
	return out
}

// Error is one problem in a spec file.
type Error struct {
	File  string
	Line  int
	Field string // e.g. "networks.lab.ipv4"
	Msg   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

func (n *Network) errorf(field, format string, args ...any) *Error {
	line, ok := n.Lines[field]
	if !ok {
		line = n.Line
	}
	f := "networks." + n.Name
	if field != "" {
		f += "." + field
	}
	return &Error{File: n.File, Line: line, Field: f, Msg: fmt.Sprintf(format, args...)}
}

// fileKind names what a path that is not a regular file is.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// Load reads the files named by paths (a directory means every *.yaml and
// *.yml in it), then validates the union. All errors are returned together.
func Load(paths ...string) (*Spec, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(p, pat))
			files = append(files, m...)
		}
	}
	s := &Spec{}
	var errs []error
	for _, f := range files {
		// Only regular files: reading a FIFO (or a device) would block for
		// good, the daemon's reload with it.
		if st, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("read spec %s: a %s, not a regular file: a spec is a YAML file or a directory of them", f, fileKind(st.Mode()))
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		pf, err := ParseFile(f, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Networks = append(s.Networks, pf.Networks...)
		if l := pf.Leases; l != nil && s.Leases != nil {
			errs = append(errs, l.errorf("", "a second leases section (the first is at %s:%d)", s.Leases.File, s.Leases.Line))
		} else if l != nil {
			s.Leases = l
		}
		b := pf.BGP
		if b != nil && s.BGP != nil {
			errs = append(errs, b.errorf("", "a second bgp section (the first is at %s:%d): a host has one speaker", s.BGP.File, s.BGP.Line))
			continue
		}
		if b != nil {
			s.BGP = b
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(s.Networks, func(a, b Network) int { return strings.Compare(a.Name, b.Name) })
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// tabIndent returns the first line (1-based) whose indentation holds a
// tab, or 0.
func tabIndent(data []byte) int {
	for i, l := range strings.Split(string(data), "\n") {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(l) != "" {
			return i + 1
		}
	}
	return 0
}

// Parse reads one file's networks without cross-network validation (its
// bgp section is checked, and left out: Load keeps it).
func Parse(file string, data []byte) ([]Network, error) {
	f, err := ParseFile(file, data)
	return f.Networks, err
}

// ParseFile reads one file: its networks, without cross-network
// validation, and its bgp and leases sections.
func ParseFile(file string, data []byte) (File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		if tab := tabIndent(data); tab > 0 {
			// yaml.v3 says "found character that cannot start any
			// token", and often names another line.
			line, msg = tab, "a tab in the indentation: YAML indents with spaces only"
		}
		return File{}, &Error{File: file, Line: line, Field: "(yaml)", Msg: msg}
	}
	if len(doc.Content) == 0 {
		return File{}, nil // an empty file declares nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return File{}, &Error{File: file, Line: root.Line, Field: "(top)", Msg: "want a mapping with keys networks, bgp and leases"}
	}
	var nets []Network
	var b *BGP
	var ls *Leases
	var errs []error
	for i := 0; i < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value == "leases" {
			if ls != nil {
				errs = append(errs, &Error{File: file, Line: k.Line, Field: "leases", Msg: "set twice"})
				continue
			}
			var err error
			if ls, err = parseLeases(file, k, v); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if k.Value == "bgp" {
			if b != nil {
				errs = append(errs, &Error{File: file, Line: k.Line, Field: "bgp", Msg: "set twice"})
				continue
			}
			var err error
			if b, err = parseBGP(file, k, v); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if k.Value != "networks" {
			errs = append(errs, &Error{File: file, Line: k.Line, Field: k.Value, Msg: "unknown key (want networks, bgp or leases)"})
			continue
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue // "networks:" with nothing under it declares none
		}
		if v.Kind != yaml.MappingNode {
			errs = append(errs, &Error{File: file, Line: v.Line, Field: "networks", Msg: "want a mapping of network name to settings"})
			continue
		}
		for j := 0; j < len(v.Content); j += 2 {
			n, err := parseNetwork(file, v.Content[j], v.Content[j+1])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			nets = append(nets, n)
		}
	}
	return File{Networks: nets, BGP: b, Leases: ls}, errors.Join(errs...)
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

var fieldNames = []string{"mode", "bridge", "ipv4", "ipv6", "uplink", "mtu", "dhcp", "dhcp6", "dns", "forwards", "floating", "routed_from", "guest_to_host", "peers", "anti_spoofing", "announce", "vxlan"}

func parseNetwork(file string, key, val *yaml.Node) (Network, error) {
	n := Network{File: file, Line: key.Line, Lines: map[string]int{}}
	n.Name = key.Value
	if val.Kind != yaml.MappingNode {
		return n, n.errorf("", "want a mapping of settings")
	}
	var errs []error
	for i := 0; i < len(val.Content); i += 2 {
		k, v := val.Content[i], val.Content[i+1]
		if !slices.Contains(fieldNames, k.Value) {
			n.Lines[k.Value] = k.Line
			errs = append(errs, n.errorf(k.Value, "unknown key (want one of %s)", strings.Join(fieldNames, ", ")))
			continue
		}
		if _, dup := n.Lines[k.Value]; dup {
			n.Lines[k.Value] = k.Line
			errs = append(errs, n.errorf(k.Value, "set twice"))
			continue
		}
		n.Lines[k.Value] = k.Line
		if parse := n.parser(k.Value); parse != nil {
			if err := parse(v); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, n.errorf(k.Value, "want a single value"))
			continue
		}
		if err := n.set(k.Value, v.Value); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, errors.Join(errs...)
	}
	return n, n.check()
}

// parser is the reader of a field that takes more than one value, or nil.
// (A switch, not a map literal: that was built again for each field of
// each network.)
func (n *Network) parser(field string) func(*yaml.Node) error {
	switch field {
	case "dhcp":
		return n.parseDHCP
	case "dhcp6":
		return n.parseDHCP6
	case "dns":
		return n.parseDNS
	case "forwards":
		return n.parseForwards
	case "floating":
		return n.parseFloating
	case "routed_from":
		return n.parseRoutedFrom
	case "peers":
		return n.parsePeers
	case "vxlan":
		return n.parseVXLAN
	}
	return nil
}

func (n *Network) set(field, v string) error {
	switch field {
	case "mode":
		n.Mode = model.Mode(v)
		if !slices.Contains(model.Modes, n.Mode) {
			return n.errorf(field, "unknown mode %q (want isolated, routed, nat, bridge or open)", v)
		}
	case "guest_to_host":
		if v != "services" && v != "all" {
			return n.errorf(field, "want services (DHCP, DNS and ICMP only, the default) or all, not %q", v)
		}
		n.GuestToHost = v
	case "anti_spoofing":
		on, err := strconv.ParseBool(v)
		if err != nil {
			return n.errorf(field, "want true (the default: bound guest ports may send only from their own MAC and addresses) or false, not %q", v)
		}
		n.AllowSpoofing = !on
	case "announce":
		on, err := strconv.ParseBool(v)
		if err != nil {
			return n.errorf(field, "want true (the default: BGP announces the network) or false, not %q", v)
		}
		n.NoAnnounce = !on
	case "bridge":
		n.Bridge = v
	case "uplink":
		n.Uplink = v
	case "ipv4":
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return n.errorf(field, "want an IPv4 address with prefix length, like 10.99.0.1/24, not %q", v)
		}
		n.IPv4 = p
	case "ipv6":
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return n.errorf(field, "want an IPv6 address with prefix length, like fd42:99::1/64, not %q", v)
		}
		n.IPv6 = p
	case "mtu":
		m, err := strconv.Atoi(v)
		if err != nil || m < 68 || m > 65535 {
			return n.errorf(field, "want a number from 68 to 65535, not %q", v)
		}
		n.MTU = m
	}
	return nil
}
