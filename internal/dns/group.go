package dns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Group serves the name services of many networks, each on its own
// sockets (UDP and TCP on its gateway address), with one miekg/dns server
// for UDP and one for TCP: a datagram or connection from any socket goes
// to that socket's handler, and its answer leaves from the same socket.
//
// Each socket keeps only a small goroutine waiting on it (2 KiB of stack,
// and no read buffer until a datagram is there); one miekg/dns server per
// socket would cost two goroutines with their own buffers, pools and
// 2-second read deadlines per network. The sockets stay per address: a
// wildcard socket on port 53 could collide with a resolver of the host
// (systemd-resolved on 127.0.0.53).
type Group struct {
	udp    *udpFan
	tcp    *tcpFan
	su, st *mdns.Server
}

// NewGroup starts the group's two servers; UDPSize is the largest query
// read over UDP.
func NewGroup(udpSize int) *Group {
	g := &Group{udp: newUDPFan(udpSize), tcp: newTCPFan()}
	g.su = &mdns.Server{PacketConn: g.udp, Handler: mdns.HandlerFunc(route), UDPSize: udpSize}
	g.st = &mdns.Server{Listener: g.tcp, Handler: mdns.HandlerFunc(route)}
	go g.su.ActivateAndServe()
	go g.st.ActivateAndServe()
	return g
}

// Add serves h on pc (a UDP socket) and ln (a TCP listener) until the
// returned stop, which closes both.
func (g *Group) Add(pc net.PacketConn, ln net.Listener, h mdns.Handler) (stop func(), err error) {
	u, err := g.udp.add(pc, h)
	if err != nil {
		return nil, err
	}
	t := g.tcp.add(ln, h)
	return func() { u.close(); t.close() }, nil
}

// Close stops both servers; the sockets added are closed by their stop.
func (g *Group) Close() {
	g.udp.Close()
	g.tcp.Close()
}

// route hands a query to the handler of the socket it came in on. The
// handler sees the client's own address (RemoteAddr), as with a server
// of its own.
func route(w mdns.ResponseWriter, req *mdns.Msg) {
	switch a := w.RemoteAddr().(type) {
	case *fromUDP:
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

// udpSock is one socket of a udpFan.
type udpSock struct {
	c  *net.UDPConn
	rc syscall.RawConn
	h  mdns.Handler
}

func (s *udpSock) close() { s.c.Close() }

type datagram struct {
	b    []byte
	from *fromUDP
}

// udpFan is one net.PacketConn over many UDP sockets: what miekg/dns's
// server reads comes from any of them, and what it writes goes out of the
// socket its query came in on.
type udpFan struct {
	size int
	bufs sync.Pool
	in   chan datagram
	wake chan struct{} // a read deadline in the past (miekg's Shutdown)
	done chan struct{}
	once sync.Once
}

func newUDPFan(size int) *udpFan {
	f := &udpFan{size: size, in: make(chan datagram), wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.bufs.New = func() any { return make([]byte, size) }
	return f
}

func (f *udpFan) add(pc net.PacketConn, h mdns.Handler) (*udpSock, error) {
	c, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("dns: a UDP socket is needed, not %T", pc)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("dns: raw socket of %s: %w", c.LocalAddr(), err)
	}
	s := &udpSock{c: c, rc: rc, h: h}
	go f.read(s)
	return s, nil
}

// read passes each datagram of s to the server. It takes a buffer only
// once a datagram is there (the runtime's poller waits for it), so a
// socket that receives nothing holds none.
func (f *udpFan) read(s *udpSock) {
	for {
		var d datagram
		var rerr error
		err := s.rc.Read(func(fd uintptr) bool {
			b := f.bufs.Get().([]byte)
			n, sa, err := unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || err == unix.EINTR {
				f.bufs.Put(b)
				return false // wait until readable
			}
			if err != nil {
				f.bufs.Put(b)
				rerr = err
				return true
			}
			if sa4, ok := sa.(*unix.SockaddrInet4); ok {
				d = datagram{b[:n], &fromUDP{&net.UDPAddr{IP: net.IP(sa4.Addr[:]).To16(), Port: sa4.Port}, s}}
			} else {
				f.bufs.Put(b) // not IPv4: dropped
			}
			return true
		})
		if err != nil {
			return // closed
		}
		if rerr != nil || d.b == nil {
			continue // e.g. ECONNREFUSED from an earlier answer's ICMP
		}
		select {
		case f.in <- d:
		case <-f.done:
			return
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

// atTCP is a connection's local address and the handler of the listener
// that accepted it.
type atTCP struct {
	net.Addr
	h mdns.Handler
}

type tcpConn struct {
	net.Conn
	local *atTCP
}

func (c tcpConn) LocalAddr() net.Addr { return c.local }

// tcpListener is one listener of a tcpFan.
type tcpListener struct {
	ln net.Listener
	h  mdns.Handler
}

func (l *tcpListener) close() { l.ln.Close() }

// tcpFan is one net.Listener over many: miekg/dns's server accepts the
// connections of all of them.
type tcpFan struct {
	in   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newTCPFan() *tcpFan { return &tcpFan{in: make(chan net.Conn), done: make(chan struct{})} }

func (f *tcpFan) add(ln net.Listener, h mdns.Handler) *tcpListener {
	l := &tcpListener{ln: ln, h: h}
	go f.accept(l)
	return l
}

func (f *tcpFan) accept(l *tcpListener) {
	for {
		c, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: try again
			continue
		}
		select {
		case f.in <- tcpConn{c, &atTCP{c.LocalAddr(), l.h}}:
		case <-f.done:
			c.Close()
			return
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
