package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Guard is guestnet's anti-spoofing table, `table bridge guestnet`. A guest
// port bound to addresses may send only ARP and IPv4 frames whose source
// MAC and address are among its bindings; other ports are unrestricted.
// A MAC bound to a port belongs to it: no other port may send from that
// MAC, nor send a DHCP message naming it (chaddr), so that no guest can
// take a neighbour's binding or lease.
// Bindings come from two owners: Bound is declared (guestnet attach --ip
// --mac, and DHCP static hosts of a bound MAC) and planned like the rest;
// Learned is written by the daemon from the leases it hands out, and plan
// never touches it.
type Guard struct {
	On       bool      `json:"on,omitempty"`        // the table exists
	Ports    []string  `json:"ports,omitempty"`     // elements of set "ports": Ports(Bound)
	Bound    []Bind    `json:"bound,omitempty"`     // elements of set "bound", sorted
	MACs     []string  `json:"macs,omitempty"`      // elements of set "macs": MACs(Bound)
	PortMACs []PortMAC `json:"port_macs,omitempty"` // elements of set "port_macs": PortMACs(Bound)
	// IPv6 (see guard6.go): the first-come guest ports and their prefixes, and
	// what Bound's IPv6 bindings make (sets ports6 and held6; the
	// bindings themselves are set bound6).
	Guests6   []string     `json:"guests6,omitempty"`
	Prefixes6 []PortPrefix `json:"prefixes6,omitempty"`
	Ports6    []string     `json:"ports6,omitempty"`
	Held6     []netip.Addr `json:"held6,omitempty"`
	MACPorts  []string     `json:"mac_ports,omitempty"` // elements of set "mac_ports": the ports of PortMACs
	// The stretched networks' VXLAN ports, gateway addresses and gateway
	// MACs (sets vxlan_ports, vxlan_gateways, vxlan_macs: guardvxlan.go).
	VXLANPorts    []string     `json:"vxlan_ports,omitempty"`
	VXLANGateways []netip.Addr `json:"vxlan_gateways,omitempty"`
	VXLANMACs     []string     `json:"vxlan_macs,omitempty"`
	// Observed only, never compared:
	LearnedPorts    []string  `json:"learned_ports,omitempty"`
	Learned         []Bind    `json:"learned,omitempty"` // elements of set "learned"
	LearnedMACs     []string  `json:"learned_macs,omitempty"`
	LearnedPortMACs []PortMAC `json:"learned_port_macs,omitempty"`
	// LearnedGuests6 and LearnedPrefixes6 are the daemon's first-come
	// ports (sets guests6_learned, prefixes6_learned: guard6.go).
	LearnedGuests6   []string     `json:"learned_guests6,omitempty"`
	LearnedPrefixes6 []PortPrefix `json:"learned_prefixes6,omitempty"`
	Broken           bool         `json:"broken,omitempty"`  // the table is not what guestnet wrote
	Dropped          uint64       `json:"dropped,omitempty"` // frames dropped as spoofed
	Spoofed          []Spoofed    `json:"spoofed,omitempty"` // elements of set "dropped"
	// DroppedOther are the elements of set "dropped_other".
	DroppedOther []OtherDrop `json:"dropped_other,omitempty"`
	// Claims6 are the elements of set claims6: IPv6 addresses ports
	// claimed first.
	Claims6 []Claim6 `json:"claims6,omitempty"`
	// Dropped6 are the elements of sets dropped6, router6 and na6.
	Dropped6 []Drop6 `json:"dropped6,omitempty"`
	// VXLANDropped counts the frames the VXLAN rules dropped (not in
	// Dropped: they are no spoofing); VXLANDrops are the elements of sets
	// vxlan_dropped_in and vxlan_dropped_out.
	VXLANDropped uint64      `json:"vxlan_dropped,omitempty"`
	VXLANDrops   []VXLANDrop `json:"vxlan_drops,omitempty"`
}

// Spoofed is what set "dropped" remembers of one port . MAC . address whose
// frames were dropped as spoofed: ARP claims and IPv4 frames (set
// dropped_other remembers the others: OtherDrop). An entry lives DropMemory after the last drop.
type Spoofed struct {
	Bind
	Packets uint64 `json:"packets"`
	// Ago is how long ago the last frame was dropped.
	Ago time.Duration `json:"ago_ns"`
	// MACBoundTo are the other ports the MAC is bound to (filled in by
	// SpoofedBy): the frames were dropped because the MAC is theirs.
	MACBoundTo []string `json:"mac_bound_to,omitempty"`
}

// The sets of the guard table.
const (
	GuardPorts           = "ports"             // ports with declared bindings
	GuardBound           = "bound"             // port . mac . ip, declared
	GuardMACs            = "macs"              // MACs with a declared binding
	GuardPortMACs        = "port_macs"         // port . mac, declared
	GuardLearnedPorts    = "learned_ports"     // ports with learned bindings
	GuardLearned         = "learned"           // port . mac . ip, from leases
	GuardLearnedMACs     = "learned_macs"      // MACs with a learned binding
	GuardLearnedPortMACs = "learned_port_macs" // port . mac, from leases
	GuardDropped         = "dropped"           // port . mac . ip of dropped frames, with counters
	GuardDroppedOther    = "dropped_other"     // port . mac . ether type of dropped frames neither IPv4, IPv6 nor ARP
)

// The sets of each owner of bindings, in the order of Elems' fields.
var (
	DeclaredSets = [4]string{GuardPorts, GuardBound, GuardMACs, GuardPortMACs}
	LearnedSets  = [4]string{GuardLearnedPorts, GuardLearned, GuardLearnedMACs, GuardLearnedPortMACs}
)

// SpoofedBy are the recorded drops of one port, latest first, each with
// the other ports its MAC is bound to.
func (g Guard) SpoofedBy(port string) []Spoofed {
	var out []Spoofed
	for _, x := range g.Spoofed {
		if x.Port == port {
			x.MACBoundTo = slices.DeleteFunc(g.PortsOf(x.MAC), func(p string) bool { return p == port })
			out = append(out, x)
		}
	}
	return out
}

// OtherBy are the recorded drops of one port's frames that are neither
// IPv4 nor ARP, latest first, each with the other ports its MAC is bound
// to when it is not bound to this one (that is then why they were
// dropped).
func (g Guard) OtherBy(port string) []OtherDrop {
	var out []OtherDrop
	for _, x := range g.DroppedOther {
		if x.Port == port {
			if owners := g.PortsOf(x.MAC); !slices.Contains(owners, port) {
				x.MACBoundTo = owners
			}
			out = append(out, x)
		}
	}
	return out
}

// PortsOf are the ports a MAC is bound to, declared or learned, sorted.
func (g Guard) PortsOf(mac string) []string {
	var out []string
	for _, p := range append(slices.Clone(g.PortMACs), g.LearnedPortMACs...) {
		if p.MAC == mac {
			out = append(out, p.Port)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Summary says what was dropped: "3 frames from MAC 02:00:00:00:00:21,
// address 10.99.0.21 (last 12s ago)".
func (x Spoofed) Summary() string {
	src := "address " + x.IP.String()
	if x.IP.IsUnspecified() {
		src = "address 0.0.0.0 (DHCP or an ARP probe)"
	}
	s := fmt.Sprintf("%s from MAC %s, %s (last %s ago)", Frames(x.Packets), x.MAC, src, x.Ago.Round(time.Second))
	if len(x.MACBoundTo) > 0 {
		s += "; the MAC is bound to port " + strings.Join(x.MACBoundTo, ",")
	}
	return s
}

// OtherDrop is what set "dropped_other" remembers of one port . MAC .
// ether type whose frames were dropped, neither IPv4, IPv6 nor ARP: a
// bound port may send only those, so a VLAN-tagged frame ends up here,
// whose ether type is its tag's (an untagged IPv6 frame is judged by the
// IPv6 rules and recorded in dropped6 when dropped). An entry lives
// DropMemory after the last drop.
type OtherDrop struct {
	Port string `json:"port"`
	MAC  string `json:"mac"`
	// EtherType as nft names it: "ip6", "8021q" (an 802.1Q tag), "8021ad",
	// or the number ("0x88cc").
	EtherType string        `json:"ether_type"`
	Packets   uint64        `json:"packets"`
	Ago       time.Duration `json:"ago_ns"` // since the last frame was dropped
	// MACBoundTo are the other ports the MAC is bound to (filled in by
	// OtherBy): the frames were dropped because the MAC is theirs.
	MACBoundTo []string `json:"mac_bound_to,omitempty"`
}

// Kind says what the frames were: "IPv6", "VLAN-tagged" (802.1Q or
// 802.1ad), or "" for another protocol.
func (x OtherDrop) Kind() string {
	switch x.EtherType {
	case "ip6":
		return "IPv6"
	case "8021q", "8021ad":
		return "VLAN-tagged"
	}
	return ""
}

// Frames says how many frames of what were dropped: "12 IPv6 frames
// (ether type ip6)", "1 frame of ether type 0x88cc".
func (x OtherDrop) Frames() string {
	if x.Kind() == "" {
		return fmt.Sprintf("%s of ether type %s", Frames(x.Packets), x.EtherType)
	}
	noun := "frames"
	if x.Packets == 1 {
		noun = "frame"
	}
	return fmt.Sprintf("%d %s %s (ether type %s)", x.Packets, x.Kind(), noun, x.EtherType)
}

// Why says why the frames were dropped.
func (x OtherDrop) Why() string {
	switch {
	case len(x.MACBoundTo) > 0:
		return "the MAC is bound to port " + strings.Join(x.MACBoundTo, ",")
	case x.Kind() == "VLAN-tagged":
		return "a bound port may send only untagged IPv4 and ARP (the tag hides what the frame carries)"
	case x.EtherType == EtherTypeName(EtherTypeRARP):
		return "a RARP announce (QEMU's, after a live migration) passes only from a MAC bound to the port"
	}
	return "a bound port may send only IPv4, IPv6 and ARP"
}

// Summary says what was dropped and why: "2 frames of ether type 0x88cc
// from MAC 52:54:00:00:00:01 (last 3s ago): a bound port may send only
// IPv4, IPv6 and ARP".
func (x OtherDrop) Summary() string {
	return fmt.Sprintf("%s from MAC %s (last %s ago): %s", x.Frames(), x.MAC, x.Ago.Round(time.Second), x.Why())
}

// Frames is "1 frame" or "n frames".
func Frames(n uint64) string {
	if n == 1 {
		return "1 frame"
	}
	return fmt.Sprintf("%d frames", n)
}

// GuardSets are the guard table's sets, in the order they are made.
var GuardSets = func() []string {
	var out []string
	for _, s := range GuardTableOf(GuardFamily).Sets {
		out = append(out, s.Name)
	}
	return out
}()

// Sets "dropped" and "dropped_other" each hold at most DropEntries sources, each for DropMemory
// after its last dropped frame. A full set records nothing new; the frames
// are dropped all the same.
const (
	DropEntries = 1024
	DropMemory  = time.Hour
)

// Bind lets frames from Port with source MAC and IPv4 source IP through.
// An empty MAC stands for any MAC, an invalid IP for any address.
// 0.0.0.0 is always bound next to a port's MAC, for DHCP and ARP probes.
type Bind struct {
	Port string     `json:"port"`
	MAC  string     `json:"mac,omitempty"`
	IP   netip.Addr `json:"ip,omitzero"`
}

// PortBind is what `guestnet attach --ip --mac` bound a port to.
type PortBind struct {
	IPs []netip.Addr `json:"ips,omitempty"`
	MAC string       `json:"mac,omitempty"`
}

// Guarded reports whether the network's guest ports get anti-spoofing.
func (n Network) Guarded() bool { return n.Mode != Open && !n.AllowSpoofing }

func (b Bind) String() string {
	mac, ip := b.MAC, "0.0.0.0-255.255.255.255"
	if mac == "" {
		mac = "00:00:00:00:00:00-ff:ff:ff:ff:ff:ff"
	}
	if b.IP.IsValid() {
		ip = b.IP.String()
	}
	return fmt.Sprintf("%q . %s . %s", b.Port, mac, ip)
}

// SplitBinds parts bindings into those of set bound (IPv4, or any
// address) and those of set bound6 (IPv6).
func SplitBinds(bs []Bind) (v4, v6 []Bind) {
	for _, b := range bs {
		if b.IP.IsValid() && FamilyOf(b.IP) == IPv6 {
			v6 = append(v6, b)
		} else {
			v4 = append(v4, b)
		}
	}
	return v4, v6
}

// SortBinds sorts and removes duplicates.
func SortBinds(bs []Bind) []Bind {
	slices.SortFunc(bs, func(a, b Bind) int {
		return cmp.Or(strings.Compare(a.Port, b.Port), strings.Compare(a.MAC, b.MAC), a.IP.Compare(b.IP))
	})
	return slices.Compact(bs)
}

// Equal compares what plan owns: presence, integrity and declared bindings.
func (g Guard) Equal(o Guard) bool {
	return g.On == o.On && g.Broken == o.Broken && g.Declared().Equal(o.Declared())
}

// Ports are the distinct ports of a list of bindings, sorted.
func Ports(bs []Bind) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Port)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// String renders the guard table in nft's syntax (one element a line).
func (g Guard) String() string {
	if !g.On {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {\n", Table)
	// set prints a set's declaration: its type, then the lines of props
	// (size, flags, timeout), then its elements.
	set := func(name, typ string, elems []string, props ...string) {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", name, typ)
		for _, p := range props {
			fmt.Fprintf(&b, "\t\t%s\n", p)
		}
		if len(elems) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(elems, ",\n\t\t\t     "))
		}
		b.WriteString("\t}\n\n")
	}
	quote := func(ss []string) []string {
		out := make([]string, len(ss))
		for i, x := range ss {
			out[i] = fmt.Sprintf("%q", x)
		}
		return out
	}
	v4, v6 := SplitBinds(g.Bound)
	elems := map[string][]string{GuardPorts: quote(g.Ports), GuardBound: strs(v4), GuardMACs: g.MACs, GuardPortMACs: strs(g.PortMACs),
		GuardBound6: strs(v6), GuardPorts6: quote(g.Ports6), GuardHeld6: strs(g.Held6), GuardGuests6: quote(g.Guests6), GuardPrefixes6: strs(g.Prefixes6), GuardMACPorts: quote(g.MACPorts),
		GuardVXLANPorts: quote(g.VXLANPorts), GuardVXLANGateways: strs(g.VXLANGateways), GuardVXLANMACs: g.VXLANMACs}
	t := GuardTableOf(GuardFamily)
	for _, s := range t.Sets {
		var props []string
		if s.Size > 0 {
			props = append(props, fmt.Sprintf("size %d", s.Size))
		}
		switch {
		case s.Interval:
			props = append(props, "flags interval")
		case s.Timeout > 0:
			props = append(props, "flags dynamic,timeout", "timeout "+nftDuration(s.Timeout))
		}
		set(s.Name, strings.Join(s.Key, " . "), elems[s.Name], props...)
	}
	for i, c := range t.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\ttype filter hook %s priority filter; policy accept;\n", c.Hook)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func strs[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

// nftDuration prints d as nft does: 1h, 30m, 1h30m.
func nftDuration(d time.Duration) string {
	var b strings.Builder
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.d
		}
	}
	return b.String()
}

// Diff returns the elements of cur that old lacks, and the reverse.
func Diff[T comparable](old, cur []T) (add, del []T) {
	had, want := make(map[T]bool, len(old)), make(map[T]bool, len(cur)) // sized: thousands of elements
	for _, s := range old {
		had[s] = true
	}
	for _, s := range cur {
		want[s] = true
		if !had[s] {
			add = append(add, s)
		}
	}
	for _, s := range old {
		if !want[s] {
			del = append(del, s)
		}
	}
	return add, del
}

// PortBinding is everything one port is bound to, from both owners.
type PortBinding struct {
	By    []string     `json:"by,omitempty"`   // "attach" (declared) and/or "lease"
	MACs  []string     `json:"macs,omitempty"` // "any" when only addresses are bound
	IPs   []netip.Addr `json:"ips,omitempty"`  // besides 0.0.0.0
	AnyIP bool         `json:"any_ip,omitempty"`
}

// Bound reports whether the port has any binding at all.
func (p PortBinding) Bound() bool { return len(p.By) > 0 }

// Allows reports whether the port may send from src (MACs aside).
func (p PortBinding) Allows(src netip.Addr) bool {
	return !p.Bound() || p.AnyIP || src.IsUnspecified() || slices.Contains(p.IPs, src)
}

// Sources says what a bound port may send from: "MAC m, 10.0.0.2 (bound
// by attach)".
func (p PortBinding) Sources() string {
	ips := make([]string, len(p.IPs))
	for i, a := range p.IPs {
		ips[i] = a.String()
	}
	addrs := strings.Join(ips, ",")
	switch {
	case p.AnyIP && addrs != "": // IPv6 addresses next to any IPv4 one
		addrs = "any IPv4 address, " + addrs
	case p.AnyIP:
		addrs = "any address"
	case addrs == "":
		addrs = "no address yet (DHCP only, until guestnet serve leases it one)"
	}
	macs := "MAC " + strings.Join(p.MACs, ",")
	if slices.Equal(p.MACs, []string{"any"}) {
		macs = "any MAC"
	}
	return fmt.Sprintf("%s, %s (bound by %s)", macs, addrs, strings.Join(p.By, "+"))
}

// Port gathers a port's declared and learned bindings.
func (g Guard) Port(port string) PortBinding {
	var p PortBinding
	for _, src := range []struct {
		by    string
		binds []Bind
	}{{"attach", g.Bound}, {"lease", g.Learned}} {
		for _, b := range src.binds {
			if b.Port != port {
				continue
			}
			if !slices.Contains(p.By, src.by) {
				p.By = append(p.By, src.by)
			}
			if mac := cmp.Or(b.MAC, "any"); !slices.Contains(p.MACs, mac) {
				p.MACs = append(p.MACs, mac)
			}
			if !b.IP.IsValid() {
				p.AnyIP = true
			} else if !b.IP.IsUnspecified() && !slices.Contains(p.IPs, b.IP) {
				p.IPs = append(p.IPs, b.IP)
			}
		}
	}
	return p
}
