package daemon

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/arpprobe"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/netns"
)

// syncDHCP starts, stops and re-binds DHCP servers to match the spec.
// A server whose config is unchanged keeps its pool and its socket; one
// whose bridge was re-created keeps its pool and gets a new socket.
func (d *Daemon) syncDHCP() {
	want := map[string]dhcp.Config{}
	bridges := map[string]string{}
	for _, n := range d.spec.Networks {
		if n.DHCP != nil {
			want[n.Name] = dhcp.Config{Network: n.Name, Server: n.IPv4, DHCP: *n.DHCP}
			bridges[n.Name] = n.Bridge
		}
	}
	for name, s := range d.servers {
		if cfg, ok := want[name]; !ok || configKey(cfg) != s.key {
			s.conn.Close()
			s.probe.set(nil)
			delete(d.servers, name)
			d.pools.Delete(name)
			d.Log.Info("dhcp stopped", "network", name)
		}
	}
	for name, cfg := range want {
		idx, err := d.Engine.LinkIndex(bridges[name])
		if err != nil {
			d.Log.Error("dhcp", "network", name, "err", err)
			continue
		}
		s, running := d.servers[name]
		if running && s.ifindex == idx {
			continue
		}
		if running {
			s.conn.Close() // its bridge was deleted and made again
		} else {
			leases, err := d.store.Load(name)
			if err != nil {
				d.Log.Error("dhcp", "network", name, "err", err)
				continue
			}
			probe := &bridgeProber{}
			s = &server{key: configKey(cfg), probe: probe, handler: &dhcp.Handler{
				Pool: dhcp.NewPool(cfg, time.Now, leases), Store: d.store, Log: d.Log.With("network", name),
				Ports: learner{d: d, network: name, bridge: bridges[name]}, Prober: probe}}
		}
		conn, err := d.Sockets.DHCP(bridges[name])
		if err != nil {
			d.Log.Error("dhcp listen", "network", name, "bridge", bridges[name], "err", err)
			s.probe.set(nil)
			delete(d.servers, name)
			continue
		}
		s.conn, s.ifindex = conn, idx
		// The ARP socket is bound to the bridge as it is now, like conn.
		pr, err := d.Sockets.ARP(bridges[name])
		if err != nil {
			d.Log.Error("dhcp: no ARP check before offers (addresses are offered unchecked)", "network", name, "err", err)
		}
		s.probe.set(pr)
		d.servers[name] = s
		d.pools.Store(name, s.handler.Pool)
		go s.handler.Serve(conn)
		d.Log.Info("dhcp serving", "network", name, "bridge", bridges[name], "leases", len(s.handler.Pool.Leases()))
	}
}

// Sockets opens the DHCP and DNS services' sockets in the namespace.
// nsSockets is the real one; unit tests open loopback sockets instead.
type Sockets interface {
	// DHCP listens on UDP port 67 of the bridge.
	DHCP(bridge string) (net.PacketConn, error)
	// ARP opens the ARP prober of the bridge.
	ARP(bridge string) (*arpprobe.Prober, error)
	// DNS listens on addr, UDP and TCP.
	DNS(addr string) (net.PacketConn, net.Listener, error)
	// Dial connects from the namespace (DNS's upstream queries).
	Dial(network, addr string) (net.Conn, error)
	// HostAddrs lists the namespace's addresses.
	HostAddrs() ([]net.Addr, error)
}

// nsSockets opens sockets inside the served namespace.
type nsSockets struct{ ns *netns.NS }

func (s nsSockets) DHCP(bridge string) (conn net.PacketConn, err error) {
	err = s.ns.Do(func() (err error) {
		conn, err = server4.NewIPv4UDPConn(bridge, &net.UDPAddr{Port: 67})
		if err == nil {
			bigBuffers(conn)
		}
		return err
	})
	return conn, err
}

// dhcpSocketBuffer is the DHCP socket's send and receive buffer. Every
// OFFER and ACK is broadcast on the bridge, so the kernel holds each one
// until a copy has reached every port: with 64 ports and 1,000 new
// clients a second the default 208 KiB send buffer filled, the replies
// queued on the socket's write lock, the handlers in flight reached their
// bound, and the reader stopped reading (the receive buffer then dropped
// requests: 45 % of the clients of bench/dhcpload were lost).
const dhcpSocketBuffer = 4 << 20

// bigBuffers sets the socket's buffers to dhcpSocketBuffer, past the
// host's net.core.[rw]mem_max (the daemon has CAP_NET_ADMIN); a failure
// leaves the defaults, which only cost loss under a burst.
func bigBuffers(conn net.PacketConn) {
	c, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, dhcpSocketBuffer)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, dhcpSocketBuffer)
	})
}

func (s nsSockets) ARP(bridge string) (*arpprobe.Prober, error) {
	return arpprobe.Open(s.ns, bridge, arpprobe.Wait)
}

func (s nsSockets) DNS(addr string) (pc net.PacketConn, ln net.Listener, err error) {
	err = s.ns.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp4", addr); err != nil {
			pc.Close()
		}
		return err
	})
	return pc, ln, err
}

func (s nsSockets) Dial(network, addr string) (c net.Conn, err error) {
	err = s.ns.Do(func() (err error) {
		c, err = net.Dial(network, addr)
		return err
	})
	return c, err
}

// HostAddrs is: ip addr show
func (s nsSockets) HostAddrs() (addrs []net.Addr, err error) {
	err = s.ns.Do(func() (err error) {
		addrs, err = net.InterfaceAddrs()
		return err
	})
	return addrs, err
}

// bridgeProber is a network's dhcp.Prober across re-creations of its
// bridge: syncDHCP swaps the socket while DHCP goroutines keep probing.
type bridgeProber struct {
	p atomic.Pointer[arpprobe.Prober]
}

func (b *bridgeProber) Probe(a netip.Addr) (string, error) {
	p := b.p.Load()
	if p == nil {
		return "", errors.New("no ARP socket on the bridge (see the log of its start)")
	}
	return p.Probe(a)
}

func (b *bridgeProber) Prefetch(as []netip.Addr) {
	if p := b.p.Load(); p != nil {
		p.Prefetch(as)
	}
}

// set installs p (nil for none) and closes the socket it replaces.
func (b *bridgeProber) set(p *arpprobe.Prober) {
	if old := b.p.Swap(p); old != nil {
		old.Close()
	}
}

func configKey(c dhcp.Config) string { return configKeyOf(c) }

// configKeyOf is a comparable form of a service's configuration.
func configKeyOf(v ...any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
