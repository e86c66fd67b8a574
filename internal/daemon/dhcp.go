package daemon

import (
	"encoding/json"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/guestnet/guestnet/internal/dhcp"
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
			s = &server{key: configKey(cfg), handler: &dhcp.Handler{
				Pool: dhcp.NewPool(cfg, time.Now, leases), Store: d.store, Log: d.Log.With("network", name),
				Ports: learner{d: d, network: name, bridge: bridges[name]}}}
		}
		var conn net.PacketConn
		err = d.Engine.NS.Do(func() (err error) {
			conn, err = server4.NewIPv4UDPConn(bridges[name], &net.UDPAddr{Port: 67})
			return err
		})
		if err != nil {
			d.Log.Error("dhcp listen", "network", name, "bridge", bridges[name], "err", err)
			delete(d.servers, name)
			continue
		}
		s.conn, s.ifindex = conn, idx
		d.servers[name] = s
		d.pools.Store(name, s.handler.Pool)
		go s.handler.Serve(conn)
		d.Log.Info("dhcp serving", "network", name, "bridge", bridges[name], "leases", len(s.handler.Pool.Leases()))
	}
}

func configKey(c dhcp.Config) string { return configKeyOf(c) }

// configKeyOf is a comparable form of a service's configuration.
func configKeyOf(v ...any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
