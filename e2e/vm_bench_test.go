package e2e

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkVMBootToLease boots the same guest b.N times against guestnet's
// DHCP and b.N times against dnsmasq on the same bridge, alternating, and
// prints the medians: time from QEMU start to the guest holding a lease
// (most of it is the TCG boot, the same for both).
//
//	sudo go test ./e2e -run '^$' -bench VMBootToLease -benchtime 5x
func BenchmarkVMBootToLease(b *testing.B) {
	l := newLab(b)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	boot := func(name string) time.Duration {
		v := l.BootVM(host, "default", name, "52:54:00:00:09:01", "dhcp "+name+"\n")
		v.WaitFor(b, "GN-LEASE", vmTimeout)
		d := time.Since(v.booted)
		v.WaitFor(b, "GN-END", vmTimeout)
		<-v.done
		return d
	}
	var gn, dm []time.Duration
	for i := 0; i < b.N; i++ {
		d := l.Serve_(host, spec)
		gn = append(gn, boot(fmt.Sprintf("g%d", i)))
		d.Stop()
		// dnsmasq on the same bridge, address and range.
		l.Guestnet(host, "apply", spec)
		dns := exec.Command("ip", "netns", "exec", host, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--port=0",
			"--interface=gnat0", "--bind-interfaces", "--dhcp-range=10.99.0.100,10.99.0.199,1h", "--dhcp-authoritative",
			"--no-ping", "--dhcp-leasefile="+b.TempDir()+"/leases", "--user=root", "--pid-file=")
		if err := dns.Start(); err != nil {
			b.Fatal(err)
		}
		l.waitUDP(host, 67)
		dm = append(dm, boot(fmt.Sprintf("d%d", i)))
		dns.Process.Kill()
		dns.Wait()
	}
	med := func(ds []time.Duration) time.Duration { s := slices.Clone(ds); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(float64(med(gn).Milliseconds()), "ms-guestnet")
	b.ReportMetric(float64(med(dm).Milliseconds()), "ms-dnsmasq")
	var row []string
	for _, x := range []time.Duration{med(gn), med(dm)} {
		row = append(row, fmt.Sprintf("%.0f ms", float64(x.Microseconds())/1000))
	}
	b.Logf("\n| boot to lease (median of %d) | guestnet serve | dnsmasq | dnsmasq / guestnet |\n|---|---|---|---|\n| QEMU TCG guest, udhcpc | %s | %.2f× |",
		b.N, strings.Join(row, " | "), float64(med(dm))/float64(med(gn)))
}
