package main

import (
	"encoding/binary"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

// TestFrame: a DISCOVER wrapped by frame is a valid broadcast from the
// client's MAC (the IPv4 header checksum verifies), and reads back.
func TestFrame(t *testing.T) {
	mac := clientMAC(300, 70000)
	if portOf(mac) != 300 {
		t.Fatalf("portOf(%s) = %d, want 300", mac, portOf(mac))
	}
	d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithTransactionID(dhcpv4.TransactionID{0, 1, 2, 3}))
	if err != nil {
		t.Fatal(err)
	}
	b := frame(mac, d.ToBytes())
	if got := checksum(b[ethLen : ethLen+ipLen]); got != 0 {
		t.Errorf("IPv4 header checksum does not verify: %#04x", got)
	}
	if dst := binary.BigEndian.Uint16(b[ethLen+ipLen+2:]); dst != dhcpv4.ServerPort {
		t.Errorf("UDP destination port %d, want 67", dst)
	}
	// The same bytes with the ports swapped are what a server's reply
	// looks like to reply().
	binary.BigEndian.PutUint16(b[ethLen+ipLen+2:], dhcpv4.ClientPort)
	m, err := reply(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.TransactionID != d.TransactionID || m.ClientHWAddr.String() != mac.String() {
		t.Errorf("read back xid %v chaddr %s, want %v %s", m.TransactionID, m.ClientHWAddr, d.TransactionID, mac)
	}
}

// TestPortFilter: port p's socket keeps replies to its own clients and
// drops those to another port's clients and anything not to UDP port 68.
func TestPortFilter(t *testing.T) {
	prog, err := portFilter(7)
	if err != nil {
		t.Fatal(err)
	}
	ins := make([]bpf.Instruction, len(prog))
	for i, r := range prog {
		ins[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	replyTo := func(mac []byte, port uint16) []byte {
		d, err := dhcpv4.NewDiscovery(mac)
		if err != nil {
			t.Fatal(err)
		}
		b := frame(mac, d.ToBytes())
		binary.BigEndian.PutUint16(b[ethLen+ipLen+2:], port)
		return b
	}
	for _, c := range []struct {
		name  string
		frame []byte
		keep  bool
	}{
		{"reply to a client of port 7", replyTo(clientMAC(7, 5), dhcpv4.ClientPort), true},
		{"reply to a client of port 8", replyTo(clientMAC(8, 5), dhcpv4.ClientPort), false},
		{"reply to a client of port 263 (7+256)", replyTo(clientMAC(263, 5), dhcpv4.ClientPort), false},
		{"a client's request (to port 67)", replyTo(clientMAC(7, 5), dhcpv4.ServerPort), false},
	} {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (n > 0) != c.keep {
			t.Errorf("%s: filter returned %d, keep = %v", c.name, n, c.keep)
		}
	}
}
