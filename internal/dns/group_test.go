package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// named answers every query with one TXT record, its name and the
// client's address as the handler saw it.
type named string

func (n named) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	m := new(mdns.Msg).SetReply(req)
	m.Answer = []mdns.RR{&mdns.TXT{Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET},
		Txt: []string{string(n), w.RemoteAddr().Network(), w.RemoteAddr().String()}}}
	w.WriteMsg(m)
}

func listenLoop(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pc, ln
}

// askTXT sends one query over network to addr and returns the TXT answer.
func askTXT(t *testing.T, network, addr string) ([]string, net.Addr, error) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	cl := &mdns.Client{Net: network, Timeout: 10 * time.Second} // a lost answer fails, never hangs
	q := new(mdns.Msg).SetQuestion("who.", mdns.TypeTXT)
	r, _, err := cl.ExchangeWithConn(q, &mdns.Conn{Conn: c})
	if err != nil {
		return nil, c.LocalAddr(), err
	}
	if len(r.Answer) != 1 {
		t.Fatalf("%s %s: %v", network, addr, r)
	}
	return r.Answer[0].(*mdns.TXT).Txt, c.LocalAddr(), nil
}

// TestGroup: one Group serves two networks' sockets; each query is
// answered by the handler of the socket it came to, over UDP and TCP,
// which sees the client's own address; a network removed is no longer
// answered, the other still is.
func TestGroup(t *testing.T) {
	g, err := NewGroup(UpstreamUDPSize)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pcA, lnA := listenLoop(t)
	pcB, lnB := listenLoop(t)
	stopA, err := g.Add(pcA, lnA, named("a"))
	if err != nil {
		t.Fatal(err)
	}
	stopB, err := g.Add(pcB, lnB, named("b"))
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	for _, c := range []struct{ name, network, addr string }{
		{"a", "udp", pcA.LocalAddr().String()}, {"b", "udp", pcB.LocalAddr().String()},
		{"a", "tcp", lnA.Addr().String()}, {"b", "tcp", lnB.Addr().String()},
	} {
		txt, client, err := askTXT(t, c.network, c.addr)
		if err != nil {
			t.Fatalf("%s to %s: %v", c.network, c.addr, err)
		}
		if want := []string{c.name, c.network, client.String()}; len(txt) != 3 || txt[0] != want[0] || txt[1] != want[1] || txt[2] != want[2] {
			t.Errorf("%s to %s (%s's socket): answered %q, want %q", c.network, c.addr, c.name, txt, want)
		}
	}
	stopA()
	if _, _, err := askTXT(t, "tcp", lnA.Addr().String()); err == nil {
		t.Error("a's TCP listener still answers after its stop")
	}
	if _, _, err := askTXT(t, "udp", pcA.LocalAddr().String()); err == nil {
		t.Error("a's UDP socket still answers after its stop")
	}
	if txt, _, err := askTXT(t, "udp", pcB.LocalAddr().String()); err != nil || txt[0] != "b" {
		t.Errorf("b after a's stop: %q %v", txt, err)
	}
}

// TestGroupServer: a network's Server behind a Group answers its guests'
// names over UDP and TCP, as it does with servers of its own.
func TestGroupServer(t *testing.T) {
	g, err := NewGroup(UpstreamUDPSize)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pc, ln := listenLoop(t)
	stop, err := g.Add(pc, ln, &Server{Domain: "lab.internal", Subnet: netip.MustParsePrefix("10.99.0.0/24"), Names: names{}})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, c := range []struct{ network, addr string }{{"udp", pc.LocalAddr().String()}, {"tcp", ln.Addr().String()}} {
		cl := &mdns.Client{Net: c.network, Timeout: 10 * time.Second}
		r, _, err := cl.Exchange(new(mdns.Msg).SetQuestion("vm1.lab.internal.", mdns.TypeA), c.addr)
		if err != nil {
			t.Fatalf("%s: %v", c.network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.99.0.10" {
			t.Errorf("vm1.lab.internal over %s: %v", c.network, r.Answer)
		}
	}
}
