package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/dhcp6"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/ra"
	"github.com/guestnet/guestnet/internal/spec"
)

// The "ra + dhcp6" service: router advertisements on every guest bridge
// of a network with ipv6 (internal/ra), and stateful DHCPv6 on those with
// dhcp6 (internal/dhcp6), its leases in the DHCPv4 lease store's file.

// Sockets6 opens the IPv6 services' sockets in the namespace. nsSockets6
// is the real one; nil (unit tests with loopback sockets) serves no IPv6.
type Sockets6 interface {
	// RA opens the bridge's ICMPv6 socket on its link-local address,
	// joined to ff02::2 (ra.ErrNotReady while the address is missing or
	// tentative), and says the bridge's hardware address.
	RA(bridge string) (ra.Conn, net.HardwareAddr, error)
	// DHCP6 listens on UDP [::]:547 of every interface.
	DHCP6() (dhcp6.Conn, error)
	// LinkLocal is the link-local address of interface ifindex once it
	// left DAD (ra.ErrNotReady before): DHCPv6 answers come from it.
	LinkLocal(ifindex int) (netip.Addr, error)
	// NeighbourMAC is the MAC of a's neighbour entry on the bridge, "" if
	// none.
	NeighbourMAC(bridge string, a netip.Addr) string
}

// v6 is the service's state; d.mu guards it.
type v6 struct {
	ras     map[string]*raServer
	servers map[string]*server6
	mux     *dhcp6.Mux
	conn    dhcp6.Conn
	joined  map[int]bool // bridges joined to ff02::1:2 on conn
	pools   sync.Map     // network -> *dhcp6.Pool, for DNS without d.mu
	err     lastError    // the socket's failure
}

// raServer is one network's advertiser.
type raServer struct {
	adv *ra.Advertiser
	key string // bridge and ifindex: a new bridge gets a new advertiser
}

// server6 is one network's DHCPv6 service.
type server6 struct {
	handler *dhcp6.Handler
	key     string
	ifindex int
}

func (d *Daemon) sockets6() Sockets6 { return d.Sockets6 }

// v6Used: the service shows in status when a network has ipv6 on a guest
// bridge.
func (d *Daemon) v6Used() bool {
	return slices.ContainsFunc(d.spec.Networks, func(n spec.Network) bool { _, ok := n.RA(); return ok })
}

// syncV6 starts, changes and stops advertisers and DHCPv6 servers to match
// the spec. Called with d.mu held.
func (d *Daemon) syncV6() {
	if d.v6.ras == nil {
		d.v6.ras, d.v6.servers, d.v6.joined = map[string]*raServer{}, map[string]*server6{}, map[int]bool{}
	}
	s6 := d.sockets6()
	if s6 == nil {
		return
	}
	index, err := d.linkIndexes()
	if err != nil {
		d.Log.Error("ra", "err", err)
		return
	}
	d.syncRA(s6, index)
	d.syncDHCP6(s6, index)
}

func (d *Daemon) syncRA(s6 Sockets6, index map[string]int) {
	want := map[string]bool{}
	for _, n := range d.spec.Networks {
		r, ok := n.RA()
		idx, up := index[n.Bridge]
		if !ok || !up {
			continue
		}
		want[n.Name] = true
		key := fmt.Sprint(n.Bridge, "/", idx)
		if s, ok := d.v6.ras[n.Name]; ok {
			if s.key == key {
				s.adv.Set(r)
				continue
			}
			s.adv.Stop() // the bridge was made again or renamed
		}
		bridge := n.Bridge
		d.v6.ras[n.Name] = &raServer{key: key, adv: ra.Start(r, func() (ra.Conn, net.HardwareAddr, error) {
			return s6.RA(bridge)
		}, d.Log.With("network", n.Name, "bridge", bridge))}
		d.Log.Info("ra serving", "network", n.Name, "bridge", bridge, "prefix", r.Prefix)
	}
	for name, s := range d.v6.ras {
		if !want[name] {
			s.adv.Withdraw() // the final RA: guests drop the default router and the prefix now
			delete(d.v6.ras, name)
			d.Log.Info("ra stopped", "network", name)
		}
	}
}

func (d *Daemon) syncDHCP6(s6 Sockets6, index map[string]int) {
	want := map[string]dhcp6.Config{}
	bridges := map[string]string{}
	for _, n := range d.spec.Networks {
		if n.DHCP6 == nil || !n.IPv6.IsValid() || !n.GuestBridge() {
			continue
		}
		// The DHCPv4 default cap (per_port: 8) holds for DHCPv6 too; the
		// spec has no dhcp6 key for it yet.
		cfg := dhcp6.Config{Network: n.Name, Prefix: n.Subnet6(), DHCP6: *n.DHCP6, PerPort: n.DHCP6.PerPort,
			NameHeld: d.nameHeld4(n.Name)}
		if r, ok := n.RA(); ok {
			cfg.DNS = r.RDNSS
			if len(r.DNSSL) > 0 {
				cfg.Domain = r.DNSSL[0]
			}
		}
		want[n.Name], bridges[n.Name] = cfg, n.Bridge
	}
	for name, s := range d.v6.servers {
		if cfg, ok := want[name]; !ok || configKeyOf(cfg, bridges[name]) != s.key {
			d.stopServer6(name, s)
			d.Log.Info("dhcp6 stopped", "network", name)
		}
	}
	if len(want) == 0 {
		d.closeDHCP6()
		return
	}
	if d.v6.conn == nil {
		c, err := s6.DHCP6()
		if err != nil {
			d.v6.err.set(err)
			d.Log.Error("dhcp6 listen", "err", err)
			return
		}
		d.v6.conn, d.v6.mux, d.v6.joined = c, &dhcp6.Mux{Log: d.Log, Source: s6.LinkLocal}, map[int]bool{}
		go func() {
			if err := d.v6.mux.Serve(c); err != nil {
				d.v6.err.set(fmt.Errorf("the DHCPv6 socket failed: %w", err))
				d.Log.Error("dhcp6: the socket failed; no network gets answers until the daemon restarts", "err", err)
			}
		}()
		d.v6.err.set(nil)
	}
	for name, cfg := range want {
		idx, ok := index[bridges[name]]
		if !ok {
			d.Log.Error("dhcp6", "network", name, "err", fmt.Errorf("find %s: %w", bridges[name], unix.ENODEV))
			continue
		}
		if !d.v6.joined[idx] {
			if err := d.v6.conn.Join(idx); err != nil {
				d.Log.Error("dhcp6", "network", name, "err", err)
				continue
			}
			d.v6.joined[idx] = true
		}
		s, running := d.v6.servers[name]
		if running && s.ifindex == idx {
			continue
		}
		if running {
			d.v6.mux.Set(s.ifindex, nil) // the bridge was made again: answer on the new one
		} else {
			leases, err := d.store.Load6(name)
			if err != nil {
				d.Log.Error("dhcp6", "network", name, "err", err)
				continue
			}
			bridge := bridges[name]
			s = &server6{key: configKeyOf(cfg, bridge), handler: &dhcp6.Handler{
				Pool: dhcp6.NewPool(cfg, time.Now, leases), Store: d.store, Log: d.Log.With("network", name),
				Ports: learner6{d: d, network: name, bridge: bridge},
				MACOf: func(a netip.Addr) string { return s6.NeighbourMAC(bridge, a) }}}
		}
		s.ifindex = idx
		d.v6.servers[name] = s
		d.v6.pools.Store(name, s.handler.Pool)
		d.v6.mux.Set(idx, s.handler)
		d.Log.Info("dhcp6 serving", "network", name, "bridge", bridges[name], "leases", len(s.handler.Pool.Leases()))
	}
}

func (d *Daemon) stopServer6(name string, s *server6) {
	if d.v6.mux != nil {
		d.v6.mux.Set(s.ifindex, nil)
	}
	delete(d.v6.servers, name)
	d.v6.pools.Delete(name)
}

func (d *Daemon) closeDHCP6() {
	if d.v6.conn != nil {
		d.v6.conn.Close()
		d.v6.conn = nil
		d.v6.joined = map[int]bool{}
	}
}

// withdrawRAAhead sends, before an apply, the final RA of every network
// the next config removes or moves to another bridge: after the apply
// the bridge is gone and the RA cannot leave (sendmsg: no such device),
// and the guests would keep the default route for up to RouterLifetime
// and their addresses preferred. If the apply then fails, syncV6 starts
// the advertiser again, and its first RA restores what this one took.
// d.mu is held.
func (d *Daemon) withdrawRAAhead(next *spec.Spec) {
	keep := map[string]string{}
	for _, n := range next.Networks {
		if _, ok := n.RA(); ok {
			keep[n.Name] = n.Bridge
		}
	}
	var wg sync.WaitGroup
	for name, s := range d.v6.ras {
		if b, ok := keep[name]; ok && strings.HasPrefix(s.key, b+"/") {
			continue
		}
		wg.Go(s.adv.Withdraw)
		delete(d.v6.ras, name)
		d.Log.Info("ra stopped ahead of the apply", "network", name)
	}
	wg.Wait()
}

// stopV6 sends every network's final RA and stops DHCPv6.
func (d *Daemon) stopV6() {
	var wg sync.WaitGroup
	for name, s := range d.v6.ras {
		wg.Go(s.adv.Stop)
		delete(d.v6.ras, name)
	}
	wg.Wait()
	for name, s := range d.v6.servers {
		d.stopServer6(name, s)
	}
	d.closeDHCP6()
}

// v6Health names the networks whose RA or DHCPv6 does not run.
func (d *Daemon) v6Health() error {
	var errs []error
	if d.sockets6() == nil {
		return nil
	}
	var noRA []string
	for _, n := range d.spec.Networks {
		if _, ok := n.RA(); !ok {
			continue
		}
		s, ok := d.v6.ras[n.Name]
		if !ok {
			noRA = append(noRA, n.Name)
			continue
		}
		if err := s.adv.Err(); err != nil {
			errs = append(errs, fmt.Errorf("router advertisements on %s: %w", n.Bridge, err))
		}
	}
	if len(noRA) > 0 {
		errs = append(errs, fmt.Errorf("no router advertisements on %s (see the log)", strings.Join(noRA, ", ")))
	}
	var want []string
	for _, n := range d.spec.Networks {
		if n.DHCP6 != nil && n.IPv6.IsValid() && n.GuestBridge() {
			want = append(want, n.Name)
		}
	}
	errs = append(errs, d.v6.err.get(), missing("DHCPv6 server", want, d.v6.servers))
	return errors.Join(errs...)
}

// Leases6 are every served network's DHCPv6 records (live leases, expired
// ones, quarantines), by network: what IPv6 anti-spoofing syncs its
// learned bindings to (as syncLearned does with Pool.Leases for IPv4).
// The caller holds d.mu (a service's sync does).
func (d *Daemon) Leases6() map[string][]dhcp.Lease6 {
	out := map[string][]dhcp.Lease6{}
	for name, s := range d.v6.servers {
		out[name] = s.handler.Pool.Leases()
	}
	return out
}

// Binder6 is the seam of IPv6 anti-spoofing (daemon/guard.go, claims6): set
// Daemon.Guard6 and the DHCPv6 handlers call it, from their goroutines,
// once a lease is on disk and before its Reply leaves (Bound), and when a
// lease ends or is replaced (Unbound). A lease carries its network's
// bridge port (Port, PortIndex, PortHW: located in the forwarding
// database by the client's MAC), MAC and address. Leases6 gives the whole
// set for a periodic sync (expiry is not reported: a lease whose Expiry
// passed no longer binds).
type Binder6 interface {
	Bound6(network string, l dhcp.Lease6)
	Unbound6(network string, l dhcp.Lease6)
}

// learner6 is one network's dhcp6.PortBinder: it locates the client's
// port and passes the lease on to Daemon.Guard6.
type learner6 struct {
	d       *Daemon
	network string
	bridge  string
}

func (l learner6) Locate(mac string) dhcp.PortID {
	if l.d.fdb == nil {
		return dhcp.PortID{}
	}
	return l.d.fdb.port(l.bridge, mac)
}

func (l learner6) Bound(ls dhcp.Lease6) {
	if g := l.d.Guard6; g != nil {
		g.Bound6(l.network, ls)
	}
}

func (l learner6) Unbound(ls dhcp.Lease6) {
	if g := l.d.Guard6; g != nil {
		g.Unbound6(l.network, ls)
	}
}

// nameHeld4 and nameHeld6 tell one family's pool who holds a name in the
// other's (read without d.mu, as DNS does): a guest's name is its own in
// A and AAAA, no other guest takes it in the family it does not use.
func (d *Daemon) nameHeld4(network string) func(name, mac string) bool {
	return func(name, mac string) bool {
		p, ok := d.pools.Load(network)
		return ok && p.(*dhcp.Pool).NameHeld(name, mac)
	}
}

func (d *Daemon) nameHeld6(network string) func(name, mac string) bool {
	return func(name, mac string) bool {
		p, ok := d.v6.pools.Load(network)
		return ok && p.(*dhcp6.Pool).NameHeld(name, mac)
	}
}

// names6 looks a network's guests up in its DHCPv6 pool (AAAA, ip6.arpa).
type names6 struct {
	d       *Daemon
	network string
}

func (n names6) pool() *dhcp6.Pool {
	if p, ok := n.d.v6.pools.Load(n.network); ok {
		return p.(*dhcp6.Pool)
	}
	return nil
}

func (n names6) Lookup(host string) (netip.Addr, bool) {
	if p := n.pool(); p != nil {
		return p.Resolve(host)
	}
	return netip.Addr{}, false
}

func (n names6) Reverse(a netip.Addr) (string, bool) {
	if p := n.pool(); p != nil {
		return p.Reverse(a)
	}
	return "", false
}

// nsSockets6 opens the IPv6 services' sockets inside the served
// namespace.
type nsSockets6 struct {
	ns *netns.NS
	ll *linkLocals
}

func newNSSockets6(ns *netns.NS) nsSockets6 { return nsSockets6{ns: ns, ll: &linkLocals{ns: ns}} }

// RA opens the bridge's ICMPv6 socket once its link-local address is
// usable (RFC 4861 §6.1.2: RAs come from it; a tentative one cannot be
// bound).
func (s nsSockets6) RA(bridge string) (c ra.Conn, mac net.HardwareAddr, err error) {
	err = s.ns.Do(func() error {
		ll, err := s.ll.ready(bridge) // before any per-bridge call: most tries find it not ready
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(bridge)
		if err != nil {
			return fmt.Errorf("find %s: %w", bridge, err)
		}
		nc, _, err := ndp.Listen(ifi, ndp.Addr(ll.String()))
		if err != nil {
			return fmt.Errorf("open the ICMPv6 socket of %s on %v: %w", bridge, ll, err)
		}
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterSolicitation)
		err = errors.Join(nc.SetICMPFilter(&f), nc.SetControlMessage(ipv6.FlagHopLimit, true), nc.JoinGroup(ra.AllRouters))
		if err != nil {
			nc.Close()
			return fmt.Errorf("set up the ICMPv6 socket of %s: %w", bridge, err)
		}
		c, mac = nc, ifi.HardwareAddr
		return nil
	})
	return c, mac, err
}

// linkLocals is the namespace's link-local addresses, read with one dump
// of every IPv6 address at most every linkLocalsEvery, however many
// advertisers wait for theirs: a thousand bridges with no port up (no
// link-local address yet) cost one dump every 200 ms, not a thousand.
type linkLocals struct {
	ns *netns.NS

	mu        sync.Mutex
	at        time.Time
	err       error
	index     map[string]int     // link name -> ifindex
	usable    map[int]netip.Addr // ifindex -> its link-local address, out of DAD
	tentative map[int]netip.Addr // ifindex -> one still in DAD
}

const linkLocalsEvery = 200 * time.Millisecond

// ready is the interface's link-local address once it left duplicate
// address detection; ra.ErrNotReady before.
func (c *linkLocals) ready(link string) (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.usable == nil || time.Since(c.at) >= linkLocalsEvery {
		c.read()
	}
	if c.err != nil {
		return netip.Addr{}, c.err
	}
	index, ok := c.index[link]
	if !ok {
		return netip.Addr{}, fmt.Errorf("find %s: %w", link, unix.ENODEV)
	}
	return c.of(index)
}

// readyIndex is ready by the interface's index.
func (c *linkLocals) readyIndex(index int) (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.usable == nil || time.Since(c.at) >= linkLocalsEvery {
		c.read()
	}
	if c.err != nil {
		return netip.Addr{}, c.err
	}
	return c.of(index)
}

func (c *linkLocals) of(index int) (netip.Addr, error) {
	if a, ok := c.usable[index]; ok {
		return a, nil
	}
	if a, ok := c.tentative[index]; ok {
		return netip.Addr{}, fmt.Errorf("%w: %v is tentative", ra.ErrNotReady, a)
	}
	return netip.Addr{}, fmt.Errorf("%w: no link-local address (no port up yet, or IPv6 disabled on it)", ra.ErrNotReady)
}

// read is: ip link show; ip -6 addr show scope link
func (c *linkLocals) read() {
	c.at, c.err = time.Now(), nil
	c.index, c.usable, c.tentative = map[string]int{}, map[int]netip.Addr{}, map[int]netip.Addr{}
	h, err := c.ns.Netlink()
	if err != nil {
		c.err = err
		return
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		c.err = fmt.Errorf("list the links: %w", err)
		return
	}
	for _, l := range links {
		c.index[l.Attrs().Name] = l.Attrs().Index
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		c.err = fmt.Errorf("list the IPv6 addresses: %w", err)
		return
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.IsLinkLocalUnicast() {
			continue
		}
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			c.tentative[a.LinkIndex] = ip
			continue
		}
		c.usable[a.LinkIndex] = ip
	}
}

// LinkLocal is the interface's usable link-local address (one read of the
// namespace's addresses every 200 ms at most, shared with the advertisers).
func (s nsSockets6) LinkLocal(ifindex int) (netip.Addr, error) { return s.ll.readyIndex(ifindex) }

// DHCP6 opens [::]:547.
func (s nsSockets6) DHCP6() (c dhcp6.Conn, err error) {
	err = s.ns.Do(func() error {
		pc, err := net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", dhcp6.ServerPort))
		if err != nil {
			return fmt.Errorf("listen on UDP [::]:547 (is another DHCPv6 server running here? `ss -ulpn sport = 547`): %w", err)
		}
		if c, err = dhcp6.NewConn(pc); err != nil {
			pc.Close()
		}
		return err
	})
	return c, err
}

// NeighbourMAC is: ip -6 neigh show dev BRIDGE to A
func (s nsSockets6) NeighbourMAC(bridge string, a netip.Addr) string {
	h, err := s.ns.Netlink()
	if err != nil {
		return ""
	}
	defer h.Close()
	l, err := h.LinkByName(bridge)
	if err != nil {
		return ""
	}
	ns, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V6)
	if err != nil {
		return ""
	}
	for _, n := range ns {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip == a.WithZone("") && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr.String()
		}
	}
	return ""
}
