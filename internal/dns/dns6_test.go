package dns

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// names6 is the network's IPv6 side: vm1 at fd42:61::10, v6only (no IPv4
// lease) at fd42:61::11.
type names6 struct{}

var (
	vm1v6    = netip.MustParseAddr("fd42:61::10")
	v6onlyIP = netip.MustParseAddr("fd42:61::11")
)

func (names6) Lookup(h string) (netip.Addr, bool) {
	switch strings.ToLower(h) {
	case "vm1":
		return vm1v6, true
	case "v6only":
		return v6onlyIP, true
	}
	return netip.Addr{}, false
}

func (names6) Reverse(a netip.Addr) (string, bool) {
	switch a {
	case vm1v6:
		return "vm1", true
	case v6onlyIP:
		return "v6only", true
	}
	return "", false
}

// TestAAAAAndIP6Arpa: a guest of the IPv6 prefix is answered (its source
// in Subnet6), AAAA from the DHCPv6 names next to A from the DHCPv4 ones,
// NODATA for the family a name lacks, PTRs in ip6.arpa for the prefix,
// and an ip6.arpa name outside the prefix is not ours.
func TestAAAAAndIP6Arpa(t *testing.T) {
	s := &Server{Domain: "lab.internal", Subnet: netip.MustParsePrefix("10.99.0.0/24"),
		Subnet6: netip.MustParsePrefix("fd42:61::/64"), Names: names{}, Names6: names6{}, Dial: net.Dial}
	src := from("udp", "[fd42:61::200]:40000")
	ptr := func(a netip.Addr) string { n, _ := mdns.ReverseAddr(a.String()); return n }
	cases := []struct {
		q     *mdns.Msg
		rcode int
		want  string // the answer's value, "" for none
	}{
		{query("vm1.lab.internal.", mdns.TypeAAAA), mdns.RcodeSuccess, "fd42:61::10"},
		{query("vm1.lab.internal.", mdns.TypeA), mdns.RcodeSuccess, "10.99.0.10"},
		{query("v6only.lab.internal.", mdns.TypeAAAA), mdns.RcodeSuccess, "fd42:61::11"},
		{query("v6only.lab.internal.", mdns.TypeA), mdns.RcodeSuccess, ""}, // NODATA, not NXDOMAIN
		{query("nobody.lab.internal.", mdns.TypeAAAA), mdns.RcodeNameError, ""},
		{query(ptr(vm1v6), mdns.TypePTR), mdns.RcodeSuccess, "vm1.lab.internal."},
		{query(ptr(v6onlyIP), mdns.TypePTR), mdns.RcodeSuccess, "v6only.lab.internal."},
		{query(ptr(netip.MustParseAddr("fd42:61::99")), mdns.TypePTR), mdns.RcodeNameError, ""},
	}
	for _, c := range cases {
		w := &writer{remote: src}
		s.ServeDNS(w, c.q)
		what := c.q.Question[0].Name + " " + mdns.TypeToString[c.q.Question[0].Qtype]
		if w.got == nil || w.got.Rcode != c.rcode {
			t.Errorf("%s: %v, want rcode %s", what, w.got, mdns.RcodeToString[c.rcode])
			continue
		}
		got := ""
		if len(w.got.Answer) == 1 {
			switch rr := w.got.Answer[0].(type) {
			case *mdns.AAAA:
				got = rr.AAAA.String()
			case *mdns.A:
				got = rr.A.String()
			case *mdns.PTR:
				got = rr.Ptr
			}
		} else if len(w.got.Answer) > 1 {
			got = "several"
		}
		if got != c.want {
			t.Errorf("%s: answer %q, want %q", what, got, c.want)
		}
	}
	// Outside the IPv6 prefix: refused.
	w := &writer{remote: from("udp", "[fd43::5]:40000")}
	s.ServeDNS(w, query("vm1.lab.internal.", mdns.TypeAAAA))
	if w.got == nil || w.got.Rcode != mdns.RcodeRefused {
		t.Errorf("from outside both subnets: %v, want REFUSED", w.got)
	}
}

// TestGroupIPv6Socket: a Group serves a socket on an IPv6 address (the
// gateway's), over UDP and TCP.
func TestGroupIPv6Socket(t *testing.T) {
	g, err := NewGroup(UpstreamUDPSize)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	stop, err := g.Add(pc, ln, &Server{Domain: "lab.internal", Subnet6: netip.MustParsePrefix("fd42:61::/64"), Names6: names6{}})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, c := range []struct{ network, addr string }{{"udp", pc.LocalAddr().String()}, {"tcp", ln.Addr().String()}} {
		cl := &mdns.Client{Net: c.network, Timeout: 10 * time.Second}
		r, _, err := cl.Exchange(new(mdns.Msg).SetQuestion("vm1.lab.internal.", mdns.TypeAAAA), c.addr)
		if err != nil {
			t.Fatalf("%s: %v", c.network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.AAAA).AAAA.String() != "fd42:61::10" {
			t.Errorf("vm1 AAAA over %s via [::1]: %v", c.network, r.Answer)
		}
	}
}
