package main

import (
	"encoding/binary"
	"errors"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

// Frames are built and read by hand: a client of this generator sends from
// its own MAC (chaddr) on its own port, which no socket of the kernel's UDP
// stack can do for thousands of MACs at once.

const (
	ethLen = 14
	ipLen  = 20
	udpLen = 8
	hdrLen = ethLen + ipLen + udpLen
	// chaddrAt is where a BOOTP message's client hardware address starts.
	chaddrAt = 28
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// clientMAC is the MAC of client i on port p: locally administered, with
// the port in bytes 1-2 so that a port's socket can keep its own clients'
// replies by a filter on chaddr (portFilter).
func clientMAC(p, i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, byte(p >> 8), byte(p), byte(i >> 16), byte(i >> 8), byte(i)}
}

// portOf is the port a client MAC of clientMAC names.
func portOf(mac net.HardwareAddr) int { return int(mac[1])<<8 | int(mac[2]) }

// frame wraps a client's DHCP message in UDP 68->67, IPv4 0.0.0.0 ->
// 255.255.255.255 and Ethernet from its MAC to broadcast, as a client
// without an address sends it (RFC 2131 4.1).
func frame(src net.HardwareAddr, msg []byte) []byte {
	b := make([]byte, hdrLen+len(msg))
	copy(b[0:6], broadcastMAC)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45 // version 4, 20-byte header
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+udpLen+len(msg)))
	ip[8] = 64 // TTL
	ip[9] = 17 // UDP
	copy(ip[12:16], net.IPv4zero.To4())
	copy(ip[16:20], net.IPv4bcast.To4())
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	udp := b[ethLen+ipLen : hdrLen]
	binary.BigEndian.PutUint16(udp[0:2], dhcpv4.ClientPort)
	binary.BigEndian.PutUint16(udp[2:4], dhcpv4.ServerPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen+len(msg)))
	// UDP checksum 0: none (allowed over IPv4).
	copy(b[hdrLen:], msg)
	return b
}

// checksum is the Internet checksum (RFC 1071) of an IPv4 header whose
// checksum field is zero.
func checksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

var errNotDHCP = errors.New("not a DHCP reply in IPv4/UDP to port 68")

// reply reads a server's reply out of an Ethernet frame.
func reply(b []byte) (*dhcpv4.DHCPv4, error) {
	if len(b) < hdrLen || binary.BigEndian.Uint16(b[12:14]) != 0x0800 || b[ethLen]>>4 != 4 || b[ethLen+9] != 17 {
		return nil, errNotDHCP
	}
	ihl := int(b[ethLen]&0x0f) * 4
	u := ethLen + ihl
	if len(b) < u+udpLen || binary.BigEndian.Uint16(b[u+2:u+4]) != dhcpv4.ClientPort {
		return nil, errNotDHCP
	}
	return dhcpv4.FromBytes(b[u+udpLen:])
}

// portFilter keeps, on port p's socket, the DHCP replies to p's own
// clients: a server that broadcasts its replies (guestnet does) floods
// every port, and without the filter each of 256 sockets would wake for
// every reply. It assumes a 20-byte IPv4 header, as both servers send.
func portFilter(p int) ([]bpf.RawInstruction, error) {
	const macHi = hdrLen + chaddrAt + 1
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 8},
		bpf.LoadAbsolute{Off: ethLen, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x45, SkipTrue: 6},
		bpf.LoadAbsolute{Off: ethLen + 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: 4},
		bpf.LoadAbsolute{Off: ethLen + ipLen + 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv4.ClientPort, SkipTrue: 2},
		bpf.LoadAbsolute{Off: macHi, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p), SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 0xffff},
	})
}
