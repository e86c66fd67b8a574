package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// stretchDHCPSpec is host h's config: one stretched network whose leases
// live in the etcd at 10.10.0.201, blocks of 16 addresses. The VXLAN
// wiring does not matter for DHCP: each host answers its own ports.
func stretchDHCPSpec(h *bgpHost, other *bgpHost) string {
	return fmt.Sprintf(`bgp:
  asn: 65000
  router_id: %s
  peers: [{address: %s, asn: 65000}]
leases:
  etcd: [http://10.10.0.201:2379]
  block: 16
networks:
  stretch:
    mode: isolated
    bridge: gst0
    ipv4: 10.60.0.1/24
    vxlan: {vni: 6000}
    dhcp: {range: [10.60.0.100-10.60.0.250], lease: 1h}
`, h.Addr, other.Addr)
}

// TestStretchedDHCPTwoHosts: two `guestnet serve` hosts share a stretched
// network whose leases live in a real etcd (Debian's, on the LAN). A
// busybox udhcpc client behind each host's bridge gets an address; the
// two addresses differ and lie in different blocks (each host claimed its
// own), and each host lists both leases, with the host that wrote each.
func TestStretchedDHCPTwoHosts(t *testing.T) {
	b := newBGPLab(t, 2)
	etcdNS := b.NS("etcd")
	b.OnLAN(etcdNS, "10.10.0.201/24")
	b.Proc("etcd", etcdNS, "etcd", "--name", "e1", "--data-dir", t.TempDir()+"/etcd",
		"--listen-client-urls", "http://10.10.0.201:2379", "--advertise-client-urls", "http://10.10.0.201:2379",
		"--listen-peer-urls", "http://10.10.0.201:2380", "--initial-advertise-peer-urls", "http://10.10.0.201:2380",
		"--initial-cluster", "e1=http://10.10.0.201:2380")
	waitUntil(t, "etcd to listen", 20*time.Second, func() bool {
		c, err := dialIn(etcdNS, "10.10.0.201:2379", time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	hook := b.clientScript()
	h1, h2 := b.Hosts[0], b.Hosts[1]
	got := map[string]string{} // host -> its guest's address
	for i, h := range []*bgpHost{h1, h2} {
		other := b.Hosts[1-i]
		spec := b.Spec(stretchDHCPSpec(h, other))
		h.D = b.Serve_(h.NS, spec)
		g := b.dhcpGuest(h.NS, "stretch", fmt.Sprintf("g%d", h.N), fmt.Sprintf("vg%d", h.N), fmt.Sprintf("52:54:00:60:00:0%d", h.N))
		out, err := b.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "8", "-s", hook)
		a := b.addrOf(g)
		if err != nil || a == "" {
			t.Fatalf("guest behind %s got no address: %v\n%s", h.Addr, err, out)
		}
		got[h.Addr] = a
	}
	a1, a2 := netip.MustParseAddr(got[h1.Addr]), netip.MustParseAddr(got[h2.Addr])
	block := func(a netip.Addr) int { return int(a.As4()[3]-100) / 16 }
	t.Logf("guest behind %s: %s (block %d); behind %s: %s (block %d)", h1.Addr, a1, block(a1), h2.Addr, a2, block(a2))
	if a1 == a2 || block(a1) == block(a2) {
		t.Errorf("the two hosts gave %s and %s: want distinct addresses from distinct blocks", a1, a2)
	}
	type lease struct{ MAC, IP, State, Host string }
	for _, h := range []*bgpHost{h1, h2} {
		var ls []lease
		ok := func() bool {
			ls = nil
			json.Unmarshal([]byte(b.Guestnet(h.NS, "leases", "-o", "json")), &ls)
			seen := map[string]string{}
			for _, l := range ls {
				if l.State == "bound" {
					seen[l.IP] = l.Host
				}
			}
			return seen[a1.String()] == h1.Addr && seen[a2.String()] == h2.Addr
		}
		waitUntil(t, h.Addr+" lists both leases with their writers", 10*time.Second, ok)
		var st struct {
			Leases struct {
				Host   string
				Etcd   struct{ Quorum bool }
				Blocks []struct {
					First, Last, Host string
					Leases            int
				}
			}
		}
		out := b.Guestnet(h.NS, "-o", "json", "status")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		owners := map[string]int{}
		for _, bl := range st.Leases.Blocks {
			owners[bl.Host] += bl.Leases
		}
		if st.Leases.Host != h.Addr || !st.Leases.Etcd.Quorum || owners[h1.Addr] != 1 || owners[h2.Addr] != 1 {
			t.Errorf("status on %s: %+v", h.Addr, st.Leases)
		}
		text := b.Guestnet(h.NS, "status")
		if !strings.Contains(text, "leases in etcd (this host: "+h.Addr+"): quorum") {
			t.Errorf("status text on %s says nothing of the lease cluster:\n%s", h.Addr, text)
		}
	}
}
