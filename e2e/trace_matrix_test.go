package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/trace"
)

// traceMatrixSpec has every kind of rule guestnet renders: the host's
// services (dns: keeps DNS for the bridge), port forwards by port alone and
// limited to sources, a floating address, peers (lab may reach default),
// guest_to_host: all, and a network with no peers.
const traceMatrixSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dns: {domain: lab.internal}
    peers: [lab]
    forwards:
      - {proto: tcp, port: 2222, to: "10.99.0.10:8080"}
      - {proto: udp, port: 5353, to: 10.99.0.10}
      - {proto: tcp, port: 8081, to: "10.99.0.10:8080", from: [203.0.113.0/24]}
    floating: [{public: 198.51.100.50, guest: 10.99.0.20}]
  lab:
    mode: routed
    bridge: grt0
    ipv4: 10.99.1.1/24
    guest_to_host: all
  other:
    mode: nat
    bridge: gnat1
    ipv4: 10.99.2.1/24
`

// serveAs answers each TCP connection on addr in ns with "NAME SOURCE"
// (who answered, and the source it saw), until the test ends.
func (l *Lab) serveAs(ns, addr, name string) {
	l.t.Helper()
	l.answerTCP(ns, addr, func(peer net.IP) string { return name + " " + peer.String() })
}

// udpAs answers each datagram on addr in ns with "NAME SOURCE".
func (l *Lab) udpAs(ns, addr, name string) {
	pc := l.listenUDP(ns, addr)
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name+" "+from.(*net.UDPAddr).IP.String()), from)
		}
	}()
}

// probe sends one real packet from ns (source laddr, "" for the route's)
// and returns who answered and the source they saw, or "dropped". ICMP
// echo says only "answered".
func (l *Lab) probe(ns, laddr, proto, raddr string) (who, seen string) {
	if proto == "icmp" {
		if l.Ping(ns, raddr) {
			return "answered", ""
		}
		return "dropped", ""
	}
	n, err := netns.Open(ns)
	if err != nil {
		l.t.Fatal(err)
	}
	defer n.Close()
	d := net.Dialer{Timeout: 2 * time.Second}
	if laddr != "" {
		if proto == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(laddr)}
		}
	}
	var c net.Conn
	if err := n.Do(func() (err error) { c, err = d.Dial(proto+"4", raddr); return }); err != nil {
		return "dropped", ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if proto == "udp" {
		c.Write([]byte("who"))
	}
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	f := strings.Fields(string(buf[:k]))
	if err != nil || len(f) != 2 {
		return "dropped", ""
	}
	return f[0], f[1]
}

// TestTraceMatrix: for every kind of rule guestnet renders, trace's verdict
// (who the packet reaches: the host, a guest, the internet, or dropped)
// equals what a real TCP, UDP or ICMP packet between namespaces did. Rows
// that cross a port forward or a floating address must name it.
func TestTraceMatrix(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Guestnet(host, "apply", l.Spec(traceMatrixSpec))
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	gf := l.Guest(host, "default", "gf", "vgf", "10.99.0.20/24", "10.99.0.1")
	g3 := l.Guest(host, "lab", "g3", "vg3", "10.99.1.10/24", "10.99.1.1")
	g4 := l.Guest(host, "other", "g4", "vg4", "10.99.2.10/24", "10.99.2.1")
	l.must("ip", "-n", inet, "route", "add", "10.99.0.0/22", "via", "198.51.100.1")
	names := map[string]string{"10.99.0.10": "g1", "10.99.0.20": "gf", "10.99.1.10": "g3", "10.99.2.10": "g4", "203.0.113.10": "inet"}
	for addr, name := range names {
		ns := map[string]string{"g1": g1, "gf": gf, "g3": g3, "g4": g4, "inet": inet}[name]
		l.serveAs(ns, addr+":8080", name)
	}
	l.udpAs(g1, "10.99.0.10:5353", "g1")
	// The host answers on its own ports, so a packet that ends at the
	// host (and not at a guest) says so. Nothing else listens there:
	// guestnet serve is not running.
	for _, p := range []string{"22", "53", "2222", "8081", "8082"} {
		l.serveAs(host, "0.0.0.0:"+p, "host")
	}
	for _, p := range []string{"53", "67", "5353"} {
		l.udpAs(host, "0.0.0.0:"+p, "host")
	}

	type row struct {
		what      string
		ns, laddr string // where the probe starts, and its source if not the route's
		src, dst  string
		proto     string
		port      int
		want      string // who must answer
		names     string // what the trace must say (a forward, a floating address, the drop)
		seen      string // the source the answerer must see, if checked
	}
	rows := []row{
		{"guest -> gateway udp/53", g1, "", "10.99.0.10", "10.99.0.1", "udp", 53, "host", "udp dport 53 accept", ""},
		{"guest -> gateway tcp/53", g1, "", "10.99.0.10", "10.99.0.1", "tcp", 53, "host", "tcp dport 53 accept", ""},
		{"guest -> gateway udp/67", g1, "", "10.99.0.10", "10.99.0.1", "udp", 67, "host", "udp dport 67 accept", ""},
		{"guest -> gateway icmp", g1, "", "10.99.0.10", "10.99.0.1", "icmp", 0, "answered", "meta l4proto icmp accept", ""},
		{"guest -> gateway tcp/22", g1, "", "10.99.0.10", "10.99.0.1", "tcp", 22, "dropped", `chain input-default: reject`, ""},
		{"guest -> gateway tcp/22, guest_to_host: all", g3, "", "10.99.1.10", "10.99.1.1", "tcp", 22, "host", "", ""},
		{"internet -> forward tcp/2222", inet, "203.0.113.10", "203.0.113.10", "198.51.100.1", "tcp", 2222, "g1", "port forward tcp/2222 -> 10.99.0.10:8080", "203.0.113.10"},
		{"internet -> forward udp/5353", inet, "203.0.113.10", "203.0.113.10", "198.51.100.1", "udp", 5353, "g1", "port forward udp/5353 -> 10.99.0.10:5353", "203.0.113.10"},
		{"internet (in from:) -> forward tcp/8081", inet, "203.0.113.10", "203.0.113.10", "198.51.100.1", "tcp", 8081, "g1", "port forward tcp/8081 -> 10.99.0.10:8080 from 203.0.113.0/24", ""},
		{"internet (not in from:) -> tcp/8081", inet, "198.51.100.126", "198.51.100.126", "198.51.100.1", "tcp", 8081, "host", "is an address of this host", ""},
		{"internet -> tcp/8082 nobody forwards", inet, "203.0.113.10", "203.0.113.10", "198.51.100.1", "tcp", 8082, "host", "is an address of this host", ""},
		{"internet -> floating address tcp", inet, "203.0.113.10", "203.0.113.10", "198.51.100.50", "tcp", 8080, "gf", "floating address 198.51.100.50 is guest 10.99.0.20", "203.0.113.10"},
		{"internet -> floating address icmp", inet, "", "198.51.100.126", "198.51.100.50", "icmp", 0, "answered", "floating address 198.51.100.50 is guest 10.99.0.20", ""},
		{"floating guest -> internet", gf, "", "10.99.0.20", "203.0.113.10", "tcp", 8080, "inet", "leaves as its floating address 198.51.100.50", "198.51.100.50"},
		{"nat guest -> internet (masquerade)", g1, "", "10.99.0.10", "203.0.113.10", "tcp", 8080, "inet", "source 10.99.0.10 becomes 198.51.100.1", "198.51.100.1"},
		{"internet -> nat guest directly", inet, "203.0.113.10", "203.0.113.10", "10.99.0.10", "tcp", 8080, "dropped", `chain to-default: reject`, ""},
		{"internet -> gateway udp/53 (dns: for the bridge)", inet, "203.0.113.10", "203.0.113.10", "10.99.0.1", "udp", 53, "dropped", `chain dns-default: iifname != "gnat0" iifname != "lo" drop`, ""},
		{"other -> default (no peers)", g4, "", "10.99.2.10", "10.99.0.10", "tcp", 8080, "dropped", `iifname != "gnat0" reject`, ""},
		{"lab -> default (default peers: [lab])", g3, "", "10.99.1.10", "10.99.0.10", "tcp", 8080, "g1", `chain to-default: iifname "grt0" accept`, "10.99.1.10"},
		{"default -> lab (lab names no peers)", g1, "", "10.99.0.10", "10.99.1.10", "tcp", 8080, "dropped", `iifname != "grt0" reject`, ""},
		// New namespaces start with bridge-nf-call-iptables=1: a guest's
		// own forward comes back to the port it came from (breaker 2).
		{"guest -> its own forward (br_netfilter on)", g1, "", "10.99.0.10", "198.51.100.1", "tcp", 2222, "dropped", "hairpin off", ""},
		{"guest -> a neighbour's floating address (hairpin)", g1, "", "10.99.0.10", "198.51.100.50", "tcp", 8080, "gf", "floating address 198.51.100.50 is guest 10.99.0.20", ""},
	}
	var table []string
	check := func(r row, when string) {
		raddr := r.dst
		target := r.proto
		if r.proto != "icmp" {
			raddr = fmt.Sprintf("%s:%d", r.dst, r.port)
			target = fmt.Sprintf("%s/%d", r.proto, r.port)
		}
		got, seen := l.probe(r.ns, r.laddr, r.proto, raddr)
		out, errs, code := l.Run(host, "-o", "json", "trace", r.src, r.dst, target)
		var res trace.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%s: trace -o json: exit %d, %v\n%s%s", r.what, code, err, out, errs)
		}
		sim := "dropped"
		switch {
		case res.CannotTell:
			sim = "cannot tell"
		case res.Delivered && r.proto == "icmp":
			sim = "answered"
		case res.Delivered && res.Local:
			sim = "host"
		case res.Delivered:
			sim = names[res.Dst.String()]
		}
		var said []string
		for _, h := range res.Hops {
			said = append(said, h.Stage+" "+h.Verdict+" "+h.Detail)
		}
		text := strings.Join(said, "\n")
		named := ""
		switch {
		case res.Forward != nil:
			named = fmt.Sprintf("forward %s/%d -> %s:%d", res.Forward.Proto, res.Forward.Port, res.Forward.To, res.Forward.ToPort)
		case res.Floating != nil:
			named = fmt.Sprintf("floating %s = %s", res.Floating.Public, res.Floating.Guest)
		case !res.Delivered && len(res.Hops) > 0:
			named = res.Hops[len(res.Hops)-1].Detail
		default: // the rule that let the first direction through
			for _, h := range res.Hops {
				if h.Stage == "reply" {
					break
				}
				if h.Verdict == "accept" {
					named = h.Detail
				}
			}
		}
		table = append(table, fmt.Sprintf("| %-60s | %-9s | %-9s | %-13s | %s |", r.what+when, sim, got, seen, named))
		if got != r.want {
			t.Errorf("%s%s: real packets reach %q, want %q", r.what, when, got, r.want)
		}
		if sim != got {
			t.Errorf("%s%s: trace says %q, real packets %q\n%s", r.what, when, sim, got, text)
		}
		if r.seen != "" && got == r.want && seen != r.seen {
			t.Errorf("%s: %s saw source %s, want %s", r.what, got, seen, r.seen)
		}
		if r.names != "" && !strings.Contains(text, r.names) {
			t.Errorf("%s: trace does not say %q:\n%s", r.what, r.names, text)
		}
		if (sim == "dropped") != (code == 1) || (sim != "dropped" && sim != "cannot tell" && code != 0) {
			t.Errorf("%s: trace exit %d for %q", r.what, code, sim)
		}
	}
	for _, r := range rows {
		check(r, "")
	}
	// Docker's FORWARD drops by policy: guestnet's DOCKER-USER rules let
	// its networks through, and trace reads them with the same matcher.
	dockerLike(l, host, true)
	l.Guestnet(host, "apply", l.Spec(traceMatrixSpec))
	for _, i := range []int{6, 11, 13, 14, 17, 18} {
		check(rows[i], " (Docker FORWARD DROP)")
	}
	t.Logf("\n| path | trace | packets | source seen | trace names |\n|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}
