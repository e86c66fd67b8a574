package libvirt

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

// Render writes the networks as one spec file: a networks: mapping, each
// network under a comment naming the libvirt network and file it came from.
// Only what differs from guestnet's defaults, or what libvirt said, is
// written (the bridge always: guests are attached by its name).
func Render(rs []*Result) string {
	var b strings.Builder
	b.WriteString("networks:\n")
	for i, r := range rs {
		if i > 0 {
			b.WriteString("\n")
		}
		// The file name is quoted when it holds a newline or another
		// unprintable character: it would end the comment and add YAML of
		// its own (a file of --all DIR can be named anything).
		file := filepath.Base(r.File)
		if strings.ContainsFunc(file, func(r rune) bool { return !unicode.IsPrint(r) }) {
			file = strconv.Quote(file)
		}
		fmt.Fprintf(&b, "  # libvirt network %s (%s)\n", strconv.Quote(r.Libvirt), file)
		writeNetwork(&b, &r.Network)
	}
	return b.String()
}

func writeNetwork(b *strings.Builder, n *model.Network) {
	line := func(indent int, k, v string) { fmt.Fprintf(b, "%s%s: %s\n", strings.Repeat("  ", indent), k, v) }
	fmt.Fprintf(b, "  %s:\n", n.Name)
	line(2, "mode", string(n.Mode))
	line(2, "bridge", quote(n.Bridge))
	if n.IPv4.IsValid() {
		line(2, "ipv4", n.IPv4.String())
	}
	if n.IPv6.IsValid() {
		line(2, "ipv6", quote(n.IPv6.String()))
	}
	if n.Uplink != "" {
		line(2, "uplink", quote(n.Uplink))
	}
	if n.MTU != 0 {
		line(2, "mtu", strconv.Itoa(n.MTU))
	}
	if d := n.DHCP; d != nil {
		b.WriteString("    dhcp:\n")
		if len(d.Ranges) > 0 {
			line(3, "range", ranges(d.Ranges))
		}
		if d.Lease != spec.DefaultLease {
			line(3, "lease", duration(d.Lease))
		}
		if len(d.Hosts) > 0 {
			b.WriteString("      hosts:\n")
			for _, h := range d.Hosts {
				fmt.Fprintf(b, "        - {mac: %q, ip: %s%s}\n", h.MAC, h.IP, nameField(h.Name))
			}
		}
	}
	if d := n.DHCP6; d != nil {
		b.WriteString("    dhcp6:\n")
		if len(d.Ranges) > 0 {
			line(3, "range", ranges(d.Ranges))
		}
		if d.Lease != spec.DefaultLease {
			line(3, "lease", duration(d.Lease))
		}
		if len(d.Hosts) > 0 {
			b.WriteString("      hosts:\n")
			for _, h := range d.Hosts {
				key, v := "duid", h.DUID
				if h.MAC != "" {
					key, v = "mac", h.MAC
				}
				fmt.Fprintf(b, "        - {%s: %q, ip: %q%s}\n", key, v, h.IP.String(), nameField(h.Name))
			}
		}
	}
	if d := n.DNS; d != nil {
		b.WriteString("    dns:\n")
		line(3, "domain", quote(d.Domain))
		if len(d.Upstream) > 0 {
			var us []string
			for _, u := range d.Upstream {
				us = append(us, quote(u.String()))
			}
			line(3, "upstream", "["+strings.Join(us, ", ")+"]")
		}
	}
}

func nameField(name string) string {
	if name == "" {
		return ""
	}
	return ", name: " + quote(name)
}

func ranges(rs []model.Range) string {
	var out []string
	for _, r := range rs {
		out = append(out, quote(r.From.String()+"-"+r.To.String()))
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// duration writes a lease as 2h, 30m or 150s.
func duration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

// quote leaves plain words and IPv4 forms alone and double-quotes the rest
// (IPv6 addresses, MACs, anything YAML could read as another type).
func quote(s string) string {
	plain := s != "" && !strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`\\") && strings.TrimSpace(s) == s &&
		!strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) // a newline would end the value: the rest would be YAML of its own
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
		plain = false
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}

// CheckAll loads the rendered networks together, as guestnet will: two
// libvirt networks on one bridge or one subnet, or two names that map to
// the same guestnet name, are refused here, each at its own <network>.
func CheckAll(rs []*Result) error {
	if len(rs) == 0 {
		return nil
	}
	seen := map[string]*Result{}
	var dups []error
	for _, r := range rs {
		if o := seen[r.Network.Name]; o != nil {
			msg := fmt.Sprintf("network %s is also defined at %s:%d: a spec holds one network of a name (rename one in its XML)", r.Network.Name, o.File, o.Line)
			if r.Libvirt != o.Libvirt {
				msg = fmt.Sprintf("libvirt networks %q and %q (%s:%d) both become guestnet network %s: rename one in its XML", r.Libvirt, o.Libvirt, o.File, o.Line, r.Network.Name)
			}
			dups = append(dups, &Diag{File: r.File, Line: r.Line, Msg: msg})
		}
		seen[r.Network.Name] = r
	}
	if len(dups) > 0 {
		return errors.Join(dups...)
	}
	pf, err := spec.ParseFile("(converted)", []byte(Render(rs)))
	if err != nil {
		return placeAll(rs, err)
	}
	s := &spec.Spec{Networks: pf.Networks}
	return placeAll(rs, s.Validate())
}

// placeAll places each spec error at the network it names.
func placeAll(rs []*Result, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var se *spec.Error
		placed := false
		if errors.As(e, &se) {
			for _, r := range rs {
				if f := "networks." + r.Network.Name; se.Field == f || strings.HasPrefix(se.Field, f+".") {
					out = append(out, r.placed(se))
					placed = true
					break
				}
			}
		}
		if !placed {
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}
