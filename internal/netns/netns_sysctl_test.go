package netns

import "testing"

func TestSysctlPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.ipv4.ip_forward":              "/proc/sys/net/ipv4/ip_forward",
		"net.ipv6.conf.eth0/100.accept_ra": "/proc/sys/net/ipv6/conf/eth0.100/accept_ra",
	} {
		if got := sysctlPath(key); got != want {
			t.Errorf("%s: %s, want %s", key, got, want)
		}
	}
}
