package daemon

import (
	"net"
	"net/netip"
	"strings"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/dns"
)

// dnsServer is one network's running name service: its sockets, served
// by the daemon's dns.Group.
type dnsServer struct {
	key  string
	udp  net.PacketConn
	stop func()
}

// names looks guests up in a network's DHCP pool: static hosts first, then
// the host names clients sent with their live leases.
type names struct {
	d       *Daemon
	network string
}

// pool reads the network's pool without d.mu: DNS answers must not wait
// for a reload that is shutting DNS servers down.
func (n names) pool() *dhcp.Pool {
	if p, ok := n.d.pools.Load(n.network); ok {
		return p.(*dhcp.Pool)
	}
	return nil
}

// Lookup and Reverse ask the pool, which keeps a name on one client at a
// time (static hosts first, then live leases).
func (n names) Lookup(host string) (netip.Addr, bool) {
	if p := n.pool(); p != nil {
		return p.Resolve(host)
	}
	return netip.Addr{}, false
}

func (n names) Reverse(a netip.Addr) (string, bool) {
	if p := n.pool(); p != nil {
		return p.Reverse(a)
	}
	return "", false
}

// syncDNS starts and stops name servers to match the spec. Called with
// d.mu held. Every network keeps its own sockets on its gateway address;
// one dns.Group serves them all.
func (d *Daemon) syncDNS() {
	if d.dns == nil {
		d.dns = map[string]*dnsServer{}
	}
	if d.dnsGroup == nil {
		g, err := dns.NewGroup(dns.UpstreamUDPSize)
		if err != nil {
			d.Log.Error("dns", "err", err)
			return
		}
		d.dnsGroup = g
	}
	want := map[string]string{}
	for _, n := range d.spec.Networks {
		if n.DNS != nil {
			want[n.Name] = configKeyOf(n.DNS, n.IPv4, n.IPv6)
		}
	}
	for name, s := range d.dns {
		if want[name] != s.key {
			s.stop()
			delete(d.dns, name)
		}
	}
	for _, n := range d.spec.Networks {
		if n.DNS == nil || d.dns[n.Name] != nil {
			continue
		}
		var ups []netip.AddrPort
		for _, u := range n.DNS.Upstream {
			ups = append(ups, netip.AddrPortFrom(u, 53))
		}
		// Only the network's own subnet and the host itself are answered
		// (the firewall also drops DNS to this address arriving on any
		// interface but the bridge and lo).
		h := &dns.Server{Domain: n.DNS.Domain, Subnet: n.Subnet(), Subnet6: n.Subnet6(), Upstream: ups,
			Names: names{d, n.Name}, Dial: d.dialInNS, HostAddr: d.hostAddr}
		if n.IPv6.IsValid() {
			h.Names6 = names6{d, n.Name}
		}
		// One socket pair on each of the network's gateway addresses
		// (IPv4, IPv6): the same server answers both.
		var stops []func()
		var addrs []string
		var udp net.PacketConn
		for _, gw := range n.Addrs() {
			addr := netip.AddrPortFrom(gw.Addr(), 53).String()
			pc, ln, err := d.Sockets.DNS(addr)
			if err != nil {
				d.Log.Error("dns listen", "network", n.Name, "addr", addr, "err", err)
				continue
			}
			stop, err := d.dnsGroup.Add(pc, ln, h)
			if err != nil {
				pc.Close()
				ln.Close()
				d.Log.Error("dns listen", "network", n.Name, "addr", addr, "err", err)
				continue
			}
			if udp == nil {
				udp = pc
			}
			stops, addrs = append(stops, stop), append(addrs, addr)
		}
		if len(stops) == 0 {
			continue
		}
		d.dns[n.Name] = &dnsServer{key: want[n.Name], udp: udp, stop: func() {
			for _, s := range stops {
				s()
			}
		}}
		addr := strings.Join(addrs, " ")
		d.Log.Info("dns serving", "network", n.Name, "addr", addr, "domain", n.DNS.Domain)
	}
}

// dialInNS opens a socket inside the served namespace.
func (d *Daemon) dialInNS(network, addr string) (net.Conn, error) {
	return d.Sockets.Dial(network, addr)
}

// hostAddr reports whether a is an address of the served namespace: a DNS
// query from one comes from the host itself. Asked only for sources outside
// the network's subnet, which the firewall lets through on lo alone.
func (d *Daemon) hostAddr(a netip.Addr) bool {
	addrs, err := d.Sockets.HostAddrs()
	if err != nil {
		d.Log.Warn("dns: list the host's addresses", "err", err)
		return false
	}
	for _, x := range addrs {
		if p, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
