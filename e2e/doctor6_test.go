package e2e

import (
	"strings"
	"testing"
)

// doctor6Spec is one dual-stack nat network.
const doctor6Spec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
`

// TestDoctorIPv6 builds hosts broken one IPv6 way each and checks that
// doctor names that, and only that (guestnet serve is not running in any
// of them: the network's guests get no router advertisements, a warning
// every case shares).
func TestDoctorIPv6(t *testing.T) {
	cases := []struct {
		name  string
		setup func(l *Lab, host string)
		want  string   // the checks, in order
		says  []string // what the findings must say
	}{
		{"no daemon for router advertisements", func(l *Lab, host string) {}, "ipv6-ra",
			[]string{"guestnet serve is not running: no router advertisements"}},
		{"IPv6 forwarding off", func(l *Lab, host string) {
			l.In(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
		}, "ip-forward,ipv6-ra", []string{"IPv6 forwarding is off", "net.ipv6.conf.all.forwarding = 0"}},
		{"the uplink's default route by RA with accept_ra 1, forwarding on", func(l *Lab, host string) {
			l.must("ip", "-n", host, "-6", "route", "replace", "default", "via", "2001:db8:1::ff", "dev", "up0", "proto", "ra")
			l.In(host, "sysctl", "-qw", "net.ipv6.conf.up0.accept_ra=1")
		}, "accept-ra,ipv6-ra", []string{"up0 takes its IPv6 default route from router advertisements", "sysctl -w net.ipv6.conf.up0.accept_ra=2"}},
		{"ip6tables FORWARD DROP (Docker with ip6tables)", func(l *Lab, host string) {
			l.In(host, "ip6tables", "-P", "FORWARD", "DROP")
		}, "forward-drop,ipv6-ra", []string{"table ip6 filter chain FORWARD drops the forwarded IPv6 traffic of gnat0", "ip6tables -I FORWARD -i gnat0 -j ACCEPT",
			"bridge-nf-call-ip6tables = 1: bridged frames cross it too"}},
		{"the bridge lost its IPv6 address", func(l *Lab, host string) {
			l.must("ip", "-n", host, "-6", "addr", "del", "fd42:99::1/64", "dev", "gnat0")
		}, "bridge,ipv6-ra", []string{"bridge gnat0 lacks its IPv6 address fd42:99::1/64"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t)
			host, _ := trace6Host(l)
			l.Guestnet(host, "apply", l.Spec(doctor6Spec))
			c.setup(l, host)
			fs, code := l.doctor(host)
			var text []string
			for _, f := range fs {
				text = append(text, f.What+" | "+strings.Join(f.Evidence, "; ")+" | "+f.Fix)
				t.Logf("%s %s: %s | evidence %v | fix %s", f.Severity, f.Check, f.What, f.Evidence, f.Fix)
			}
			if code != 1 || checks(fs) != c.want {
				t.Fatalf("doctor: exit %d, checks %q, want %q", code, checks(fs), c.want)
			}
			for _, s := range c.says {
				if !strings.Contains(strings.Join(text, "\n"), s) {
					t.Errorf("the findings do not say %q", s)
				}
			}
		})
	}
}
