package dns

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Group serves the name services of many networks, each on its own
// sockets (UDP and TCP on its gateway address), with one miekg/dns server
// for UDP and one for TCP: a datagram or connection from any socket goes
// to that socket's handler, and its answer leaves from the same socket.
//
// One goroutine waits on every socket (poller), and a read buffer is
// taken only once a datagram is there: a network costs its two sockets
// and no goroutine. One miekg/dns server per socket would cost two
// goroutines with their own buffers, pools and 2-second read deadlines
// per network. The sockets stay per address: a wildcard socket on port 53
// could collide with a resolver of the host (systemd-resolved on
// 127.0.0.53).
type Group struct {
	poll   *poller
	udp    *udpFan
	tcp    *tcpFan
	su, st *mdns.Server
}

// NewGroup starts the group's two servers; udpSize is the largest query
// read over UDP.
func NewGroup(udpSize int) (*Group, error) {
	p, err := newPoller()
	if err != nil {
		return nil, err
	}
	g := &Group{poll: p, udp: newUDPFan(udpSize), tcp: newTCPFan()}
	g.su = &mdns.Server{PacketConn: g.udp, Handler: mdns.HandlerFunc(route), UDPSize: udpSize}
	g.st = &mdns.Server{Listener: g.tcp, Handler: mdns.HandlerFunc(route)}
	go g.su.ActivateAndServe()
	go g.st.ActivateAndServe()
	return g, nil
}

// Add serves h on pc (a UDP socket) and ln (a TCP listener) until the
// returned stop, which closes both.
func (g *Group) Add(pc net.PacketConn, ln net.Listener, h mdns.Handler) (stop func(), err error) {
	u, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("dns: a UDP socket is needed, not %T", pc)
	}
	t, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("dns: a TCP listener is needed, not %T", ln)
	}
	us := &udpSock{c: u, h: h}
	ufd, err := g.poll.add(u, func(fd int) { g.udp.read(fd, us) })
	if err != nil {
		return nil, err
	}
	tl := &atTCP{Addr: t.Addr(), h: h}
	tfd, err := g.poll.add(t, func(fd int) { g.tcp.accept(fd, tl) })
	if err != nil {
		g.poll.remove(ufd)
		return nil, err
	}
	return func() {
		g.poll.remove(ufd)
		g.poll.remove(tfd)
		u.Close()
		t.Close()
	}, nil
}

// Close stops both servers and the poller; the sockets added are closed
// by their stop.
func (g *Group) Close() {
	g.poll.close()
	g.udp.Close()
	g.tcp.Close()
}

// route hands a query to the handler of the socket it came in on. The
// handler sees the client's own address (RemoteAddr), as with a server
// of its own.
func route(w mdns.ResponseWriter, req *mdns.Msg) {
	if a, ok := w.RemoteAddr().(*fromUDP); ok {
		a.sock.h.ServeDNS(clientWriter{w, a.UDPAddr}, req)
		return
	}
	if l, ok := w.LocalAddr().(*atTCP); ok {
		l.h.ServeDNS(clientWriter{w, w.RemoteAddr()}, req)
		return
	}
	w.Close() // not from a socket of the group: cannot happen
}

// clientWriter is a ResponseWriter whose RemoteAddr is the client's own.
type clientWriter struct {
	mdns.ResponseWriter
	remote net.Addr
}

func (w clientWriter) RemoteAddr() net.Addr { return w.remote }

// fromUDP is a datagram's source and the socket it came in on.
type fromUDP struct {
	*net.UDPAddr
	sock *udpSock
}

// udpSock is one UDP socket of a Group.
type udpSock struct {
	c *net.UDPConn
	h mdns.Handler
}

type datagram struct {
	b    []byte
	from *fromUDP
}

// queued bounds the datagrams and connections read but not yet taken by
// miekg/dns's servers; beyond it they are dropped, as a full socket
// buffer would.
const queued = 256

// udpFan is one net.PacketConn over many UDP sockets: what miekg/dns's
// server reads comes from any of them, and what it writes goes out of the
// socket its query came in on.
type udpFan struct {
	bufs sync.Pool
	in   chan datagram
	wake chan struct{} // a read deadline in the past (miekg's Shutdown)
	done chan struct{}
	once sync.Once
}

func newUDPFan(size int) *udpFan {
	f := &udpFan{in: make(chan datagram, queued), wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.bufs.New = func() any { return make([]byte, size) }
	return f
}

// read takes every datagram waiting on socket fd (on the poller's
// goroutine: it never blocks).
func (f *udpFan) read(fd int, s *udpSock) {
	for {
		b := f.bufs.Get().([]byte)
		n, sa, err := unix.Recvfrom(fd, b, unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			f.bufs.Put(b)
			continue
		}
		if err != nil {
			f.bufs.Put(b)
			return // EAGAIN: all read (or an error the next datagram may not have)
		}
		var from *net.UDPAddr
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			from = &net.UDPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
		case *unix.SockaddrInet6:
			from = &net.UDPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
			if sa.ZoneId != 0 {
				from.Zone = strconv.Itoa(int(sa.ZoneId)) // a link-local source
			}
		default:
			f.bufs.Put(b)
			continue // no address: dropped
		}
		d := datagram{b[:n], &fromUDP{from, s}}
		select {
		case f.in <- d:
		default:
			f.bufs.Put(b) // the server is behind: dropped
		}
	}
}

func (f *udpFan) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-f.in:
		n := copy(b, d.b)
		f.bufs.Put(d.b[:cap(d.b)])
		return n, d.from, nil
	case <-f.wake:
		return 0, nil, os.ErrDeadlineExceeded
	case <-f.done:
		return 0, nil, net.ErrClosed
	}
}

func (f *udpFan) WriteTo(b []byte, to net.Addr) (int, error) {
	a, ok := to.(*fromUDP)
	if !ok {
		return 0, fmt.Errorf("dns: answer to %v, not a client of the group", to)
	}
	return a.sock.c.WriteTo(b, a.UDPAddr)
}

func (f *udpFan) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

// LocalAddr is none in particular: each socket has its own.
func (f *udpFan) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4zero} }

func (f *udpFan) SetDeadline(t time.Time) error { return f.SetReadDeadline(t) }

// SetReadDeadline wakes a waiting read for a time in the past (how
// miekg/dns's Shutdown ends its read loop); the 2-second deadline it sets
// before each read is not kept: a fan waits for the next datagram as long
// as it takes.
func (f *udpFan) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && time.Until(t) <= 0 {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (f *udpFan) SetWriteDeadline(time.Time) error { return nil }

// atTCP is a listener's address and handler: the LocalAddr of the
// connections it accepted.
type atTCP struct {
	net.Addr
	h mdns.Handler
	// open counts the listener's connections not yet closed
	// (MaxTCPClients).
	open atomic.Int32
}

// MaxTCPClients bounds a network's open TCP connections to its DNS; a
// connection beyond it is closed as soon as accepted. miekg/dns keeps a
// client that asks at least every 8 seconds for up to 128 queries, each
// connection holding a file descriptor: unbounded, one guest holding
// 22,000 connections took all 20,000 of the daemon's descriptors, and
// every other network's TCP clients, forwarded queries and ARP probes
// failed with it (e2e TestDNSTCPHoldDoesNotStarveOtherNetwork). Guests
// use TCP for the rare truncated answer; dnsmasq serves 20 TCP clients
// at once.
const MaxTCPClients = 128

type tcpConn struct {
	net.Conn
	local *atTCP
	once  sync.Once
}

func (c *tcpConn) LocalAddr() net.Addr { return c.local }

// Close closes the connection and gives its place back, once.
func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.local.open.Add(-1) })
	return err
}

// tcpFan is one net.Listener over many: miekg/dns's server accepts the
// connections of all of them.
type tcpFan struct {
	in   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newTCPFan() *tcpFan {
	return &tcpFan{in: make(chan net.Conn, queued), done: make(chan struct{})}
}

// accept takes every connection waiting on listener fd (on the poller's
// goroutine: it never blocks).
// acceptBackoff is the pause after accept fails for want of resources.
const acceptBackoff = 20 * time.Millisecond

func (f *tcpFan) accept(fd int, l *atTCP) {
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM {
			// Out of descriptors or memory: the connection stays queued and
			// the listener readable, so the poller would call again at once
			// and spin. Wait a little, as net/http's Serve does.
			time.Sleep(acceptBackoff)
			return
		}
		if err != nil {
			return // EAGAIN: all taken
		}
		if l.open.Add(1) > MaxTCPClients {
			l.open.Add(-1)
			unix.Close(nfd) // this network has its share open already
			continue
		}
		file := os.NewFile(uintptr(nfd), "dns-tcp")
		c, err := net.FileConn(file) // a dup, in Go's poller
		file.Close()
		if err != nil {
			l.open.Add(-1)
			continue
		}
		tc := &tcpConn{Conn: c, local: l}
		select {
		case f.in <- tc:
		default:
			tc.Close() // the server is behind: refused
		}
	}
}

func (f *tcpFan) Accept() (net.Conn, error) {
	select {
	case c := <-f.in:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

func (f *tcpFan) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *tcpFan) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }
