package spec

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/guestnet/guestnet/internal/model"
)

// MaxPortRange bounds the ports one forward may open (each port is a map element).
const MaxPortRange = 1024

// parseForwards reads forwards: [{proto, port, to, from, listen}].
func (n *Network) parseForwards(v *yaml.Node) error {
	if v.Kind != yaml.SequenceNode {
		return n.errorf("forwards", "want a list of {proto, port, to, from, listen}")
	}
	var errs []error
	n.Forwards = slices.Grow(n.Forwards, len(v.Content))
	for i, it := range v.Content {
		f := "forwards[" + itoa(i) + "]"
		n.Lines[f] = it.Line
		if it.Kind != yaml.MappingNode {
			errs = append(errs, n.errorf(f, "want a mapping with keys proto, port, to, from, listen"))
			continue
		}
		fw := model.PortForward{Proto: "tcp"}
		for j := 0; j < len(it.Content); j += 2 {
			k, val := it.Content[j], it.Content[j+1]
			kf := f + "." + k.Value
			n.Lines[kf] = k.Line
			var err error
			switch k.Value {
			case "proto":
				fw.Proto = val.Value
				if fw.Proto != "tcp" && fw.Proto != "udp" {
					err = n.errorf(kf, "want tcp or udp, not %q", val.Value)
				}
			case "port":
				a, b, isRange := strings.Cut(val.Value, "-")
				p1, e1 := strconv.Atoi(strings.TrimSpace(a))
				p2, e2 := p1, error(nil)
				if isRange {
					p2, e2 = strconv.Atoi(strings.TrimSpace(b))
				}
				if e1 != nil || e2 != nil || p1 < 1 || p2 > 65535 || p2 < p1 || p2-p1 >= MaxPortRange {
					err = n.errorf(kf, "want a port or a range like 8000-8010 (at most %d ports), not %q", MaxPortRange, val.Value)
				}
				fw.PortFrom, fw.PortTo = p1, p2
			case "to":
				if v6, ok := ipv6Target(val.Value); ok {
					fw.To = v6 // named: the one error is this one
					err = n.errorf(kf, "%s is an IPv6 address: forwards translate IPv4 only (guests of a routed network with ipv6 are reached at their own addresses; NAT66 is for their outbound traffic)", v6)
					break
				}
				host, port, hasPort := strings.Cut(val.Value, ":")
				a, perr := netip.ParseAddr(host)
				if perr != nil || !a.Is4() {
					err = n.errorf(kf, "want GUEST_IP or GUEST_IP:PORT, not %q", val.Value)
					break
				}
				fw.To = a
				if hasPort {
					if fw.ToPort, perr = strconv.Atoi(port); perr != nil || fw.ToPort < 1 || fw.ToPort > 65535 {
						err = n.errorf(kf, "bad port in %q", val.Value)
					}
				}
			case "from":
				err = n.eachScalar(kf, val, func(field, s string) error {
					p, perr := netip.ParsePrefix(s)
					if perr != nil {
						if a, aerr := netip.ParseAddr(s); aerr == nil {
							p, perr = netip.PrefixFrom(a, 32), nil
						}
					}
					if perr == nil && p.Addr().Is6() {
						return n.errorf(field, "%s is IPv6: forwards translate IPv4 only, so from takes IPv4 addresses or prefixes", s)
					}
					if perr != nil || !p.Addr().Is4() {
						return n.errorf(field, "want an IPv4 address or prefix, not %q", s)
					}
					fw.From = append(fw.From, p.Masked())
					return nil
				})
			case "listen":
				err = n.eachScalar(kf, val, func(field, s string) error {
					a, perr := netip.ParseAddr(s)
					if perr == nil && a.Is6() {
						return n.errorf(field, "%s is IPv6: forwards translate IPv4 only, so listen takes IPv4 addresses of this host", s)
					}
					if perr != nil || !a.Is4() {
						return n.errorf(field, "want an IPv4 address of this host, not %q", s)
					}
					fw.Listen = append(fw.Listen, a)
					return nil
				})
			default:
				err = n.errorf(kf, "unknown key (want proto, port, to, from, listen)")
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		if fw.PortFrom == 0 || !fw.To.IsValid() {
			errs = append(errs, n.errorf(f, "needs port and to"))
		}
		if fw.ToPort != 0 && fw.PortTo != fw.PortFrom {
			errs = append(errs, n.errorf(f+".to", "a port range forwards each port to the same port: give to without :PORT"))
		}
		n.Forwards = append(n.Forwards, fw)
	}
	return errors.Join(errs...)
}

// checkForwards validates forwards against the network.
func (n *Network) checkForwards() error {
	if len(n.Forwards) == 0 {
		return nil
	}
	if n.Mode != model.NAT && n.Mode != model.Routed {
		return n.errorf("forwards", "only nat and routed networks take forwards (mode %s)", n.Mode)
	}
	if !n.IPv4.IsValid() {
		return n.errorf("forwards", "the network has no ipv4: forwards translate IPv4 only (an IPv6 guest is reached at its own address on a routed network)")
	}
	var errs []error
	// What a forward is keyed by in the map (model.Forward.Key, without
	// formatting it as text: 10,000 forwards are parsed on every apply).
	type key struct {
		src, dst netip.Prefix
		proto    string
		port     int
	}
	seen := map[key]int{}
	for i, fw := range n.Forwards {
		f := "forwards[" + itoa(i) + "]"
		if !n.Subnet().Contains(fw.To) || fw.To == n.IPv4.Addr() || fw.To == model.Broadcast(n.Subnet()) || fw.To == n.Subnet().Addr() {
			errs = append(errs, n.errorf(f+".to", "%s is not a guest address of %s", fw.To, n.Subnet()))
		}
		for _, e := range fw.Elements() {
			k := key{e.Src, e.Dst, e.Proto, e.Port}
			if j, dup := seen[k]; dup && j != i {
				errs = append(errs, n.errorf(f, "%s %d is already forwarded by forwards[%d]", e.Proto, e.Port, j))
				break
			}
			seen[k] = i
		}
	}
	return errors.Join(errs...)
}

// parseFloating reads floating: [{public, guest, uplink}].
func (n *Network) parseFloating(v *yaml.Node) error {
	return n.mappings("floating", v, []string{"public", "guest", "uplink"}, func(f string, kv map[string]string) error {
		pub, err := netip.ParseAddr(kv["public"])
		g6, gerr := netip.ParseAddr(kv["guest"])
		if (err == nil && pub.Is6()) || (gerr == nil && g6.Is6()) {
			field := f + ".public"
			if err != nil || !pub.Is6() {
				field = f + ".guest"
			}
			return n.errorf(field, "floating addresses are IPv4 only (an IPv6 guest takes a global address on a routed network instead of 1:1 NAT66)")
		}
		if err != nil || !pub.Is4() {
			return n.errorf(f+".public", "want an IPv4 address, not %q", kv["public"])
		}
		g, err := netip.ParseAddr(kv["guest"])
		if err != nil || !g.Is4() {
			return n.errorf(f+".guest", "want the guest's IPv4 address, not %q", kv["guest"])
		}
		n.Floating = append(n.Floating, model.Floating{Public: pub, Guest: g, Uplink: kv["uplink"]})
		return nil
	})
}

// checkFloating validates floating addresses against the network.
func (n *Network) checkFloating() error {
	if len(n.Floating) == 0 {
		return nil
	}
	if n.Mode != model.NAT {
		return n.errorf("floating", "only nat networks take floating addresses (mode %s)", n.Mode)
	}
	if !n.IPv4.IsValid() {
		return n.errorf("floating", "the network has no ipv4: floating addresses are IPv4 only")
	}
	var errs []error
	pubs, guests := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for i, fl := range n.Floating {
		f := "floating[" + itoa(i) + "]"
		switch {
		case !n.Subnet().Contains(fl.Guest) || fl.Guest == n.IPv4.Addr():
			errs = append(errs, n.errorf(f+".guest", "%s is not a guest address of %s", fl.Guest, n.Subnet()))
		case n.Subnet().Contains(fl.Public):
			errs = append(errs, n.errorf(f+".public", "%s is inside the guest subnet %s", fl.Public, n.Subnet()))
		case pubs[fl.Public] || guests[fl.Guest]:
			errs = append(errs, n.errorf(f, "%s or %s is listed twice", fl.Public, fl.Guest))
		}
		pubs[fl.Public], guests[fl.Guest] = true, true
	}
	return errors.Join(errs...)
}

// ipv6Target reports whether a forward's to names an IPv6 address, bare
// or as [ADDR]:PORT.
func ipv6Target(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Is6() {
		return ap.Addr(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil && a.Is6() {
		return a, true
	}
	return netip.Addr{}, false
}

// parsePeers reads peers: [NETWORK...], the networks whose guests may reach
// this one's.
func (n *Network) parsePeers(v *yaml.Node) error {
	return n.eachScalar("peers", v, func(field, s string) error {
		n.Peers = append(n.Peers, s)
		return nil
	})
}
