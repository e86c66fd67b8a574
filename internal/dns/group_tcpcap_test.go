package dns

import (
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// askOn sends one query on an open TCP connection and reads the answer.
func askOn(c net.Conn) error {
	cl := &mdns.Client{Net: "tcp", Timeout: 10 * time.Second} // a lost answer fails, never hangs
	_, _, err := cl.ExchangeWithConn(new(mdns.Msg).SetQuestion("who.", mdns.TypeTXT), &mdns.Conn{Conn: c})
	return err
}

// TestGroupTCPClientsBounded: a network with MaxTCPClients connections
// open has the next one closed unanswered; another network's TCP is still
// answered; once one of the first closes, a new client is answered.
func TestGroupTCPClientsBounded(t *testing.T) {
	g, err := NewGroup(UpstreamUDPSize)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pcA, lnA := listenLoop(t)
	pcB, lnB := listenLoop(t)
	for _, s := range []struct {
		pc net.PacketConn
		ln net.Listener
		n  string
	}{{pcA, lnA, "a"}, {pcB, lnB, "b"}} {
		stop, err := g.Add(s.pc, s.ln, named(s.n))
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range MaxTCPClients {
		c, err := net.Dial("tcp", lnA.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := askOn(c); err != nil { // answered: accepted and open
			t.Fatalf("client %d of a: %v", i, err)
		}
	}
	c, err := net.Dial("tcp", lnA.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := askOn(c); err == nil {
		t.Errorf("client %d of a answered: want it closed", MaxTCPClients+1)
	}
	if txt, _, err := askTXT(t, "tcp", lnB.Addr().String()); err != nil || txt[0] != "b" {
		t.Errorf("b over TCP while a is full: %q %v", txt, err)
	}
	held[0].Close()
	// The server sees the close at its next read of that connection: ask
	// until a new client is let in (each try either fails at once or is
	// answered).
	for try := 0; ; try++ {
		c, err := net.Dial("tcp", lnA.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		err = askOn(c)
		c.Close()
		if err == nil {
			break
		}
		if try == 1000 {
			t.Fatalf("no client of a answered after one of %d closed: %v", MaxTCPClients, err)
		}
		time.Sleep(time.Millisecond)
	}
}
