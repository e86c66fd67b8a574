package dhcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// FrameSender sends IPv4 packets in Ethernet frames to a MAC out of an
// interface, past the routing table and ARP. An OFFER or ACK goes to the
// address the client is given (yiaddr), which it does not hold yet: no
// ARP could find it, so the frame is addressed to its chaddr (RFC 2131
// 4.1), as Kea and dnsmasq do. One copy reaches one bridge port, where a
// broadcast reply is copied to every port of the bridge.
type FrameSender interface {
	// SendIPv4 sends pkt, an IPv4 packet, to dst out of interface
	// ifindex, from that interface's MAC.
	SendIPv4(pkt []byte, ifindex int, dst net.HardwareAddr) error
	Close() error
}

// packetSender is one AF_PACKET socket (SOCK_DGRAM: the kernel writes the
// Ethernet header, from the interface's own MAC) that serves every
// bridge: each send names its interface in its sockaddr_ll, so a host
// with 1,000 networks holds one such socket, not one per bridge. It is
// opened with protocol 0, so the kernel delivers no frame to it: it only
// sends. mdlayher/socket puts it on Go's poller (a full send buffer parks
// the goroutine, not a thread); mdlayher/packet would bind it to one
// interface.
type packetSender struct{ c *socket.Conn }

// OpenFrameSender opens the sender in the calling thread's network
// namespace (call it inside netns.NS.Do). It needs CAP_NET_RAW.
func OpenFrameSender() (FrameSender, error) {
	c, err := socket.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0, "dhcp-frames", nil)
	if err != nil {
		return nil, fmt.Errorf("open the socket for DHCP replies to a MAC (AF_PACKET, needs CAP_NET_RAW): %w", err)
	}
	return packetSender{c}, nil
}

func (p packetSender) SendIPv4(pkt []byte, ifindex int, dst net.HardwareAddr) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex, Halen: uint8(len(dst))}
	copy(sa.Addr[:], dst)
	return p.c.Sendto(context.Background(), pkt, 0, sa)
}

func (p packetSender) Close() error { return p.c.Close() }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
)

// udpIPv4 wraps payload in a UDP datagram from src:sport to dst:dport and
// an IPv4 header (TTL 64, don't fragment, ID 0 as RFC 6864 allows for
// such a datagram), both checksums filled: clients that read replies from
// raw sockets (udhcpc, dhclient) check them.
func udpIPv4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, ipv4HeaderLen+udpHeaderLen+len(payload))
	ip := b[:ipv4HeaderLen]
	ip[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(ip, 0)))

	udp := b[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], dport)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	// The pseudo-header: addresses, protocol, UDP length.
	pseudo := sum(ip[12:20], uint32(unix.IPPROTO_UDP)+uint32(len(udp)))
	c := ^fold(sum(udp, pseudo))
	if c == 0 {
		c = 0xffff // 0 would mean "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
	return b
}

// sum adds b as big-endian 16-bit words (an odd last byte padded with
// zero) to s: the Internet checksum's sum (RFC 1071), unfolded.
func sum(b []byte, s uint32) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// fold folds the carries of s back into 16 bits.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
