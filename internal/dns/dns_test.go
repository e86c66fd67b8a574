package dns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// upstream is a real DNS server on 127.0.0.1 (UDP and TCP on one random
// port) that answers like an authoritative server: over UDP it cuts its
// answer to the asker's size and sets TC. It records how it was asked.
type upstream struct {
	addr netip.AddrPort
	mu   sync.Mutex
	seen []string // "udp/1232", "tcp/1232": transport and EDNS size (0: none)
}

// txtNames are the upstream's names and the number of 250-byte TXT
// strings each holds.
var txtNames = map[string]int{"small.example.": 1, "mid.example.": 6, "big.example.": 9}

func startUpstream(t *testing.T) *upstream { return startUpstreamTCP(t, true) }

// startUpstreamTCP starts the upstream; without tcp its TCP port is closed.
func startUpstreamTCP(t *testing.T, tcp bool) *upstream {
	t.Helper()
	u := &upstream{}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		size := 0
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		u.mu.Lock()
		u.seen = append(u.seen, fmt.Sprintf("%s/%d", w.RemoteAddr().Network(), size))
		u.mu.Unlock()
		m := new(mdns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if n, ok := txtNames[strings.ToLower(q.Name)]; ok && q.Qtype == mdns.TypeTXT {
			for i := range n {
				m.Answer = append(m.Answer, &mdns.TXT{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 60},
					Txt: []string{fmt.Sprintf("%03d%s", i, strings.Repeat("x", 247))}})
			}
		} else if q.Name == "small.example." && q.Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
				A: net.IPv4(203, 0, 113, 80)})
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		if size > 0 {
			m.SetEdns0(uint16(size), false)
		}
		if w.RemoteAddr().Network() == "udp" {
			m.Truncate(max(size, mdns.MinMsgSize))
		}
		w.WriteMsg(m)
	})
	pc, ln := listenPair(t)
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if !tcp {
		ln.Close()
		udp := &mdns.Server{PacketConn: pc, Handler: h}
		started := make(chan struct{})
		udp.NotifyStartedFunc = func() { close(started) }
		go udp.ActivateAndServe()
		<-started
		t.Cleanup(func() { udp.Shutdown() })
		return u
	}
	serve(t, pc, ln, h)
	return u
}

func (u *upstream) asked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// listenPair opens UDP and TCP on the same random port of 127.0.0.1.
func listenPair(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	return nil, nil
}

func serve(t *testing.T, pc net.PacketConn, ln net.Listener, h mdns.Handler) {
	t.Helper()
	udp := &mdns.Server{PacketConn: pc, Handler: h, UDPSize: UpstreamUDPSize}
	tcp := &mdns.Server{Listener: ln, Handler: h}
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
}

// names is a network with one guest, vm1 at 10.99.0.10.
type names struct{}

func (names) Lookup(h string) (netip.Addr, bool) {
	return netip.MustParseAddr("10.99.0.10"), strings.EqualFold(h, "vm1")
}

func (names) Reverse(a netip.Addr) (string, bool) {
	return "vm1", a == netip.MustParseAddr("10.99.0.10")
}

func newServer(subnet string, u *upstream) *Server {
	return &Server{Domain: "lab.internal", Subnet: netip.MustParsePrefix(subnet), Upstream: []netip.AddrPort{u.addr},
		Names: names{}, Dial: net.Dial}
}

// writer is the ResponseWriter of a query from a chosen source: the
// handler sees that source without a socket (as coredhcp's handler tests).
type writer struct {
	remote net.Addr
	got    *mdns.Msg
}

func (w *writer) LocalAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 53} }
func (w *writer) RemoteAddr() net.Addr       { return w.remote }
func (w *writer) WriteMsg(m *mdns.Msg) error { w.got = m; return nil }
func (w *writer) Write([]byte) (int, error)  { return 0, fmt.Errorf("not used") }
func (w *writer) Close() error               { return nil }
func (w *writer) TsigStatus() error          { return nil }
func (w *writer) TsigTimersOnly(bool)        {}
func (w *writer) Hijack()                    {}

var _ mdns.ResponseWriter = (*writer)(nil)

func from(network, addr string) net.Addr {
	ap := netip.MustParseAddrPort(addr)
	if network == "tcp" {
		return net.TCPAddrFromAddrPort(ap)
	}
	return net.UDPAddrFromAddrPort(ap)
}

func query(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// TestRefusesOutsiders: a source outside the subnet (the internet routed
// in, a guest of another network) gets REFUSED and nothing else for a
// recursive query, a guest's name and its PTR; the upstream is never
// asked, and the answer is no larger than the query (no amplification).
func TestRefusesOutsiders(t *testing.T) {
	u := startUpstream(t)
	s := newServer("10.99.0.0/24", u)
	s.HostAddr = func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.1") } // not the sources below
	queries := []*mdns.Msg{query("big.example.", mdns.TypeTXT), query("small.example.", mdns.TypeA),
		query("vm1.lab.internal.", mdns.TypeA), query("10.0.99.10.in-addr.arpa.", mdns.TypePTR)}
	edns := query("big.example.", mdns.TypeTXT)
	edns.SetEdns0(4096, true)
	queries = append(queries, edns)
	for _, src := range []net.Addr{from("udp", "203.0.113.7:5353"), from("udp", "10.98.0.5:40000"),
		from("tcp", "198.51.100.126:40000"), from("udp", "[::ffff:203.0.113.7]:53")} {
		for _, q := range queries {
			w := &writer{remote: src}
			s.ServeDNS(w, q)
			what := fmt.Sprintf("%s from %s", q.Question[0].Name, src)
			if w.got == nil {
				t.Fatalf("%s: no answer written (want REFUSED)", what)
			}
			if w.got.Rcode != mdns.RcodeRefused || len(w.got.Answer)+len(w.got.Ns)+len(w.got.Extra) != 0 {
				t.Errorf("%s: got %s, want REFUSED with no records", what, w.got)
			}
			qb, _ := q.Pack()
			ab, err := w.got.Pack()
			if err != nil || len(ab) > len(qb) {
				t.Errorf("%s: answer %d bytes for a %d-byte query (err %v)", what, len(ab), len(qb), err)
			}
		}
	}
	if got := u.asked(); len(got) != 0 {
		t.Errorf("outsiders' queries reached the upstream: %v", got)
	}
}

// TestAnswersOwnGuests: the same queries from a guest's address are
// answered: its names locally, the rest from the upstream.
func TestAnswersOwnGuests(t *testing.T) {
	u := startUpstream(t)
	s := newServer("10.99.0.0/24", u)
	for _, network := range []string{"udp", "tcp"} {
		src := from(network, "10.99.0.50:40000")
		w := &writer{remote: src}
		s.ServeDNS(w, query("vm1.lab.internal.", mdns.TypeA))
		if w.got == nil || len(w.got.Answer) != 1 || w.got.Answer[0].(*mdns.A).A.String() != "10.99.0.10" {
			t.Errorf("vm1.lab.internal from a guest over %s: %v", network, w.got)
		}
		w = &writer{remote: src}
		s.ServeDNS(w, query("10.0.99.10.in-addr.arpa.", mdns.TypePTR))
		if w.got == nil || len(w.got.Answer) != 1 || w.got.Answer[0].(*mdns.PTR).Ptr != "vm1.lab.internal." {
			t.Errorf("PTR 10.99.0.10 from a guest over %s: %v", network, w.got)
		}
		w = &writer{remote: src}
		s.ServeDNS(w, query("small.example.", mdns.TypeA))
		if w.got == nil || len(w.got.Answer) != 1 || w.got.Answer[0].(*mdns.A).A.String() != "203.0.113.80" {
			t.Errorf("small.example from a guest over %s: %v", network, w.got)
		}
	}
	// The host itself: from the gateway address (in the subnet), loopback,
	// or another of its addresses (its query masqueraded on the way out lo).
	s.HostAddr = func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.1") }
	for _, src := range []string{"10.99.0.1:40000", "127.0.0.1:40000", "[::1]:40000", "198.51.100.1:40000"} {
		w := &writer{remote: from("udp", src)}
		s.ServeDNS(w, query("vm1.lab.internal.", mdns.TypeA))
		if w.got == nil || w.got.Rcode != mdns.RcodeSuccess || len(w.got.Answer) != 1 {
			t.Errorf("from the host at %s: %v", src, w.got)
		}
	}
}

// client runs a real guestnet DNS server on 127.0.0.1 (its subnet
// 127.0.0.0/8, so the test's client is a guest) forwarding to u.
func client(t *testing.T, u *upstream) string {
	s := newServer("127.0.0.0/8", u) // (loopback is answered anyway: it is the host)
	pc, ln := listenPair(t)
	serve(t, pc, ln, s)
	return pc.LocalAddr().String()
}

func ask(t *testing.T, server, network string, q *mdns.Msg) (*mdns.Msg, int) {
	t.Helper()
	c := &mdns.Client{Net: network, UDPSize: 65535} // read whatever comes: the size is checked below
	r, _, err := c.Exchange(q, server)
	if err != nil {
		t.Fatalf("%s over %s: %v", q.Question[0].Name, network, err)
	}
	b, _ := r.Pack()
	return r, len(b)
}

func txtCount(m *mdns.Msg) int {
	n := 0
	for _, rr := range m.Answer {
		if _, ok := rr.(*mdns.TXT); ok {
			n++
		}
	}
	return n
}

// TestLargeAnswerWithEDNS: a guest advertising 4,096 or more bytes gets
// answers of ~1,700 and ~2,500 bytes over UDP cut to MaxUDPAnswer with TC
// (never in IP fragments), and whole over TCP. The upstream was asked with
// EDNS0 at 1,232 bytes, answered truncated, and was asked again over TCP.
func TestLargeAnswerWithEDNS(t *testing.T) {
	u := startUpstream(t)
	addr := client(t, u)
	for _, name := range []string{"mid.example.", "big.example."} {
		q := query(name, mdns.TypeTXT)
		q.SetEdns0(4096, false)
		before := len(u.asked())
		r, size := ask(t, addr, "udp", q)
		if !r.Truncated || txtCount(r) >= txtNames[name] || size > MaxUDPAnswer {
			t.Errorf("%s with EDNS 4096 over UDP: TC=%v, %d of %d records, %d bytes; want TC, at most %d bytes",
				name, r.Truncated, txtCount(r), txtNames[name], size, MaxUDPAnswer)
		}
		if r.IsEdns0() == nil {
			t.Errorf("%s: an EDNS query got an answer without OPT", name)
		}
		asked := u.asked()[before:]
		if strings.Join(asked, " ") != "udp/1232 tcp/1232" {
			t.Errorf("%s: upstream asked %v, want udp/1232 then tcp/1232 (TC fallback)", name, asked)
		}
		udpSize := size
		r, size = ask(t, addr, "tcp", q)
		if r.Truncated || txtCount(r) != txtNames[name] || size <= MaxUDPAnswer {
			t.Errorf("%s with EDNS 4096 over TCP: TC=%v, %d of %d records, %d bytes", name, r.Truncated, txtCount(r), txtNames[name], size)
		}
		t.Logf("%s with EDNS 4096: UDP %d bytes TC; TCP %d bytes, %d TXT records; upstream asked %v", name, udpSize, size, txtCount(r), asked)
	}
	// A small answer needs no TCP.
	before := len(u.asked())
	r, _ := ask(t, addr, "udp", query("small.example.", mdns.TypeA))
	if len(r.Answer) != 1 || strings.Join(u.asked()[before:], " ") != "udp/1232" {
		t.Errorf("small.example: %v; upstream asked %v", r, u.asked()[before:])
	}
}

// TestTruncatesToGuestLimit: an answer larger than the guest's limit (512
// bytes without EDNS, or its EDNS size up to MaxUDPAnswer) comes back over UDP cut to that
// limit with TC set, without an OPT record when the guest sent none; the
// same query over TCP gets the whole answer.
func TestTruncatesToGuestLimit(t *testing.T) {
	u := startUpstream(t)
	addr := client(t, u)
	for _, c := range []struct {
		name  string
		edns  uint16 // 0: no EDNS
		limit int
	}{{"mid.example.", 0, 512}, {"big.example.", 0, 512}, {"big.example.", 1232, 1232},
		{"big.example.", 1000, 1000}, {"mid.example.", 4096, MaxUDPAnswer}, {"big.example.", 8192, MaxUDPAnswer},
		{"big.example.", 65000, MaxUDPAnswer}} {
		q := query(c.name, mdns.TypeTXT)
		if c.edns > 0 {
			q.SetEdns0(c.edns, false)
		}
		r, size := ask(t, addr, "udp", q)
		// Cut close to the limit: whole records up to it, never far below
		// (a guest advertising 65,000 once got 1,097 bytes).
		if !r.Truncated || size > c.limit || size < c.limit-300 || txtCount(r) >= txtNames[c.name] {
			t.Errorf("%s, EDNS %d, over UDP: TC=%v, %d bytes (limit %d), %d of %d records", c.name, c.edns, r.Truncated, size, c.limit, txtCount(r), txtNames[c.name])
		}
		if (r.IsEdns0() != nil) != (c.edns > 0) {
			t.Errorf("%s, EDNS %d: OPT in the answer is %v", c.name, c.edns, r.IsEdns0())
		}
		udpSize := size
		r, size = ask(t, addr, "tcp", q)
		if r.Truncated || txtCount(r) != txtNames[c.name] {
			t.Errorf("%s, EDNS %d, over TCP: TC=%v, %d of %d records", c.name, c.edns, r.Truncated, txtCount(r), txtNames[c.name])
		}
		t.Logf("%s, EDNS %d: UDP %d bytes TC; TCP %d bytes, %d records", c.name, c.edns, udpSize, size, txtCount(r))
	}
}

// TestTruncatedWhenUpstreamHasNoTCP: when the upstream's UDP answer is
// truncated and its TCP is closed, the guest gets that truncated answer
// with TC (as the upstream gave it), not SERVFAIL.
func TestTruncatedWhenUpstreamHasNoTCP(t *testing.T) {
	u := startUpstreamTCP(t, false)
	addr := client(t, u)
	q := query("big.example.", mdns.TypeTXT)
	q.SetEdns0(4096, false)
	r, size := ask(t, addr, "udp", q)
	if r.Rcode != mdns.RcodeSuccess || !r.Truncated || size > UpstreamUDPSize || txtCount(r) == 0 {
		t.Errorf("rcode %s, TC=%v, %d bytes, %d records; want the upstream's truncated answer",
			mdns.RcodeToString[r.Rcode], r.Truncated, size, txtCount(r))
	}
	if got := strings.Join(u.asked(), " "); got != "udp/1232" {
		t.Errorf("upstream asked %s, want udp/1232 (its TCP port is closed)", got)
	}
}
