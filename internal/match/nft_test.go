package match_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/match"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/nft"
)

// vm evaluates nftables expressions on a packet the way the kernel's
// nft_do_chain does: registers, loads, bitwise, cmp (a failed cmp ends the
// rule), lookups in guestnet's maps, NAT. It is the independent reading of
// what nft.Encode writes, against which the matcher is checked.
type vm struct {
	rs   model.Ruleset
	regs [64]byte
	// vmaps are the verdict maps' elements as apply sends them
	// (nft.VmapElements); jump is the chain a verdict map lookup chose.
	vmaps map[string][]nftables.SetElement
	jump  string
}

// newVM is a VM over rs's maps.
func newVM(t *testing.T, rs model.Ruleset) *vm {
	m := &vm{rs: rs, vmaps: map[string][]nftables.SetElement{}}
	for _, v := range rs.Vmaps {
		els, err := nft.VmapElements(v.Name, v.Elements)
		if err != nil {
			t.Fatal(err)
		}
		m.vmaps[v.Name] = els
	}
	return m
}

// vlookup finds a key in a verdict map as the kernel does: an exact key,
// or in an interval map the start at or below the key whose interval's end
// (the next element, flagged as an end) lies above it.
func (m *vm) vlookup(set string, key []byte) (string, bool) {
	els := m.vmaps[set]
	for i, e := range els {
		if e.IntervalEnd || e.VerdictData == nil {
			continue
		}
		k := key[:len(e.Key)]
		if !nft.VmapInterval(set) {
			if bytes.Equal(k, e.Key) {
				return e.VerdictData.Chain, true
			}
			continue
		}
		end := []byte{0xff, 0xff, 0xff, 0xff, 0xff} // past the last address
		if i+1 < len(els) && els[i+1].IntervalEnd {
			end = els[i+1].Key
		}
		if bytes.Compare(k, e.Key) >= 0 && bytes.Compare(k, end) < 0 {
			return e.VerdictData.Chain, true
		}
	}
	return "", false
}

// reg is the byte offset of a register: 1..4 are the 16-byte registers,
// 8..23 the 32-bit ones (register 1 is 8..11).
func reg(r uint32) int {
	if r >= 8 {
		return int(r-8) * 4
	}
	return int(r-1) * 16
}

var protoNum = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "ipv6-icmp": unix.IPPROTO_ICMPV6}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// store writes v to register r, zeroing the rest of its last 32-bit word
// (as nft_reg_store8/16 and the payload load do).
func (m *vm) store(r uint32, v []byte) {
	o := reg(r)
	n := (len(v) + 3) / 4 * 4
	clear(m.regs[o : o+n])
	copy(m.regs[o:], v)
}

// verdictNAT is what the VM did with the packet when it reached the end.
type verdictNAT struct {
	dst, src netip.Addr
	port     int
}

// eval runs exprs; matched is true when the rule's verdict was reached.
func (m *vm) eval(exprs []expr.Any, p match.Packet) (matched bool, nat verdictNAT, err error) {
	ipv4 := p.Src.Is4() && p.Dst.Is4()
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch e.Key {
			case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
				n := p.IIF
				if e.Key == expr.MetaKeyOIFNAME {
					n = p.OIF
				}
				if n == "" {
					return false, nat, nil // NFT_BREAK: no such device at this hook
				}
				m.store(e.Register, ifname(n))
			case expr.MetaKeyIIFGROUP:
				if p.IIF == "" {
					return false, nat, nil
				}
				m.store(e.Register, binary.NativeEndian.AppendUint32(nil, p.IIFGroup))
			case expr.MetaKeyNFPROTO:
				v := byte(unix.NFPROTO_IPV6)
				if ipv4 {
					v = unix.NFPROTO_IPV4
				}
				m.store(e.Register, []byte{v})
			case expr.MetaKeyL4PROTO:
				m.store(e.Register, []byte{protoNum[p.Proto]})
			default:
				return false, nat, fmt.Errorf("vm: meta key %d", e.Key)
			}
		case *expr.Payload:
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && (e.Offset == 12 || e.Offset == 16) && e.Len <= 4:
				if !ipv4 {
					return false, nat, fmt.Errorf("vm: IPv4 header load on an IPv6 packet (no nfproto check before it)")
				}
				a := p.Src.As4()
				if e.Offset == 16 {
					a = p.Dst.As4()
				}
				m.store(e.DestRegister, a[:e.Len])
			case e.Base == expr.PayloadBaseNetworkHeader && (e.Offset == 8 || e.Offset == 24) && e.Len == 16:
				if ipv4 {
					return false, nat, fmt.Errorf("vm: IPv6 header load on an IPv4 packet (no nfproto check before it)")
				}
				a := p.Src.As16()
				if e.Offset == 24 {
					a = p.Dst.As16()
				}
				m.store(e.DestRegister, a[:])
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				if p.Proto != "tcp" && p.Proto != "udp" {
					return false, nat, fmt.Errorf("vm: th dport of a %s packet", p.Proto)
				}
				m.store(e.DestRegister, binary.BigEndian.AppendUint16(nil, uint16(p.Port)))
			default:
				return false, nat, fmt.Errorf("vm: payload %+v", e)
			}
		case *expr.Bitwise:
			s, d := reg(e.SourceRegister), reg(e.DestRegister)
			for i := 0; i < int(e.Len); i++ {
				m.regs[d+i] = m.regs[s+i]&e.Mask[i] ^ e.Xor[i]
			}
		case *expr.Cmp:
			o := reg(e.Register)
			eq := bytes.Equal(m.regs[o:o+len(e.Data)], e.Data)
			switch e.Op {
			case expr.CmpOpEq:
			case expr.CmpOpNeq:
				eq = !eq
			default:
				return false, nat, fmt.Errorf("vm: cmp op %d", e.Op)
			}
			if !eq {
				return false, nat, nil
			}
		case *expr.Ct:
			var v uint32
			switch e.Key {
			case expr.CtKeySTATE:
				v = expr.CtStateBitNEW
				if p.Reply {
					v = expr.CtStateBitESTABLISHED
				}
			case expr.CtKeySTATUS:
				v = 1 << 3 // IPS_CONFIRMED
				if p.DNAT {
					v |= 1 << 5 // IPS_DST_NAT
				}
			default:
				return false, nat, fmt.Errorf("vm: ct key %d", e.Key)
			}
			m.store(e.Register, binary.NativeEndian.AppendUint32(nil, v))
		case *expr.Fib:
			v := uint32(unix.RTN_UNICAST)
			if p.Local {
				v = unix.RTN_LOCAL
			}
			m.store(e.Register, binary.NativeEndian.AppendUint32(nil, v))
		case *expr.Byteorder:
			if e.Len/e.Size != 0 {
				return false, nat, fmt.Errorf("vm: byteorder of %d bytes", e.Len)
			}
			// len 1, size 2: the kernel converts no element (nft emits it for inet_proto).
		case *expr.Lookup:
			if e.IsDestRegSet && e.DestRegister == 0 { // a verdict map: its element's jump is the verdict
				chain, ok := m.vlookup(e.SetName, m.regs[reg(e.SourceRegister):])
				if !ok {
					return false, nat, nil
				}
				m.jump = chain
				return true, nat, nil
			}
			val, ok := m.lookup(e.SetName, m.regs[reg(e.SourceRegister):])
			if !ok {
				return false, nat, nil
			}
			copy(m.regs[reg(e.DestRegister):], val)
		case *expr.NAT:
			a := netip.AddrFrom4([4]byte(m.regs[reg(e.RegAddrMin):]))
			if e.Type == expr.NATTypeDestNAT {
				nat.dst, nat.port = a, p.Port
				if e.RegProtoMin != 0 {
					nat.port = int(binary.BigEndian.Uint16(m.regs[reg(e.RegProtoMin):]))
				}
			} else {
				nat.src = a
			}
			return true, nat, nil
		case *expr.Verdict, *expr.Reject, *expr.Masq:
			return true, nat, nil
		default:
			return false, nat, fmt.Errorf("vm: expression %T", e)
		}
	}
	return false, nat, fmt.Errorf("vm: rule without a verdict")
}

// lookup finds a key in one of guestnet's maps, with the elements encoded
// as apply sends them.
func (m *vm) lookup(set string, key []byte) ([]byte, bool) {
	switch set {
	case model.FloatingIn, model.FloatingOut:
		for _, f := range m.rs.Floating {
			k, v := f.Public.As4(), f.Guest.As4()
			if set == model.FloatingOut {
				k, v = v, k
			}
			if bytes.Equal(key[:4], k[:]) {
				return v[:], true
			}
		}
	case model.ForwardsMap:
		for _, f := range m.rs.Forwards {
			if !f.Exact() {
				continue
			}
			if k, v := nft.EncodeExact(f); bytes.Equal(key[:len(k)], k) {
				return v, true
			}
		}
	case model.ForwardsSrcMap:
		for _, f := range m.rs.Forwards {
			if f.Exact() {
				continue
			}
			k, kEnd, v := nft.EncodeForward(f)
			in := true
			for i := 0; i < len(k); i += 4 { // each field of the concatenation has its own interval
				if bytes.Compare(key[i:i+4], k[i:i+4]) < 0 || bytes.Compare(key[i:i+4], kEnd[i:i+4]) > 0 {
					in = false
				}
			}
			if in {
				return v, true
			}
		}
	}
	return nil, false
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// networks is a set with every kind of rule guestnet renders: all modes,
// port forwards (hash and interval maps), floating addresses, peers,
// guest_to_host: all, dns:.
func networks() []model.Network {
	return []model.Network{
		{Name: "default", Mode: model.NAT, Bridge: "gnat0", IPv4: pfx("10.99.0.1/24"), DNS: &model.DNS{Domain: "lan"},
			Peers: []string{"lab"},
			Forwards: []model.PortForward{
				{Proto: "tcp", PortFrom: 2222, PortTo: 2222, To: ip("10.99.0.10"), ToPort: 8080},
				{Proto: "udp", PortFrom: 5353, PortTo: 5353, To: ip("10.99.0.10")},
				{Proto: "tcp", PortFrom: 8081, PortTo: 8081, To: ip("10.99.0.10"), ToPort: 8080, From: []netip.Prefix{pfx("203.0.113.0/24")}},
				{Proto: "tcp", PortFrom: 8443, PortTo: 8444, To: ip("10.99.0.11"), Listen: []netip.Addr{ip("198.51.100.1")}},
				{Proto: "udp", PortFrom: 5000, PortTo: 5000, To: ip("10.99.0.12"), From: []netip.Prefix{pfx("198.51.100.126/32")}},
			},
			Floating: []model.Floating{{Public: ip("198.51.100.50"), Guest: ip("10.99.0.20")}}},
		{Name: "lab", Mode: model.Routed, Bridge: "grt0", IPv4: pfx("10.99.1.1/24"), GuestToHost: "all", DNS: &model.DNS{Domain: "lab"},
			Forwards: []model.PortForward{{Proto: "udp", PortFrom: 6000, PortTo: 6000, To: ip("10.99.1.10")}}},
		{Name: "iso", Mode: model.Isolated, Bridge: "giso0"},
		{Name: "iso4", Mode: model.Isolated, Bridge: "giso4", IPv4: pfx("10.97.0.1/24")},
		{Name: "lan", Mode: model.Bridge, Bridge: "brlan", IPv4: pfx("198.51.100.1/25"), Uplink: "up0"},
		{Name: "open", Mode: model.Open, Bridge: "gopen0", IPv4: pfx("10.96.0.1/24")},
		// IPv6: dual-stack and IPv6-only networks of each mode.
		{Name: "nat6", Mode: model.NAT, Bridge: "gnat6", IPv4: pfx("10.95.0.1/24"), IPv6: pfx("fd42:95::1/64"), DNS: &model.DNS{Domain: "six"}, Peers: []string{"rt6"}},
		{Name: "rt6", Mode: model.Routed, Bridge: "grt6", IPv6: pfx("2001:db8:71::1/64")},
		{Name: "v6nat", Mode: model.NAT, Bridge: "gv6nat", IPv6: pfx("fd42:96::1/64"), DNS: &model.DNS{Domain: "v6"}},
		{Name: "iso6", Mode: model.Isolated, Bridge: "giso6", IPv6: pfx("fd42:97::1/64")},
	}
}

// dockerHost has a foreign FORWARD that drops by policy and Docker's
// DOCKER-USER chain, so guestnet renders its DOCKER-USER rules too.
func dockerHost() model.Host {
	return model.Host{BridgeNFCallIPTables: true, Foreign: model.Foreign{DockerUser: true,
		ForwardDrop: []model.ForeignChain{{Name: "table ip filter chain FORWARD", AcceptIIF: []string{"gopen0"}, AcceptOIF: []string{"gopen0"}}}}}
}

// packets is a deterministic table over the addresses, interfaces,
// protocols, ports and conntrack states the rules name.
func packets(nets []model.Network) []match.Packet {
	addrs := []netip.Addr{ip("203.0.113.10"), ip("198.51.100.1"), ip("198.51.100.50"), ip("198.51.100.126"), ip("fd00::1"), ip("127.0.0.1"),
		ip("2001:db8:ff::2"), ip("fe80::1")}
	ifs := []string{"", "lo", "up0"}
	ports := []int{22, 53, 67, 80, 547, 8080}
	for _, n := range nets {
		ifs = append(ifs, n.Bridge)
		for _, a := range n.Addrs() {
			addrs = append(addrs, a.Addr(), a.Addr().Next().Next())
		}
		for _, f := range n.Forwards {
			addrs = append(addrs, f.To)
			ports = append(ports, f.PortFrom, f.PortTo)
		}
		for _, f := range n.Floating {
			addrs = append(addrs, f.Guest)
		}
	}
	protos := []string{"tcp", "udp", "icmp", "ipv6-icmp"}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) int { return r.IntN(n) }
	var out []match.Packet
	for range 40000 {
		p := match.Packet{Src: addrs[pick(len(addrs))], Dst: addrs[pick(len(addrs))], IIF: ifs[pick(len(ifs))], OIF: ifs[pick(len(ifs))],
			Proto: protos[pick(len(protos))], Reply: pick(2) == 0, DNAT: pick(3) == 0, Local: pick(2) == 0}
		if p.Src.Is4() != p.Dst.Is4() {
			p.Dst = p.Src
		}
		if p.Proto == "tcp" || p.Proto == "udp" {
			p.Port = ports[pick(len(ports))]
		}
		if pick(2) == 0 {
			p.IIFGroup = model.GuestGroup
		}
		out = append(out, p)
	}
	return out
}

// TestMatcherAgreesWithNftables: every rule guestnet renders for the
// networks above is encoded to nftables expressions and decoded back; on
// every packet of the table, the matcher gives the same answer for the rule
// and for its decoded copy, and that answer is what the expressions
// themselves do when evaluated as the kernel does (map lookups and NAT
// included). A match the matcher does not know fails the test. Each rule
// must both match and miss some packet, so the table exercises all.
func TestMatcherAgreesWithNftables(t *testing.T) {
	nets := networks()
	var rulesets []model.Ruleset
	for _, h := range []model.Host{{}, dockerHost()} {
		rs, err := nft.Render(nets, h)
		if err != nil {
			t.Fatal(err)
		}
		rulesets = append(rulesets, rs)
	}
	if len(rulesets[1].DockerUser) == 0 {
		t.Fatal("the docker host rendered no DOCKER-USER rules: the test would not cover them")
	}
	pkts := packets(nets)
	kinds := map[model.MatchKind]bool{}
	verdicts := map[model.Verdict]bool{}
	rules, compared := 0, 0
	for _, rs := range rulesets {
		// The map elements make the same trip: decoded as observe reads
		// them, they must give the same lookups.
		back := rs
		back.Forwards = nil
		for _, f := range rs.Forwards {
			var got model.Forward
			var ok bool
			if f.Exact() {
				k, v := nft.EncodeExact(f)
				got, ok = nft.DecodeExact(k, v)
			} else {
				got, ok = nft.DecodeForward(nft.EncodeForward(f))
			}
			if !ok || got != f {
				t.Fatalf("forward %s decodes to %s (ok %v)", f, got, ok)
			}
			back.Forwards = append(back.Forwards, got)
		}
		machine := newVM(t, rs)
		back.Vmaps = nil
		for _, v := range rs.Vmaps {
			els, err := nft.VmapElements(v.Name, v.Elements)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := nft.DecodeVmapElements(v.Name, els)
			if !ok || !slices.Equal(got, v.Elements) {
				t.Fatalf("map %s: elements %v decode to %v (ok %v)", v.Name, v.Elements, got, ok)
			}
			back.Vmaps = append(back.Vmaps, model.Vmap{Name: v.Name, Key: v.Key, Elements: got})
		}
		type placed struct {
			where string
			r     model.Rule
			inet  bool
		}
		var all []placed
		for _, c := range rs.Chains {
			for _, r := range c.Rules {
				all = append(all, placed{c.Name, r, true})
			}
		}
		for _, r := range rs.DockerUser {
			all = append(all, placed{"DOCKER-USER", r, false})
		}
		for _, pr := range all {
			r := pr.r
			rules++
			verdicts[r.Verdict] = true
			for _, m := range r.Match {
				kinds[m.Kind] = true
			}
			exprs, err := nft.Encode(r, pr.inet)
			if err != nil {
				t.Fatalf("%s: %s: %v", pr.where, r, err)
			}
			dec, ok := nft.Decode(exprs, r.Network)
			if !ok || dec.String() != r.String() {
				t.Fatalf("%s: %s decodes to %s (ok %v)", pr.where, r, dec, ok)
			}
			hits, misses := 0, 0
			for _, p := range pkts {
				want, err := match.Rule(r, p)
				if err != nil {
					t.Fatalf("%s: %s on %+v: %v", pr.where, r, p, err)
				}
				again, err := match.Rule(dec, p)
				if err != nil || again != want {
					t.Fatalf("%s: %s: the decoded rule answers %v (%v), the rendered one %v, on %+v", pr.where, r, again, err, want, p)
				}
				var wantNAT match.NAT
				var wantJump string
				if match.IsDispatch(r.Verdict) {
					// The chain the verdict map jumps to, from the rendered
					// elements and from those read back.
					if wantJump, want, err = match.Dispatch(rs, r, p); err != nil {
						t.Fatalf("%s: %s: %v", pr.where, r, err)
					}
					if again, hitAgain, err := match.Dispatch(back, dec, p); err != nil || hitAgain != want || again != wantJump {
						t.Fatalf("%s: %s on %+v: the decoded rule and elements jump to %q (%v, %v), the rendered ones to %q (%v)", pr.where, r, p, again, hitAgain, err, wantJump, want)
					}
				} else if want && r.Verdict != model.Accept && r.Verdict != model.Drop && r.Verdict != model.Reject && r.Verdict != model.Masquerade {
					var hit bool
					if wantNAT, hit, err = match.Lookup(rs, r.Verdict, p); err != nil {
						t.Fatalf("%s: %s: %v", pr.where, r, err)
					}
					if again, hitAgain, _ := match.Lookup(back, r.Verdict, p); hitAgain != hit || again.Dst != wantNAT.Dst || again.Port != wantNAT.Port || again.Src != wantNAT.Src {
						t.Fatalf("%s: %s on %+v: the decoded map elements translate to %+v, the rendered ones to %+v", pr.where, r, p, again, wantNAT)
					}
					want = hit // a lookup miss ends the rule
				}
				m := *machine
				m.jump = ""
				got, nat, err := m.eval(exprs, p)
				if err != nil {
					t.Fatalf("%s: %s on %+v: %v", pr.where, r, p, err)
				}
				if got != want || m.jump != wantJump {
					t.Fatalf("%s: %s on %+v: the matcher says %v (jump %q), the nftables expressions %v (jump %q)", pr.where, r, p, want, wantJump, got, m.jump)
				}
				if got && (nat.dst != wantNAT.Dst || nat.src != wantNAT.Src || (nat.dst.IsValid() && nat.port != wantNAT.Port)) {
					t.Fatalf("%s: %s on %+v: the matcher translates to %+v, the expressions to %+v", pr.where, r, p, wantNAT, nat)
				}
				if got {
					hits++
				} else {
					misses++
				}
				compared++
			}
			// A rule without matches (the last of a network's chain) matches
			// every packet the dispatch brings it.
			if hits == 0 || (misses == 0 && len(r.Match) > 0) {
				t.Errorf("%s: %s: %d packets match, %d miss: the table does not exercise it", pr.where, r, hits, misses)
			}
		}
	}
	for _, k := range []model.MatchKind{model.MatchIIF, model.MatchOIF, model.MatchSAddr, model.MatchDAddr, model.MatchCtReply,
		model.MatchCtDNAT, model.MatchLocal, model.MatchL4, model.MatchDPort, model.MatchIIFGrp, model.MatchNFProto} {
		if !kinds[k] {
			t.Errorf("no rendered rule holds a %q match: the networks do not cover every kind", k)
		}
	}
	for _, v := range []model.Verdict{model.Accept, model.Drop, model.Reject, model.Masquerade, model.DNATMap, model.DNATPort, model.DNATFloat, model.SNATFloat,
		model.DispatchForwardTo, model.DispatchForwardFrom, model.DispatchInputFrom, model.DispatchDNSTo, model.DispatchNATFrom,
		model.DispatchDNSTo6, model.DispatchNATFrom6} {
		if !verdicts[v] {
			t.Errorf("no rendered rule has verdict %q", v)
		}
	}
	t.Logf("%d rules x %d packets: %d comparisons, matcher = decoded matcher = nftables expressions", rules, len(pkts), compared)
}
