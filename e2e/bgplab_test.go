package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The BGP lab (issue 14): a LAN that is a bridge in its own namespace,
// and hosts on it, each a namespace with a veth lan0 into the bridge:
//
//	g1 10.71.0.10 --vg1-- [h1 10.10.0.1  AS 65001] --lan0--+
//	g2 10.72.0.10 --vg2-- [h2 10.10.0.2  AS 65002] --lan0--+-- br0 [lan]
//	g3 10.73.0.10 --vg3-- [h3 10.10.0.3  AS 65003] --lan0--+
//	client 10.20.0.2 --cl0-- [rtr 10.10.0.254 AS 65100, BIRD] --lan0--+
//	                          [frr 10.10.0.253 AS 65200, FRR] --lan0--+
//
// Each host runs `guestnet serve` with a routed network rt (10.7N.0.1/24)
// and a guest attached to it. The hosts speak eBGP, each its own AS, as
// RFC 7938 lays out a data centre: every session is eBGP, so next hop self
// and AS-path loop prevention need no configuration, and a route a host
// passes on (from BIRD to FRR) is a route any eBGP peer would accept; an
// iBGP full mesh would work too but needs every host to know every other.
// No host has a default route or a typed route: what crosses the LAN is
// routed by what BGP installed.

// bgpHost is one guestnet host of the lab.
type bgpHost struct {
	l       *Lab
	N       int    // 1, 2, 3
	NS      string // its namespace
	Addr    string // on the LAN: 10.10.0.N
	ASN     int    // 65000+N
	Subnet  string // its routed network rt: 10.7N.0.0/24
	Guest   string // the guest's namespace ("" before Start)
	GuestIP string // 10.7N.0.10
	spec    string // the config file serve reads (rewritten for reloads)
	D       *Daemon
}

// bgpPeer is a neighbour in a host's bgp section.
type bgpPeer struct {
	Addr string
	ASN  int
}

// hostConfig is what a host's config says beyond its routed network rt.
type hostConfig struct {
	Peers []bgpPeer
	Hold  string // "" = the default (9s)
	// MaxPrefixes of every peer (0 = not written: the default, 10,000).
	MaxPrefixes int
	Import      []string // nil = not written (the private ranges)
	NoBGP       bool     // no bgp section at all
	// Extra networks, as YAML flow mappings after their name:
	// "rt2: {mode: routed, bridge: grt1, ipv4: 10.81.0.1/24}".
	Extra []string
	// RtLine replaces rt's own line ("" = the routed network 10.7N.0.1/24).
	RtLine string
}

// bgpLab is the LAN and its guestnet hosts.
type bgpLab struct {
	*Lab
	LAN   string
	Hosts []*bgpHost
	dir   string
	ports int // LAN bridge ports made so far
}

// newBGPLab builds the LAN and n hosts on it (lan0 up with 10.10.0.N/24,
// nothing else); Start runs guestnet on them.
func newBGPLab(t *testing.T, n int) *bgpLab {
	b := &bgpLab{Lab: newLab(t), dir: t.TempDir()}
	b.LAN = b.NS("lan")
	b.must("ip", "-n", b.LAN, "link", "add", "br0", "type", "bridge")
	b.must("ip", "-n", b.LAN, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		h := &bgpHost{l: b.Lab, N: i, ASN: 65000 + i,
			Addr:    fmt.Sprintf("10.10.0.%d", i),
			Subnet:  fmt.Sprintf("10.7%d.0.0/24", i),
			GuestIP: fmt.Sprintf("10.7%d.0.10", i)}
		h.NS = b.NS(fmt.Sprintf("h%d", i))
		h.spec = filepath.Join(b.dir, fmt.Sprintf("h%d.yaml", i))
		b.OnLAN(h.NS, h.Addr+"/24")
		b.Hosts = append(b.Hosts, h)
	}
	return b
}

// OnLAN gives ns a veth lan0 with addr into the LAN's bridge.
func (b *bgpLab) OnLAN(ns, addr string) {
	b.ports++
	port := fmt.Sprintf("p%d", b.ports)
	b.Veth(ns, "lan0", addr, b.LAN, port, "")
	b.must("ip", "-n", b.LAN, "link", "set", port, "master", "br0")
}

// Mesh is the hosts other than h, as h's peers.
func (b *bgpLab) Mesh(h *bgpHost) []bgpPeer {
	var out []bgpPeer
	for _, o := range b.Hosts {
		if o != h {
			out = append(out, bgpPeer{o.Addr, o.ASN})
		}
	}
	return out
}

// Config is h's config text.
func (h *bgpHost) Config(c hostConfig) string {
	var s strings.Builder
	if !c.NoBGP {
		fmt.Fprintf(&s, "bgp:\n  asn: %d\n  peers:\n", h.ASN)
		for _, p := range c.Peers {
			hold := ""
			if c.Hold != "" {
				hold = ", hold: " + c.Hold
			}
			if c.MaxPrefixes != 0 {
				hold += fmt.Sprintf(", max_prefixes: %d", c.MaxPrefixes)
			}
			fmt.Fprintf(&s, "    - {address: %s, asn: %d%s}\n", p.Addr, p.ASN, hold)
		}
		if c.Import != nil {
			fmt.Fprintf(&s, "  import: [%s]\n", strings.Join(c.Import, ", "))
		}
	}
	rt := c.RtLine
	if rt == "" {
		rt = fmt.Sprintf("rt: {mode: routed, bridge: grt0, ipv4: 10.7%d.0.1/24}", h.N)
	}
	fmt.Fprintf(&s, "networks:\n  %s\n", rt)
	for _, e := range c.Extra {
		fmt.Fprintf(&s, "  %s\n", e)
	}
	return s.String()
}

// Start writes h's config, runs `guestnet serve` on it and, the first
// time, attaches h's guest to rt (static address 10.7N.0.10, gateway
// 10.7N.0.1).
func (h *bgpHost) Start(c hostConfig) {
	h.l.t.Helper()
	h.write(c)
	h.D = h.l.Serve_(h.NS, h.spec)
	if h.Guest == "" {
		h.Guest = h.l.Guest(h.NS, "rt", fmt.Sprintf("g%d", h.N), fmt.Sprintf("vg%d", h.N),
			h.GuestIP+"/24", fmt.Sprintf("10.7%d.0.1", h.N))
	}
}

// Restart starts serve again on the config file as it is (after a Kill).
func (h *bgpHost) Restart() {
	h.l.t.Helper()
	h.D = h.l.Serve_(h.NS, h.spec)
}

// Reload rewrites h's config and has the running daemon reload it
// (`guestnet apply` of serve's own config asks it to, and waits).
func (h *bgpHost) Reload(c hostConfig) {
	h.l.t.Helper()
	h.write(c)
	h.l.Guestnet(h.NS, "apply", h.spec)
}

func (h *bgpHost) write(c hostConfig) {
	h.l.t.Helper()
	if err := os.WriteFile(h.spec, []byte(h.Config(c)), 0o644); err != nil {
		h.l.t.Fatal(err)
	}
}

// kroute is one route of `ip -j route`.
type kroute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	Metric   int    `json:"metric"`
}

func (r kroute) String() string {
	return fmt.Sprintf("%s via %s dev %s proto %s metric %d", r.Dst, r.Gateway, r.Dev, r.Protocol, r.Metric)
}

// Routes lists ns's IPv4 main-table routes whose protocol is proto
// ("bgp", "boot", "kernel"; "" for all).
func (l *Lab) Routes(ns, proto string) []kroute {
	l.t.Helper()
	args := []string{"-j", "-4", "-n", ns, "route", "show"}
	if proto != "" {
		args = append(args, "proto", proto)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		l.t.Fatalf("ip %s: %v", strings.Join(args, " "), err)
	}
	var rs []kroute
	if err := json.Unmarshal(out, &rs); err != nil {
		l.t.Fatalf("ip -j route: %v\n%s", err, out)
	}
	for i := range rs {
		if rs[i].Protocol == "" && proto != "" {
			rs[i].Protocol = proto // iproute2 leaves out what the filter said
		}
	}
	return rs
}

// BGPRoutes is ns's protocol bgp routes as "DST via GW metric M", sorted:
// the form tables are compared in.
func (l *Lab) BGPRoutes(ns string) []string {
	var out []string
	for _, r := range l.Routes(ns, "bgp") {
		out = append(out, fmt.Sprintf("%s via %s metric %d", r.Dst, r.Gateway, r.Metric))
	}
	slices.Sort(out)
	return out
}

// routeVia is the wanted form of a bgp route in BGPRoutes.
func routeVia(dst, gw string) string { return fmt.Sprintf("%s via %s metric 186", dst, gw) }

// waitUntil polls ok every 50 ms until it holds or timeout passes; it
// returns how long it took, and fails the test on timeout.
func waitUntil(t testing.TB, what string, timeout time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if ok() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasAll reports whether have contains every one of want.
func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// hasNone reports whether no route in have is for one of dsts.
func hasNone(have []string, dsts ...string) bool {
	for _, r := range have {
		for _, d := range dsts {
			if strings.HasPrefix(r, d+" ") {
				return false
			}
		}
	}
	return true
}

// WaitMesh waits until every host has a bgp route (metric 186) to every
// other host's subnet via that host, and returns how long it took.
func (b *bgpLab) WaitMesh(timeout time.Duration) time.Duration {
	b.t.Helper()
	return waitUntil(b.t, "every host has the others' subnets by bgp", timeout, func() bool {
		for _, h := range b.Hosts {
			have := b.BGPRoutes(h.NS)
			for _, o := range b.Hosts {
				if o != h && !slices.Contains(have, routeVia(o.Subnet, o.Addr)) {
					return false
				}
			}
		}
		return true
	})
}

// proc is a peer daemon we did not write (BIRD, FRR), run in the
// foreground inside a namespace and ended by its PID when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// Proc starts args inside ns (`ip netns exec` execs it: the PID is the
// daemon's).
func (l *Lab) Proc(name, ns string, args ...string) *proc {
	l.t.Helper()
	p := &proc{name: name, log: &bytes.Buffer{}}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	l.t.Cleanup(func() {
		p.Stop()
		if l.t.Failed() {
			l.t.Logf("%s log:\n%s", name, lastLines(p.log.String(), 20))
		}
	})
	return p
}

// Stop ends the process (SIGTERM, by PID) and waits for it.
func (p *proc) Stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}

// pingLoop is busybox ping running in the background.
type pingLoop struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// PingLoop pings addr from ns every interval for d.
func (l *Lab) PingLoop(ns, addr string, interval, d time.Duration) *pingLoop {
	l.t.Helper()
	p := &pingLoop{}
	p.cmd = exec.Command("ip", "netns", "exec", ns, "busybox", "ping",
		"-i", fmt.Sprintf("%.2f", interval.Seconds()), "-w", fmt.Sprint(int(d.Seconds())), "-W", "1", addr)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// Wait waits for the loop's end and returns the echoes sent and answered.
func (p *pingLoop) Wait() (sent, got int, out string) {
	p.cmd.Wait()
	out = p.out.String()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "packets transmitted") {
			fmt.Sscanf(strings.TrimSpace(line), "%d packets transmitted, %d packets received", &sent, &got)
		}
	}
	return sent, got, out
}
