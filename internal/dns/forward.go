package dns

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// forward asks each upstream in turn; SERVFAIL when none answers. The
// answer goes back to the guest whole (reply cuts it to the guest's size).
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	q := upstreamQuery(req)
	for _, u := range s.Upstream {
		resp, err := s.ask(q, u)
		if err != nil {
			continue
		}
		resp.Id = req.Id
		return resp
	}
	return rcode(req, mdns.RcodeServerFailure)
}

// upstreamQuery is the guest's question as guestnet asks it: a fresh ID
// (the guest's is not ours to reuse upstream), and our own OPT record
// advertising UpstreamUDPSize, keeping only the guest's DO bit (its other
// EDNS options were for our hop).
func upstreamQuery(req *mdns.Msg) *mdns.Msg {
	q := req.Copy()
	q.Id = mdns.Id()
	q.Extra = nil
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(UpstreamUDPSize, do)
	return q
}

// ask sends q to one upstream over UDP and, when the answer comes back
// truncated, again over TCP. If TCP fails, the truncated answer is passed
// on (TC set), as the upstream gave it.
func (s *Server) ask(q *mdns.Msg, up netip.AddrPort) (*mdns.Msg, error) {
	resp, err := s.exchange("udp", q, up)
	if err != nil || !resp.Truncated {
		return resp, err
	}
	if whole, err := s.exchange("tcp", q, up); err == nil {
		return whole, nil
	}
	return resp, nil
}

// exchange is one query and answer over a socket from s.Dial (opened in
// the served namespace), run by miekg/dns's Client.
func (s *Server) exchange(network string, q *mdns.Msg, up netip.AddrPort) (*mdns.Msg, error) {
	c, err := s.Dial(network, up.String())
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s/%s: %w", up, network, err)
	}
	defer c.Close()
	cl := &mdns.Client{Net: network, UDPSize: UpstreamUDPSize, Timeout: s.timeout()}
	resp, _, err := cl.ExchangeWithConn(q, &mdns.Conn{Conn: c})
	if err != nil {
		return nil, fmt.Errorf("ask upstream %s/%s: %w", up, network, err)
	}
	if !sameQuestion(q, resp) {
		return nil, fmt.Errorf("ask upstream %s/%s: the answer is for another question", up, network)
	}
	return resp, nil
}

func sameQuestion(q, r *mdns.Msg) bool {
	if len(r.Question) != 1 {
		return false
	}
	a, b := q.Question[0], r.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func (s *Server) timeout() time.Duration {
	if s.Timeout == 0 {
		return DefaultTimeout
	}
	return s.Timeout
}
