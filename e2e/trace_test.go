package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestTraceAgreesWithPackets builds the core scenarios and, for each path,
// compares trace's verdict with what a real TCP connection did.
func TestTraceAgreesWithPackets(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+`    forwards: [{proto: tcp, port: 2222, to: "10.99.0.10:8080"}]
  iso:
    mode: isolated
    bridge: giso0
  lab:
    mode: routed
    bridge: grt0
    ipv4: 10.99.1.1/24
`))
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "iso", "g2", "vg2", "10.98.0.10/24", "")
	l.must("ip", "-n", g2, "route", "add", "default", "dev", "eth0")
	g3 := l.Guest(host, "lab", "g3", "vg3", "10.99.1.10/24", "10.99.1.1")
	l.must("ip", "-n", inet, "route", "add", "10.99.0.0/23", "via", "198.51.100.1")
	for _, s := range []struct{ ns, addr string }{{inet, "203.0.113.10:8080"}, {g1, "10.99.0.10:8080"}, {g3, "10.99.1.10:8080"}} {
		l.Serve(s.ns, s.addr)
	}
	type path struct {
		what, fromNS, to string
		args             []string
	}
	paths := []path{
		{"nat guest -> internet", g1, "203.0.113.10:8080", []string{"10.99.0.10", "203.0.113.10", "tcp/8080"}},
		{"internet -> nat guest", inet, "10.99.0.10:8080", []string{"203.0.113.10", "10.99.0.10", "tcp/8080"}},
		{"isolated guest -> internet", g2, "203.0.113.10:8080", []string{"--in", "giso0", "10.98.0.10", "203.0.113.10", "tcp/8080"}},
		{"internet -> routed guest", inet, "10.99.1.10:8080", []string{"203.0.113.10", "10.99.1.10", "tcp/8080"}},
		{"nat guest -> routed guest", g1, "10.99.1.10:8080", []string{"10.99.0.10", "10.99.1.10", "tcp/8080"}},
		// --live routes the destination the port forward DNATs to.
		{"internet -> port forward -> nat guest", inet, "198.51.100.1:2222", []string{"198.51.100.126", "198.51.100.1", "tcp/2222"}},
	}
	var rows []string
	check := func(p path, when string) {
		_, err := l.Dial(p.fromNS, p.to)
		real := err == nil
		out, _, code := l.Run(host, append([]string{"trace", "--live"}, p.args...)...)
		sim := code == 0
		if !strings.Contains(out, "live: AGREE") {
			t.Errorf("%s%s: the kernel's route decision disagrees with the simulation:\n%s", p.what, when, out)
		}
		stop := ""
		if !sim {
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, " DROP ") {
					stop = strings.Join(strings.Fields(line)[2:], " ")
				}
			}
		}
		rows = append(rows, fmt.Sprintf("| %s%s | %v | %v | %s |", p.what, when, real, sim, stop))
		if real != sim {
			t.Errorf("%s%s: real packets say delivered=%v, trace says %v\n%s", p.what, when, real, sim, out)
		}
	}
	for _, p := range paths {
		check(p, "")
	}
	l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	check(paths[0], " (ip_forward=0)")
	l.In(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.In(host, "iptables", "-P", "FORWARD", "DROP")
	check(paths[0], " (Docker-style FORWARD DROP)")
	t.Logf("\n| path | real | trace | trace stops at |\n|---|---|---|---|\n%s", strings.Join(rows, "\n"))
}

// TestTraceSaysWhatItDoesNotSimulate: a foreign DNAT (iptables) and a
// policy routing rule are outside the simulation; trace names both where
// the packet passes them.
func TestTraceSaysWhatItDoesNotSimulate(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec))
	l.In(host, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9090", "-j", "DNAT", "--to-destination", "10.99.0.10:8080")
	l.In(host, "ip", "rule", "add", "from", "10.99.0.0/24", "lookup", "100", "priority", "1000")
	out, _, _ := l.Run(host, "trace", "198.51.100.126", "198.51.100.1", "tcp/9090")
	if !strings.Contains(out, "not simulated: the DNAT rules of table ip nat chain PREROUTING") {
		t.Errorf("trace does not name the foreign DNAT it cannot follow:\n%s", out)
	}
	out, _, _ = l.Run(host, "trace", "10.99.0.10", "203.0.113.10", "tcp/8080")
	if !strings.Contains(out, "not simulated: policy routing (ip rule 1000: from 10.99.0.0/24 lookup 100)") {
		t.Errorf("trace does not name the policy routing rule:\n%s", out)
	}
	t.Logf("\n%s", out)
}
