package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/arpprobe"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/etcdlease"
	"github.com/guestnet/guestnet/internal/netns"
)

// syncDHCP starts and stops networks' DHCP to match the spec. Every
// network is served from one socket (dhcp.Mux): a network's handler
// answers what comes in on its bridge, by interface index. A network
// whose config is unchanged keeps its pool; one whose bridge was
// re-created keeps its pool and answers on the new bridge's index. A
// network whose bridge is renamed in the spec restarts, as on any other
// change of its config (its leases are reloaded from the store): its
// port lookups and ARP probes name the bridge, and would otherwise go on
// looking at the old one.
func (d *Daemon) syncDHCP() {
	want := map[string]dhcp.Config{}
	bridges, keys := map[string]string{}, map[string]string{}
	// A stretched network keeps its leases in etcd (leasecluster.go).
	cluster, clusterKey, err := d.syncCluster()
	if err != nil {
		d.Log.Error("dhcp of stretched networks", "err", err)
	}
	for _, n := range d.spec.Networks {
		if n.DHCP == nil {
			continue
		}
		cfg := dhcp.Config{Network: n.Name, Server: n.IPv4, DHCP: *n.DHCP, NameHeld: d.nameHeld6(n.Name)}
		key := serverKey(cfg, n.Bridge)
		if stretchedDHCP(n.Network) {
			if cluster == nil {
				continue // no lease store: no server (logged above, and in health)
			}
			cfg.Host = cluster.Host()
			key = configKeyOf(key, clusterKey)
		}
		want[n.Name], bridges[n.Name], keys[n.Name] = cfg, n.Bridge, key
	}
	for name, s := range d.servers {
		if _, ok := want[name]; !ok || keys[name] != s.key {
			d.stopServer(name, s)
			d.Log.Info("dhcp stopped", "network", name)
		}
	}
	if len(want) == 0 {
		d.closeDHCP()
		return
	}
	if err := d.openDHCP(); err != nil {
		d.Log.Error("dhcp listen", "err", err)
		return
	}
	index, err := d.linkIndexes() // one read of the links for every network
	if err != nil {
		d.Log.Error("dhcp", "err", err)
		return
	}
	for name, cfg := range want {
		idx, ok := index[bridges[name]]
		if !ok {
			d.Log.Error("dhcp", "network", name, "err", fmt.Errorf("find %s: %w", bridges[name], unix.ENODEV))
			continue
		}
		s, running := d.servers[name]
		if running && s.ifindex == idx {
			continue
		}
		if running {
			// Its bridge was deleted and made again: answer on the new one.
			d.mux.Set(s.ifindex, nil)
			s.probe.close()
		} else {
			var store dhcp.Store = d.store
			var shared *etcdlease.Network
			if cfg.Host != "" { // stretched: allocate inside the blocks this host holds
				shared = cluster.Network(name, cfg.Ranges)
				cfg.Blocks, store = shared, cluster
			}
			leases, err := store.Load(name)
			if err != nil {
				d.Log.Error("dhcp", "network", name, "err", err)
				continue
			}
			probe := &bridgeProber{open: d.arpOpener(name, bridges[name]), idle: ProberIdle}
			s = &server{key: keys[name], probe: probe, handler: &dhcp.Handler{
				Pool: dhcp.NewPool(cfg, time.Now, leases), Store: store, Log: d.Log.With("network", name),
				Ports: learner{d: d, network: name, bridge: bridges[name]}, Prober: probe}}
			if shared != nil {
				shared.Attach(s.handler.Pool) // the watch keeps the pool in step with every host's leases
			}
		}
		s.ifindex = idx
		d.servers[name] = s
		d.pools.Store(name, s.handler.Pool)
		d.mux.Set(idx, s.handler)
		d.Log.Info("dhcp serving", "network", name, "bridge", bridges[name], "leases", len(s.handler.Pool.Leases()))
	}
}

// openDHCP opens the host's DHCP socket, once, and serves it.
func (d *Daemon) openDHCP() error {
	if d.dhcpConn != nil {
		return nil
	}
	c, err := d.Sockets.DHCP()
	if err != nil {
		return err
	}
	if d.mux == nil {
		d.mux = &dhcp.Mux{}
	}
	d.dhcpConn = c
	go func() {
		if err := d.mux.Serve(c); err != nil {
			d.Log.Error("dhcp: the socket failed; no network gets answers until the daemon restarts", "err", err)
		}
	}()
	return nil
}

// closeDHCP closes the host's DHCP socket (no network has DHCP).
func (d *Daemon) closeDHCP() {
	if d.dhcpConn != nil {
		d.dhcpConn.Close()
		d.dhcpConn = nil
	}
}

// stopServer stops answering for a network and forgets its pool.
func (d *Daemon) stopServer(name string, s *server) {
	if d.mux != nil {
		d.mux.Set(s.ifindex, nil)
	}
	s.probe.close()
	delete(d.servers, name)
	d.pools.Delete(name)
	if d.cluster != nil {
		d.cluster.c.Drop(name) // its watch ends (a local network: nothing)
	}
}

// stopDHCP stops every network's DHCP and closes the socket.
func (d *Daemon) stopDHCP() {
	for name, s := range d.servers {
		d.stopServer(name, s)
	}
	d.closeDHCP()
	d.closeCluster()
}

// linkIndexes maps the namespace's link names to their indexes: one dump
// of the links, however many networks (a lookup per network would read
// every link once per network). The forwarding database keeps the dump
// too: the first requests need no dump of their own to name their port.
func (d *Daemon) linkIndexes() (map[string]int, error) {
	ls, err := d.Engine.Kernel.Links()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	if d.fdb != nil {
		d.fdb.remember(ls)
	}
	m := make(map[string]int, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Index
	}
	return m, nil
}

// arpOpener opens the ARP socket of a network's bridge, as the bridge is
// when asked.
func (d *Daemon) arpOpener(network, bridge string) func() (arpSocket, error) {
	return func() (arpSocket, error) {
		p, err := d.Sockets.ARP(bridge)
		if err != nil {
			return nil, fmt.Errorf("open the ARP socket of %s (network %s): %w", bridge, network, err)
		}
		return p, nil
	}
}

// Sockets opens the DHCP and DNS services' sockets in the namespace.
// nsSockets is the real one; unit tests open loopback sockets instead.
type Sockets interface {
	// DHCP listens on UDP port 67 of every interface; each request says
	// the interface it came in on.
	DHCP() (dhcp.Conn, error)
	// ARP opens the ARP prober of the bridge.
	ARP(bridge string) (*arpprobe.Prober, error)
	// DNS listens on addr, UDP and TCP.
	DNS(addr string) (net.PacketConn, net.Listener, error)
	// Dial connects from the namespace (DNS's upstream queries).
	Dial(network, addr string) (net.Conn, error)
	// HostAddrs lists the namespace's addresses.
	HostAddrs() ([]net.Addr, error)
}

// dhcpSocketBuffer is the DHCP socket's send and receive buffer. A burst
// of new clients (1,000 a second from 64 ports in bench/dhcpload) fills
// the default 208 KiB receive buffer while the handlers wait on the lease
// store, and broadcast replies (NAKs, clients that set the broadcast bit)
// are held in the send buffer until a copy has reached every port.
const dhcpSocketBuffer = 4 << 20

// nsSockets opens sockets inside the served namespace.
type nsSockets struct{ ns *netns.NS }

// DHCP opens 0.0.0.0:67 with SO_BROADCAST and IP_PKTINFO. SO_REUSEADDR
// lets it share the port with a DHCP server bound to one interface, as
// libvirt's dnsmasq is (tried: both bind; a request on that interface
// is that server's, and the Mux ignores it: not a guestnet bridge). No
// SO_REUSEPORT, so that no other program's wildcard socket can take a
// share of the unicast requests to guestnet's bridges. Beside it, one
// AF_PACKET socket for every bridge sends the OFFERs and ACKs addressed to
// a client's MAC (dhcp.FrameSender).
func (s nsSockets) DHCP() (c dhcp.Conn, err error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
			// Past the host's net.core.[rw]mem_max (the daemon has
			// CAP_NET_ADMIN); a failure leaves the defaults, which only
			// cost loss under a burst.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, dhcpSocketBuffer)
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, dhcpSocketBuffer)
		})
		return errors.Join(err, serr)
	}}
	err = s.ns.Do(func() error {
		frames, err := dhcp.OpenFrameSender()
		if err != nil {
			return err
		}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:67")
		if err != nil {
			frames.Close()
			return fmt.Errorf("listen on UDP 0.0.0.0:67 (is another DHCP server running here? `ss -ulpn sport = 67`): %w", err)
		}
		if c, err = dhcp.NewConn(pc, frames); err != nil {
			pc.Close()
			frames.Close()
		}
		return err
	})
	return c, err
}

func (s nsSockets) ARP(bridge string) (*arpprobe.Prober, error) {
	return arpprobe.Open(s.ns, bridge, arpprobe.Wait)
}

// DNS listens on an IPv4 or IPv6 address. An IPv6 one is bound with
// IPV6_FREEBIND: the bridge's address may still be in duplicate address
// detection (tentative), and queries to it arrive once it leaves.
func (s nsSockets) DNS(addr string) (pc net.PacketConn, ln net.Listener, err error) {
	udp, tcp := "udp4", "tcp4"
	var lc net.ListenConfig
	if ap, perr := netip.ParseAddrPort(addr); perr == nil && ap.Addr().Is6() {
		udp, tcp = "udp6", "tcp6"
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			})
			return errors.Join(err, serr)
		}
	}
	err = s.ns.Do(func() (err error) {
		if pc, err = lc.ListenPacket(context.Background(), udp, addr); err != nil {
			return err
		}
		if ln, err = lc.Listen(context.Background(), tcp, addr); err != nil {
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

// ProberIdle is how long a network's ARP socket stays open after its last
// probe. The socket takes a copy of every ARP frame on the bridge; it is
// opened for the offers that need a check (a pool's first clients, an
// address with no record) and closed again, so that an idle network holds
// no socket and no goroutine for it.
const ProberIdle = time.Minute

// bridgeProber is a network's dhcp.Prober: it opens the bridge's ARP
// socket when a probe needs it (the bridge as it is then), shares it
// between probes, and closes it ProberIdle after the last one.
type bridgeProber struct {
	open func() (arpSocket, error)
	idle time.Duration

	mu    sync.Mutex
	p     arpSocket
	users int
	timer *time.Timer
}

// arpSocket is an open ARP prober (*arpprobe.Prober).
type arpSocket interface {
	dhcp.Prober
	Close() error
}

// get returns the open socket, opening it if need be; the caller puts it
// back with put.
func (b *bridgeProber) get() (arpSocket, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == nil {
		p, err := b.open()
		if err != nil {
			return nil, err
		}
		b.p = p
	}
	b.users++
	return b.p, nil
}

func (b *bridgeProber) put(p arpSocket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p != b.p { // closed (the bridge was re-created) while in use
		return
	}
	if b.users--; b.users > 0 {
		return
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.idle, b.closeIdle)
		return
	}
	b.timer.Reset(b.idle)
}

// closeIdle closes the socket if no probe took it since the timer was set.
func (b *bridgeProber) closeIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.users == 0 && b.p != nil {
		b.p.Close()
		b.p = nil
	}
}

// close closes the socket now: the bridge is gone or re-created (the next
// probe opens the new one), or the network stopped.
func (b *bridgeProber) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p != nil {
		b.p.Close()
		b.p, b.users = nil, 0
	}
}

func (b *bridgeProber) Probe(a netip.Addr) (string, error) {
	p, err := b.get()
	if err != nil {
		return "", err
	}
	defer b.put(p)
	return p.Probe(a)
}

// Prefetch starts probes that outlive the call: the socket stays open for
// them ProberIdle, far longer than a probe's wait.
func (b *bridgeProber) Prefetch(as []netip.Addr) {
	p, err := b.get()
	if err != nil {
		return // Probe says why when a client needs the check
	}
	defer b.put(p)
	p.Prefetch(as)
}

// serverKey is what a network's DHCP server is made of: its config and
// the name of its bridge.
func serverKey(c dhcp.Config, bridge string) string { return configKeyOf(c, bridge) }

// configKeyOf is a comparable form of a service's configuration.
func configKeyOf(v ...any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
