// Package dns answers guests' names on a network: NAME.DOMAIN from static
// hosts and DHCP leases (and the reverse), everything else forwarded to the
// configured upstream servers. Wire format and serving: github.com/miekg/dns.
package dns

import (
	"net"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Names is where the server looks guests up.
type Names interface {
	Lookup(host string) (netip.Addr, bool) // host is the label under the domain
	Reverse(a netip.Addr) (string, bool)   // the host label of an address
}

// Server answers one network's queries.
type Server struct {
	Domain   string // without the trailing dot
	Subnet   netip.Prefix
	Upstream []netip.Addr
	Names    Names
	TTL      uint32
	// Dial opens the socket to an upstream; the daemon makes it inside the
	// network's namespace, so forwarded queries leave from there.
	Dial func(network, addr string) (net.Conn, error)
}

// ServeDNS implements mdns.Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if len(req.Question) != 1 {
		refuse(w, req, mdns.RcodeFormatError)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	zone := mdns.Fqdn(strings.ToLower(s.Domain))
	switch {
	case mdns.IsSubDomain(zone, name):
		w.WriteMsg(s.local(req, name, zone))
	case strings.HasSuffix(name, ".in-addr.arpa.") && s.inSubnet(name):
		w.WriteMsg(s.reverse(req, name))
	default:
		w.WriteMsg(s.forward(req))
	}
}

func refuse(w mdns.ResponseWriter, req *mdns.Msg, code int) {
	m := new(mdns.Msg)
	m.SetRcode(req, code)
	w.WriteMsg(m)
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
	m.Authoritative = true
	host := strings.TrimSuffix(strings.TrimSuffix(name, zone), ".")
	a, ok := s.Names.Lookup(host)
	if !ok || strings.Contains(host, ".") {
		m.SetRcode(req, mdns.RcodeNameError)
		return m
	}
	if req.Question[0].Qtype == mdns.TypeA || req.Question[0].Qtype == mdns.TypeANY {
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: s.ttl()},
			A:   a.AsSlice(),
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

func (s *Server) reverse(req *mdns.Msg, name string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	a, _ := ptrAddr(name)
	host, ok := s.Names.Reverse(a)
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

// forward asks each upstream in turn; SERVFAIL when none answers.
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	for _, u := range s.Upstream {
		if resp, err := s.exchange(req, netip.AddrPortFrom(u, 53).String()); err == nil {
			return resp
		}
	}
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	return m
}

func (s *Server) exchange(req *mdns.Msg, addr string) (*mdns.Msg, error) {
	c, err := s.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	co := &mdns.Conn{Conn: c}
	if err := co.WriteMsg(req); err != nil {
		return nil, err
	}
	resp, err := co.ReadMsg()
	if err == nil && resp.Id != req.Id {
		err = mdns.ErrId
	}
	return resp, err
}
