// Package dns answers guests' names on a network: NAME.DOMAIN from static
// hosts and DHCP leases (and the reverse), everything else forwarded to the
// configured upstream servers. Wire format, serving and the upstream client:
// github.com/miekg/dns.
//
// It answers only its own network: a query whose source is outside the
// subnet is REFUSED (Unbound's default access-control), whatever it asks.
// The firewall (table inet guestnet, chain input) already drops DNS to the
// gateway address arriving on any interface but the bridge and lo; this
// check is the second line, for what the firewall lets through or no longer
// holds (a query from the host with another of its addresses, a table
// flushed until drift repair puts it back).
//
// The host itself may ask (the firewall lets lo through): a source that is
// one of the host's own addresses, loopback included, is answered too. Only
// the host can send from those (Linux drops a packet arriving on any other
// interface with a local source address as a martian), and the host's query
// to the gateway does not always leave from the gateway address: a nat
// network's masquerade (oifname != bridge) also rewrites it on its way out
// lo, to whichever of the host's addresses the kernel picks.
package dns

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// UpstreamUDPSize is the EDNS0 buffer size guestnet advertises, upstream
// and in its answers to guests (what it reads from them): the DNS Flag Day
// 2020 value, which fits the IPv6 minimum MTU, so an upstream's answer never
// needs IP fragments. Larger answers come by TCP.
const UpstreamUDPSize = 1232

// MaxUDPAnswer caps every answer to a guest over UDP, whatever EDNS size
// the guest advertises: the same DNS Flag Day 2020 value. A larger answer
// would leave in IP fragments (a guest on a 1,500-byte link asked 4,096
// and got 2,791 bytes in two fragments, 55 times its query: an amplifier
// aimed at whatever source a guest forges inside its subnet). An answer
// that does not fit comes with TC set, and the guest asks again over TCP,
// which has no cap.
const MaxUDPAnswer = 1232

// DefaultTimeout bounds one upstream exchange when Server.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// Names is where the server looks guests up.
type Names interface {
	Lookup(host string) (netip.Addr, bool) // host is the label under the domain
	Reverse(a netip.Addr) (string, bool)   // the host label of an address
}

// Server answers one network's queries.
type Server struct {
	Domain   string       // without the trailing dot
	Subnet   netip.Prefix // the only sources answered (with Subnet6)
	Subnet6  netip.Prefix // the network's IPv6 prefix, if any
	Upstream []netip.AddrPort
	Names    Names // A records and in-addr.arpa
	Names6   Names // AAAA records and ip6.arpa (DHCPv6 leases, static hosts6); nil for none
	TTL      uint32
	Timeout  time.Duration // one upstream exchange; DefaultTimeout when zero
	// HostAddr reports whether a is one of the host's own addresses (the
	// host's own queries); nil means only loopback counts.
	HostAddr func(a netip.Addr) bool
	// Dial opens the socket to an upstream ("udp" or "tcp"); the daemon
	// makes it inside the network's namespace, so forwarded queries leave
	// from there.
	Dial func(network, addr string) (net.Conn, error)

	// forwarding counts the queries waiting on an upstream (MaxForwards).
	forwarding atomic.Int32
	// Overloaded counts the queries answered SERVFAIL at once because
	// MaxForwards were already waiting.
	Overloaded atomic.Uint64
}

// MaxForwards bounds a network's queries waiting on an upstream at once,
// as dnsmasq's dns-forward-max (150) does; beyond it a query is answered
// SERVFAIL at once. Each one holds a socket for up to the upstream timeout:
// unbounded, a guest asking 20,000 names a second that its upstream is
// slow to answer held 20,000 of the daemon's file descriptors (its whole
// limit here), and every other network's forwarded queries, TCP clients
// and ARP probes failed with it (e2e TestDNSFloodDoesNotStarveOtherNetwork).
const MaxForwards = 150

// ServeDNS implements mdns.Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if !s.Allowed(w.RemoteAddr()) {
		// REFUSED is the header and the question alone, as Unbound's
		// access-control sends it (no OPT record): never larger than the
		// query, so a spoofed source gains nothing by reflection.
		w.WriteMsg(rcode(req, mdns.RcodeRefused))
		return
	}
	if len(req.Question) != 1 {
		reply(w, req, rcode(req, mdns.RcodeFormatError))
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	zone := mdns.Fqdn(strings.ToLower(s.Domain))
	switch {
	case mdns.IsSubDomain(zone, name):
		reply(w, req, s.local(req, name, zone))
	case strings.HasSuffix(name, ".in-addr.arpa.") && s.inSubnet(name):
		reply(w, req, s.reverse(req, name))
	case strings.HasSuffix(name, ".ip6.arpa.") && s.inSubnet6(name):
		reply(w, req, s.reverse(req, name))
	default:
		if s.forwarding.Add(1) > MaxForwards {
			s.forwarding.Add(-1)
			s.Overloaded.Add(1)
			reply(w, req, rcode(req, mdns.RcodeServerFailure))
			return
		}
		defer s.forwarding.Add(-1)
		reply(w, req, s.forward(req))
	}
}

// Allowed reports whether a query from addr may be answered: its source is
// in the network's subnet, or the host's own (loopback, or HostAddr).
func (s *Server) Allowed(addr net.Addr) bool {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return false
	}
	a := ap.Addr().Unmap()
	switch {
	case s.Subnet.IsValid() && s.Subnet.Contains(a), s.Subnet6.IsValid() && s.Subnet6.Contains(a), a.IsLoopback():
		return true
	case s.HostAddr != nil:
		return s.HostAddr(a)
	}
	return false
}

func rcode(req *mdns.Msg, code int) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, code)
	return m
}

// reply fits m to the client's hop and sends it. EDNS is hop by hop (RFC
// 6891 §6.1.1): a client that sent an OPT record gets ours, one that did
// not gets none. Over UDP the answer is cut to the client's size (512 bytes
// without EDNS, else its advertised size, at most MaxUDPAnswer) with TC
// set, so it asks again over TCP, where it gets the whole answer.
func reply(w mdns.ResponseWriter, req, m *mdns.Msg) {
	m.Extra = dropOPT(m.Extra)
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(UpstreamUDPSize, opt.Do())
		size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), MaxUDPAnswer)
	} else if m.Rcode > 0xF {
		// An extended rcode (BADCOOKIE...) needs an OPT record to carry it.
		m.Rcode = mdns.RcodeServerFailure
	}
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func dropOPT(rrs []mdns.RR) []mdns.RR {
	out := rrs[:0:0]
	for _, r := range rrs {
		if r.Header().Rrtype != mdns.TypeOPT {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) ttl() uint32 {
	if s.TTL == 0 {
		return 60
	}
	return s.TTL
}

// local answers a name under the network's domain; unknown names are
// NXDOMAIN here, never forwarded (the domain is ours).
func (s *Server) local(req *mdns.Msg, name, zone string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	host := strings.TrimSuffix(strings.TrimSuffix(name, zone), ".")
	var a4, a6 netip.Addr
	var ok4, ok6 bool
	if s.Names != nil {
		a4, ok4 = s.Names.Lookup(host)
	}
	if s.Names6 != nil {
		a6, ok6 = s.Names6.Lookup(host)
	}
	if !ok4 && !ok6 || strings.Contains(host, ".") {
		m.SetRcode(req, mdns.RcodeNameError)
		return m
	}
	qt := req.Question[0].Qtype
	if ok4 && (qt == mdns.TypeA || qt == mdns.TypeANY) {
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: s.ttl()},
			A:   a4.AsSlice(),
		})
	}
	if ok6 && (qt == mdns.TypeAAAA || qt == mdns.TypeANY) {
		m.Answer = append(m.Answer, &mdns.AAAA{
			Hdr:  mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: s.ttl()},
			AAAA: a6.AsSlice(),
		})
	}
	return m // NOERROR with no answer for other types (NODATA)
}

func ptrAddr(name string) (netip.Addr, bool) {
	labels := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
	if len(labels) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(labels[3] + "." + labels[2] + "." + labels[1] + "." + labels[0])
	return a, err == nil
}

func (s *Server) inSubnet(name string) bool {
	a, ok := ptrAddr(name)
	return ok && s.Subnet.Contains(a)
}

// ptrAddr6 is the address of an ip6.arpa name: 32 nibble labels, least
// significant first (RFC 3596 §2.5).
func ptrAddr6(name string) (netip.Addr, bool) {
	labels := strings.Split(strings.TrimSuffix(name, ".ip6.arpa."), ".")
	if len(labels) != 32 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, l := range labels {
		if len(l) != 1 {
			return netip.Addr{}, false
		}
		v, ok := nibble(l[0])
		if !ok {
			return netip.Addr{}, false
		}
		pos := 31 - i // labels[0] is the last nibble
		if pos%2 == 0 {
			b[pos/2] |= v << 4
		} else {
			b[pos/2] |= v
		}
	}
	return netip.AddrFrom16(b), true
}

func nibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func (s *Server) inSubnet6(name string) bool {
	a, ok := ptrAddr6(name)
	return ok && s.Subnet6.IsValid() && s.Subnet6.Contains(a)
}

func (s *Server) reverse(req *mdns.Msg, name string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	var host string
	var ok bool
	if a, is4 := ptrAddr(name); is4 && s.Names != nil {
		host, ok = s.Names.Reverse(a)
	} else if a, is6 := ptrAddr6(name); is6 && s.Names6 != nil {
		host, ok = s.Names6.Reverse(a)
	}
	if !ok {
		m.SetRcode(req, mdns.RcodeNameError)
		return m
	}
	m.Answer = append(m.Answer, &mdns.PTR{
		Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: s.ttl()},
		Ptr: mdns.Fqdn(host + "." + s.Domain),
	})
	return m
}
