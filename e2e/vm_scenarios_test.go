package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/report"
)

// Scenarios with real QEMU guests. `make vm` runs only these.

const vmTimeout = 150 * time.Second // TCG on a shared 2-core machine

const vmNATSpec = dhcpSpec + `    dns:
      domain: lab.internal
`

func TestVMNATWithServe(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Serve(inet, "203.0.113.10:8080")
	l.Serve_(host, l.Spec(vmNATSpec))
	spoof := map[string]string{"alpha": "10.99.0.221", "bravo": "10.99.0.222"}
	guest := func(me, other string) string {
		return `dhcp ` + me + `
check "resolves ` + other + `.lab.internal" retry 30 nslookup ` + other + `.lab.internal
check "pings ` + other + `" retry 10 ping -c1 -W1 ` + other + `.lab.internal
check "reaches the internet (tcp)" retry 5 sh -c 'nc -w 3 203.0.113.10 8080 </dev/null | grep -q 198.51.100.1'
check "a spoofed source is dropped" sh -c 'ip addr add ` + spoof[me] + `/32 dev eth0; ping -c2 -W1 -I ` + spoof[me] + ` 10.99.0.1; r=$?; ip addr del ` + spoof[me] + `/32 dev eth0; [ $r -ne 0 ]'
check "its own source still passes" ping -c1 -W1 10.99.0.1
httpd -p 8080 -h /www
echo GN-READY
sleep 10
`
	}
	a := l.BootVM(host, "default", "alpha", "52:54:00:00:00:01", guest("alpha", "bravo"))
	b := l.BootVM(host, "default", "bravo", "52:54:00:00:00:02", guest("bravo", "alpha"))
	la := strings.Fields(a.WaitFor(t, "GN-LEASE", vmTimeout))
	lb := strings.Fields(b.WaitFor(t, "GN-LEASE", vmTimeout))
	if len(la) < 2 || len(lb) < 2 || la[1] == lb[1] {
		t.Fatalf("leases: %v %v (want two distinct addresses)", la, lb)
	}
	t.Logf("guests got %s and %s from guestnet's DHCP", la[1], lb[1])
	a.WaitFor(t, "GN-READY", vmTimeout)
	b.WaitFor(t, "GN-READY", vmTimeout)
	// While the guests run, both TAPs are bound by their leases, and their
	// spoofed frames (sent before GN-READY) were counted.
	var st report.Status
	if err := json.Unmarshal([]byte(l.Guestnet(host, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	var bound []string
	for _, pg := range st.Networks[0].Guard {
		if pg.State == "bound" && len(pg.IPs) == 1 {
			bound = append(bound, pg.IPs[0].String())
		}
	}
	if !slices.Contains(bound, la[1]) || !slices.Contains(bound, lb[1]) || st.SpoofDropped == 0 {
		t.Errorf("status: ports bound to %v (want %s and %s by lease), %d frames dropped as spoofed\n%s", bound, la[1], lb[1], st.SpoofDropped, l.Guestnet(host, "status"))
	}
	l.must("ip", "-n", inet, "route", "add", "10.99.0.0/24", "via", "198.51.100.1")
	_, err := l.dialQuick(inet, la[1]+":8080")
	l.expect("internet -> guest alpha's httpd", false, err == nil)
	expectResults(t, a, vmTimeout, "resolves bravo.lab.internal", "pings bravo", "reaches the internet (tcp)", "a spoofed source is dropped", "its own source still passes")
	expectResults(t, b, vmTimeout, "resolves alpha.lab.internal", "pings alpha", "reaches the internet (tcp)", "a spoofed source is dropped", "its own source still passes")
}

func TestVMIsolated(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+"  iso:\n    mode: isolated\n    bridge: giso0\n"))
	guest := func(me, other string) string {
		return `ip addr add ` + me + `/24 dev eth0; ip route add default dev eth0
check "reaches ` + other + `" retry 30 ping -c1 -W1 ` + other + `
check "not the host" sh -c '! ping -c2 -W1 198.51.100.1'
check "not the internet" sh -c '! ping -c2 -W1 203.0.113.10'
`
	}
	a := l.BootVM(host, "iso", "iso1", "52:54:00:00:01:01", guest("10.98.0.11", "10.98.0.12"))
	b := l.BootVM(host, "iso", "iso2", "52:54:00:00:01:02", guest("10.98.0.12", "10.98.0.11"))
	expectResults(t, a, vmTimeout, "reaches 10.98.0.12", "not the host", "not the internet")
	expectResults(t, b, vmTimeout, "reaches 10.98.0.11", "not the host", "not the internet")
}

func TestVMRouted(t *testing.T) {
	l := newLab(t)
	host, peer := routedHost(l)
	l.Serve(peer, "10.10.0.2:8080")
	l.Serve_(host, l.Spec(`
networks:
  lab:
    mode: routed
    bridge: grt0
    ipv4: 10.99.1.1/24
    dhcp:
      range: 10.99.1.100-10.99.1.150
`))
	l.In(peer, "sh", "-c", strings.TrimSpace(l.Guestnet(host, "routes", "lab", "--peer", "10.10.0.2")))
	g := l.BootVM(host, "lab", "routed1", "52:54:00:00:02:01", `dhcp routed1
check "reaches the peer with its own address" retry 5 sh -c 'nc -w 3 10.10.0.2 8080 </dev/null | grep -q "^10.99.1."'
httpd -p 8080 -h /www
echo GN-READY
sleep 8
`)
	ip := strings.Fields(g.WaitFor(t, "GN-LEASE", vmTimeout))[1]
	g.WaitFor(t, "GN-READY", vmTimeout)
	_, err := l.dialQuick(peer, ip+":8080")
	l.expect("peer with guestnet's return route -> guest httpd", true, err == nil)
	expectResults(t, g, vmTimeout, "reaches the peer with its own address")
}

// TestVMLeaseSurvivesKill9: the guest holds a lease, the daemon is killed
// with SIGKILL and started again, and the guest's renewal keeps its address.
func TestVMLeaseSurvivesKill9(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	d := l.Serve_(host, spec)
	g := l.BootVM(host, "default", "renew1", "52:54:00:00:03:01", `udhcpc -i eth0 -b -t 20 -T 1 -x hostname:renew1 -s /udhcpc.script
echo GN-WAITING
sleep 12
kill -USR1 $(pidof udhcpc)
sleep 4
`)
	bound := strings.Fields(g.WaitFor(t, "GN-DHCP bound", vmTimeout))
	g.WaitFor(t, "GN-WAITING", vmTimeout)
	d.Kill()
	l.Serve_(host, spec)
	renew := strings.Fields(g.WaitFor(t, "GN-DHCP renew", vmTimeout))
	if len(bound) < 3 || len(renew) < 3 || renew[2] != bound[2] {
		t.Fatalf("bound %v, after SIGKILL and restart renewed %v", bound, renew)
	}
	var leases []struct{ IP, Hostname string }
	json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases)
	if len(leases) != 1 || leases[0].IP != bound[2] || leases[0].Hostname != "renew1" {
		t.Errorf("leases after restart: %+v", leases)
	}
	t.Logf("guest kept %s across SIGKILL of the daemon", bound[2])
}

// TestVMPortForward: a port forward reaches the httpd in a real guest from
// the pretend internet.
func TestVMPortForward(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Serve_(host, l.Spec(dhcpSpec+`    forwards:
      - {proto: tcp, port: 8080, to: "10.99.0.10:80"}
`))
	g := l.BootVM(host, "default", "web1", "02:00:00:00:00:aa", `dhcp web1
httpd -p 80 -h /www
echo GN-READY
sleep 8
`)
	if lease := strings.Fields(g.WaitFor(t, "GN-LEASE", vmTimeout)); len(lease) < 2 || lease[1] != "10.99.0.10" {
		t.Fatalf("static DHCP host got %v, want 10.99.0.10", lease)
	}
	g.WaitFor(t, "GN-READY", vmTimeout)
	body, err := l.httpGet(inet, "198.51.100.1:8080")
	l.expect("internet -> host:8080 -> guest httpd", true, err == nil && strings.Contains(body, "guestnet"))
	if err != nil || !strings.Contains(body, "guestnet") {
		t.Logf("response: %q %v", body, err)
	}
}
