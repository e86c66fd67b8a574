package observe

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/nft"
)

// Guard reads guestnet's anti-spoofing table (table bridge guestnet): its
// declared and learned bindings, and whether its sets and rules are still
// the ones guestnet wrote (Broken if not, so that plan rewrites it).
func Guard(ns *netns.NS) (model.Guard, error) {
	c, err := ns.Nft(0)
	if err != nil {
		return model.Guard{}, err
	}
	return readGuard(c)
}

func readGuard(c *nftables.Conn) (model.Guard, error) {
	var g model.Guard
	t := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyBridge}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return g, fmt.Errorf("observe nftables bridge tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == model.Table }) {
		return g, nil
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return g, fmt.Errorf("observe table bridge %s: %w", model.Table, err)
	}
	g.On = true
	byName := map[string]*nftables.Set{}
	desc := model.GuardTableOf(model.GuardFamily)
	for _, s := range sets {
		byName[s.Name] = s
		// As described: only "bound" holds ranges (a wildcard MAC or
		// address), and the sets of dropped frames forget them in time.
		if d, ok := desc.Set(s.Name); !ok || s.Interval != d.Interval || (d.Timeout > 0) != (s.Dynamic && s.HasTimeout) {
			g.Broken = true
		}
	}
	for _, name := range model.GuardSets {
		if byName[name] == nil {
			g.Broken = true
		}
	}
	if err := readSpoofed(c, byName[model.GuardDropped], &g); err != nil {
		return g, err
	}
	if err := readOther(c, byName[model.GuardDroppedOther], &g); err != nil {
		return g, err
	}
	var bound6 []model.Bind
	for name, dst := range map[string]*[]model.Bind{model.GuardBound: &g.Bound, model.GuardLearned: &g.Learned, model.GuardBound6: &bound6} {
		s := byName[name]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return g, fmt.Errorf("observe set bridge %s %s: %w", model.Table, name, err)
		}
		for _, e := range els {
			if e.IntervalEnd {
				continue
			}
			b, ok := nft.DecodeGuardKey(e.Key, nilIfEmpty(e.KeyEnd))
			if !ok {
				g.Broken = true
				continue
			}
			*dst = append(*dst, b)
		}
	}
	g.Bound = append(g.Bound, bound6...)
	for name, dst := range map[string]*[]string{model.GuardPorts: &g.Ports, model.GuardLearnedPorts: &g.LearnedPorts, model.GuardPorts6: &g.Ports6, model.GuardGuests6: &g.Guests6, model.GuardMACPorts: &g.MACPorts, model.GuardLearnedGuests6: &g.LearnedGuests6, model.GuardVXLANPorts: &g.VXLANPorts} {
		if s := byName[name]; s != nil {
			els, err := c.GetSetElements(s)
			if err != nil {
				return g, fmt.Errorf("observe set bridge %s %s: %w", model.Table, name, err)
			}
			for _, e := range els {
				*dst = append(*dst, string(bytes.TrimRight(e.Key, "\x00")))
			}
			slices.Sort(*dst)
		}
	}
	if err := readOwners(c, byName, &g); err != nil {
		return g, err
	}
	if err := read6(c, byName, &g); err != nil {
		return g, err
	}
	if err := readVXLAN(c, byName, &g); err != nil {
		return g, err
	}
	g.Bound, g.Learned = model.SortBinds(g.Bound), model.SortBinds(g.Learned)
	slices.Sort(g.Guests6)
	if err := checkGuardChains(c, t, &g); err != nil {
		return g, err
	}
	return g, nil
}

// readOwners reads the sets of bound MACs (macs, learned_macs) and of
// their ports (port_macs, learned_port_macs).
func readOwners(c *nftables.Conn, byName map[string]*nftables.Set, g *model.Guard) error {
	for name, dst := range map[string]*[]string{model.GuardMACs: &g.MACs, model.GuardLearnedMACs: &g.LearnedMACs} {
		if err := readKeys(c, byName[name], nft.DecodeMACKey, dst, g); err != nil {
			return err
		}
		slices.Sort(*dst)
	}
	for name, dst := range map[string]*[]model.PortMAC{model.GuardPortMACs: &g.PortMACs, model.GuardLearnedPortMACs: &g.LearnedPortMACs} {
		if err := readKeys(c, byName[name], nft.DecodePortMACKey, dst, g); err != nil {
			return err
		}
		*dst = model.SortPortMACs(*dst)
	}
	return nil
}

// readKeys appends the decoded keys of a set's elements to dst; a key
// that does not decode marks the table broken (readElements).
func readKeys[T any](c *nftables.Conn, set *nftables.Set, decode func([]byte) (T, bool), dst *[]T, g *model.Guard) error {
	return readElements(c, set, func(k []byte) bool {
		v, ok := decode(k)
		if ok {
			*dst = append(*dst, v)
		}
		return ok
	}, g)
}

// readElements hands each element of s (if it exists) to take, and marks
// the guard Broken for one guestnet would not have written.
func readElements(c *nftables.Conn, s *nftables.Set, take func([]byte) bool, g *model.Guard) error {
	if s == nil {
		return nil
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("observe set bridge %s %s: %w", model.Table, s.Name, err)
	}
	for _, e := range els {
		if !take(e.Key) {
			g.Broken = true
		}
	}
	return nil
}

// readSpoofed reads set dropped (if it exists): the sources of frames
// dropped lately.
func readSpoofed(c *nftables.Conn, s *nftables.Set, g *model.Guard) (err error) {
	g.Spoofed, err = readDrops(c, s, func(k []byte, packets uint64, ago time.Duration) (model.Spoofed, bool) {
		b, ok := nft.DecodeGuardKey(k, nil)
		return model.Spoofed{Bind: b, Packets: packets, Ago: ago}, ok
	})
	slices.SortFunc(g.Spoofed, func(a, b model.Spoofed) int {
		return cmp.Or(cmp.Compare(a.Ago, b.Ago), strings.Compare(a.String(), b.String()))
	})
	return err
}

// readOther reads set dropped_other (if it exists): the port . MAC .
// ether type of frames neither IPv4 nor ARP dropped lately.
func readOther(c *nftables.Conn, s *nftables.Set, g *model.Guard) (err error) {
	g.DroppedOther, err = readDrops(c, s, func(k []byte, packets uint64, ago time.Duration) (model.OtherDrop, bool) {
		x, ok := nft.DecodeOtherKey(k)
		x.Packets, x.Ago = packets, ago
		return x, ok
	})
	slices.SortFunc(g.DroppedOther, func(a, b model.OtherDrop) int {
		return cmp.Or(cmp.Compare(a.Ago, b.Ago), strings.Compare(a.Port, b.Port), strings.Compare(a.MAC, b.MAC), strings.Compare(a.EtherType, b.EtherType))
	})
	return err
}

// readDrops decodes the records of a set of dropped frames (nil: no such
// set), each with its counter and age; a key guestnet's rules do not make
// is skipped, not ours to judge.
func readDrops[T any](c *nftables.Conn, s *nftables.Set, decode func(key []byte, packets uint64, ago time.Duration) (T, bool)) ([]T, error) {
	if s == nil {
		return nil, nil
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("observe set bridge %s %s: %w", model.Table, s.Name, err)
	}
	var out []T
	for _, e := range els {
		packets, ago := dropCount(s, e)
		if x, ok := decode(e.Key, packets, ago); ok {
			out = append(out, x)
		}
	}
	return out, nil
}

// dropCount reads a dropped frame record's counter, and how long ago its
// last frame was dropped (the set's timeout less the time left).
func dropCount(s *nftables.Set, e nftables.SetElement) (packets uint64, ago time.Duration) {
	if e.Counter != nil {
		packets = e.Counter.Packets
	}
	if t := cmp.Or(e.Timeout, s.Timeout); e.Expires > 0 && e.Expires <= t {
		ago = t - e.Expires
	}
	return packets, ago
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// checkGuardChains marks the guard Broken unless its chains hold exactly
// guestnet's rules, and reads the count of dropped frames.
func checkGuardChains(c *nftables.Conn, t *nftables.Table, g *model.Guard) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("observe table bridge %s: %w", model.Table, err)
	}
	want := nft.GuardChains()
	seen := 0
	for _, ch := range chains {
		if ch.Table.Name != model.Table {
			continue
		}
		seen++
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return fmt.Errorf("observe table bridge %s chain %s: %w", model.Table, ch.Name, err)
		}
		w, ok := want[ch.Name]
		if !ok || len(rules) != len(w) || !guardHook(ch) {
			g.Broken = true
			continue
		}
		for i, r := range rules {
			if !nft.SameGuardRule(r.Exprs, w[i]) {
				g.Broken = true
			}
			for _, e := range r.Exprs {
				if n, ok := e.(*expr.Counter); ok { // each drop rule counts its own
					if strings.HasPrefix(ch.Name, "vxlan_") {
						g.VXLANDropped += n.Packets // no spoofing: the anycast gateway's
					} else {
						g.Dropped += n.Packets
					}
				}
			}
		}
	}
	if seen != len(want) {
		g.Broken = true
	}
	return nil
}

// guardHook reports whether a chain of the guard table is hooked as its
// description says: the base chains at their hook with policy accept, the
// others at none.
func guardHook(ch *nftables.Chain) bool {
	d, ok := model.GuardTableOf(model.GuardFamily).Chain(ch.Name)
	if !ok {
		return false
	}
	hooks := map[string]nftables.ChainHook{"prerouting": *nftables.ChainHookPrerouting, "postrouting": *nftables.ChainHookPostrouting}
	if d.Hook == "" {
		return ch.Hooknum == nil
	}
	return ch.Hooknum != nil && *ch.Hooknum == hooks[d.Hook] && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyAccept
}

// readVXLAN reads the VXLAN sets: the declared ports, gateways and their
// MACs, and the records of frames dropped on the VXLAN ports.
func readVXLAN(c *nftables.Conn, byName map[string]*nftables.Set, g *model.Guard) error {
	if err := readKeys(c, byName[model.GuardVXLANGateways], nft.DecodeAddr4Key, &g.VXLANGateways, g); err != nil {
		return err
	}
	slices.SortFunc(g.VXLANGateways, netip.Addr.Compare)
	if err := readKeys(c, byName[model.GuardVXLANMACs], nft.DecodeMACKey, &g.VXLANMACs, g); err != nil {
		return err
	}
	slices.Sort(g.VXLANMACs)
	g.VXLANDrops = nil
	for set, out := range map[string]bool{model.GuardVXLANInDrops: false, model.GuardVXLANOutDrops: true} {
		xs, err := readDrops(c, byName[set], func(k []byte, packets uint64, ago time.Duration) (model.VXLANDrop, bool) {
			x, ok := nft.DecodeVXLANDropKey(k, out)
			x.Packets, x.Ago = packets, ago
			return x, ok
		})
		if err != nil {
			return err
		}
		g.VXLANDrops = append(g.VXLANDrops, xs...)
	}
	slices.SortFunc(g.VXLANDrops, func(a, b model.VXLANDrop) int {
		return cmp.Or(cmp.Compare(a.Ago, b.Ago), strings.Compare(a.Port, b.Port), strings.Compare(a.MAC, b.MAC), strings.Compare(a.EtherType, b.EtherType))
	})
	return nil
}

// read6 reads the IPv6 sets: the declared prefixes and held addresses,
// the claims, and the records of dropped IPv6 frames.
func read6(c *nftables.Conn, byName map[string]*nftables.Set, g *model.Guard) error {
	for name, dst := range map[string]*[]model.PortPrefix{model.GuardPrefixes6: &g.Prefixes6, model.GuardLearnedPrefixes6: &g.LearnedPrefixes6} {
		s := byName[name]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("observe set bridge %s %s: %w", model.Table, s.Name, err)
		}
		for _, e := range els {
			if e.IntervalEnd {
				continue
			}
			p, ok := nft.DecodePrefixKey(e.Key, e.KeyEnd)
			if !ok {
				g.Broken = true
				continue
			}
			*dst = append(*dst, p)
		}
		*dst = model.SortPortPrefixes(*dst)
	}
	if err := readKeys(c, byName[model.GuardHeld6], nft.DecodeAddrKey, &g.Held6, g); err != nil {
		return err
	}
	slices.SortFunc(g.Held6, netip.Addr.Compare)
	if s := byName[model.GuardClaims6]; s != nil {
		els, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("observe set bridge %s %s: %w", model.Table, s.Name, err)
		}
		for _, e := range els {
			if cl, ok := nft.DecodeClaimKey(e.Key); ok {
				cl.Left = e.Expires
				g.Claims6 = append(g.Claims6, cl)
			}
		}
		slices.SortFunc(g.Claims6, func(a, b model.Claim6) int {
			return cmp.Or(strings.Compare(a.Port, b.Port), a.IP.Compare(b.IP))
		})
	}
	for _, src := range []struct {
		set    string
		decode func([]byte) (model.Drop6, bool)
	}{
		{model.GuardDropped6, func(k []byte) (model.Drop6, bool) {
			b, ok := nft.DecodeGuardKey(k, nil)
			return model.Drop6{Kind: model.Drop6Source, Port: b.Port, MAC: b.MAC, IP: b.IP}, ok && b.IP.Is6()
		}},
		{model.GuardRouter6, nft.DecodeRouter6Key},
		{model.GuardNA6, func(k []byte) (model.Drop6, bool) {
			b, ok := nft.DecodeGuardKey(k, nil)
			return model.Drop6{Kind: model.Drop6NA, Port: b.Port, MAC: b.MAC, IP: b.IP}, ok && b.IP.Is6()
		}},
	} {
		xs, err := readDrops(c, byName[src.set], func(k []byte, packets uint64, ago time.Duration) (model.Drop6, bool) {
			x, ok := src.decode(k)
			x.Packets, x.Ago = packets, ago
			return x, ok
		})
		if err != nil {
			return err
		}
		g.Dropped6 = append(g.Dropped6, xs...)
	}
	slices.SortFunc(g.Dropped6, func(a, b model.Drop6) int {
		return cmp.Or(cmp.Compare(a.Ago, b.Ago), strings.Compare(a.Port, b.Port), a.IP.Compare(b.IP), strings.Compare(string(a.Kind), string(b.Kind)))
	})
	return nil
}
