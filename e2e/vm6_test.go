package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/report"
)

// natHost6 is natHost with IPv6 on the uplink: the host at
// 2001:db8:fe::1 on up0, the pretend internet at 2001:db8:fe::2 with
// 2001:db8:ff::10 on its loopback, the host's IPv6 default route via it.
func natHost6(l *Lab) (host, inet string) {
	host, inet = natHost(l)
	l.must("ip", "-n", host, "addr", "add", "2001:db8:fe::1/64", "dev", "up0", "nodad")
	l.must("ip", "-n", inet, "addr", "add", "2001:db8:fe::2/64", "dev", "a0", "nodad")
	l.must("ip", "-n", inet, "addr", "add", "2001:db8:ff::10/128", "dev", "lo")
	l.must("ip", "-n", host, "-6", "route", "add", "default", "via", "2001:db8:fe::2")
	return host, inet
}

const vm6Spec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
    dhcp:
      range: 10.99.0.100-10.99.0.199
`

// TestVMIPv6 boots a QEMU guest on a dual-stack nat network: its kernel
// forms a SLAAC address from guestnet's router advertisement, takes the
// bridge's link-local address as default router, reaches the pretend
// internet over IPv6 through NAT66 (the far end sees the uplink's
// address), the internet cannot reach it, and anti-spoofing dropped none
// of its frames (its port is bound by its DHCPv4 lease).
func TestVMIPv6(t *testing.T) {
	l := newLab(t)
	host, inet := natHost6(l)
	l.Serve(inet, "[2001:db8:ff::10]:8080")
	l.Serve_(host, l.Spec(vm6Spec))
	script := `dhcp alpha
check "SLAAC address" retry 30 sh -c 'ip -6 -o addr show dev eth0 scope global | grep -v tentative | grep -q "inet6 fd42:99::"'
echo "GN-ADDR6 $(ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1 | head -1)"
check "default router is the bridge's link-local address" retry 10 sh -c 'ip -6 route show default | grep -q "via fe80::"'
check "pings the internet over IPv6" retry 10 ping -6 -c1 -W2 2001:db8:ff::10
check "reaches the internet over IPv6 (tcp), seen as the uplink" retry 5 sh -c 'nc -w 3 2001:db8:ff::10 8080 </dev/null | grep -q 2001:db8:fe::1'
httpd -p 8080 -h /www
echo GN-READY
sleep 10
`
	v := l.BootVM(host, "default", "alpha", "52:54:00:00:00:61", script)
	addr := strings.Fields(v.WaitFor(t, "GN-ADDR6", vmTimeout))
	v.WaitFor(t, "GN-READY", vmTimeout)
	if len(addr) < 2 || !strings.HasPrefix(addr[1], "fd42:99::") {
		t.Fatalf("guest's global IPv6 address: %v", addr)
	}
	l.must("ip", "-n", inet, "-6", "route", "add", "fd42:99::/64", "via", "2001:db8:fe::1")
	_, err := l.dialQuick(inet, "["+addr[1]+"]:8080")
	l.expect("internet -> guest over IPv6 (tcp)", false, err == nil)
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.SpoofDropped != 0 {
		t.Errorf("anti-spoofing dropped %d frames of a guest that only booted and used its own addresses:\n%s", st.SpoofDropped, l.Guestnet(host, "status"))
	}
	expectResults(t, v, vmTimeout, "SLAAC address", "default router is the bridge's link-local address",
		"pings the internet over IPv6", "reaches the internet over IPv6 (tcp), seen as the uplink")
}
