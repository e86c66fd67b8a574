package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// host is a namespace served by `guestnet serve`, on the LAN as
// 10.10.0.N, AS 65000+N, with a routed network rt 10.7N.0.1/24.
type host struct {
	l     *lab
	n     int
	ns    string
	addr  string
	asn   int
	peers []peer
	conf  string
	serve *exec.Cmd
}

type peer struct {
	addr string
	asn  int
}

func (l *lab) host(n int, net *lan) *host {
	h := &host{l: l, n: n, ns: l.netns(fmt.Sprintf("h%d", n)), addr: fmt.Sprintf("10.10.0.%d", n), asn: 65000 + n}
	h.conf = filepath.Join(l.dir, fmt.Sprintf("h%d.yaml", n))
	net.plug(h.ns, h.addr)
	return h
}

// config writes the host's config: rt and extra networks.
func (h *host) config(extra []string) {
	var s strings.Builder
	fmt.Fprintf(&s, "bgp:\n  asn: %d\n  peers:\n", h.asn)
	for _, p := range h.peers {
		fmt.Fprintf(&s, "    - {address: %s, asn: %d}\n", p.addr, p.asn)
	}
	fmt.Fprintf(&s, "networks:\n  rt: {mode: routed, bridge: grt0, ipv4: 10.7%d.0.1/24}\n", h.n)
	for _, e := range extra {
		fmt.Fprintf(&s, "  %s\n", e)
	}
	if err := os.WriteFile(h.conf, []byte(s.String()), 0o644); err != nil {
		die(err)
	}
}

func (h *host) guestnet(args ...string) string {
	return run(append([]string{*bin, "--netns", h.ns, "--state-dir", filepath.Join(h.l.dir, "state")}, args...)...)
}

// start runs serve on the config (it applies it first) and waits until
// its API answers.
func (h *host) start() {
	h.serve = h.l.start(fmt.Sprintf("serve-h%d", h.n), "", *bin, "--netns", h.ns, "--state-dir",
		filepath.Join(h.l.dir, "state"), "serve", "--config", h.conf)
	waitFor(fmt.Sprintf("serve on h%d answers", h.n), 30*time.Second, func() bool {
		if h.serve.ProcessState != nil {
			die(fmt.Errorf("serve on h%d ended:\n%s", h.n, h.l.logTail(fmt.Sprintf("serve-h%d", h.n))))
		}
		out, err := exec.Command(*bin, "--netns", h.ns, "--state-dir", filepath.Join(h.l.dir, "state"), "leases").CombinedOutput()
		return err == nil && strings.Contains(string(out), "from the daemon")
	})
}

// reload rewrites the config and has serve apply it (`guestnet apply`
// of serve's own config asks it to reload, and waits for it).
func (h *host) reload(extra []string) time.Duration {
	h.config(extra)
	t0 := time.Now()
	h.guestnet("apply", h.conf)
	return time.Since(t0)
}

// bird is BIRD 2 in its own namespace, foreground, with its own paths.
type bird struct {
	l    *lab
	cmd  *exec.Cmd
	sock string
}

func (l *lab) bird(ns, conf string) *bird {
	path := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		die(err)
	}
	b := &bird{l: l, sock: filepath.Join(l.dir, "bird.ctl")}
	b.cmd = l.start("bird", ns, "bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(l.dir, "bird.pid"))
	waitFor("bird answers", 10*time.Second, func() bool {
		return exec.Command("birdc", "-s", b.sock, "show", "status").Run() == nil
	})
	return b
}

func (b *bird) c(args ...string) string {
	return run(append([]string{"birdc", "-s", b.sock}, args...)...)
}

// birdConf: eBGP with the given hosts, exporting its static protocols
// (both start disabled: `birdc enable` is the measured announcement).
func birdConf(hosts []*host, one string, bulk []string) string {
	var s strings.Builder
	s.WriteString("log stderr all;\nrouter id 10.10.0.254;\nprotocol device { scan time 1; }\n")
	fmt.Fprintf(&s, "protocol static one { disabled; ipv4; route %s blackhole; }\n", one)
	s.WriteString("protocol static bulk { disabled; ipv4;\n")
	for _, p := range bulk {
		fmt.Fprintf(&s, "  route %s blackhole;\n", p)
	}
	s.WriteString("}\n")
	for _, h := range hosts {
		fmt.Fprintf(&s, "protocol bgp h%d { local 10.10.0.254 as 65100; neighbor %s as %d; hold time 9; connect retry time 2; ipv4 { import none; export where source = RTS_STATIC; }; }\n",
			h.n, h.addr, h.asn)
	}
	return s.String()
}

// frr is FRR's zebra + bgpd in one namespace, as user frr (zebra refuses
// root, which is not in group frrvty), with paths in the lab folder.
type frr struct {
	zebra, bgpd *exec.Cmd
}

func (l *lab) frr(ns string, hosts []*host) *frr {
	u, err := user.Lookup("frr")
	if err != nil {
		die(fmt.Errorf("user frr: %v (apt-get install -y frr makes it)", err))
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := filepath.Join(l.dir, "frr")
	os.Mkdir(dir, 0o755)
	var s strings.Builder
	s.WriteString("frr defaults traditional\nhostname frr\nrouter bgp 65200\n bgp router-id 10.10.0.253\n no bgp ebgp-requires-policy\n")
	for _, h := range hosts {
		fmt.Fprintf(&s, " neighbor %s remote-as %d\n neighbor %s timers 3 9\n neighbor %s timers connect 2\n", h.addr, h.asn, h.addr, h.addr)
	}
	for name, text := range map[string]string{"zebra.conf": "", "bgpd.conf": s.String()} {
		os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
		os.Chown(filepath.Join(dir, name), uid, gid)
	}
	os.Chown(dir, uid, gid)
	args := func(d string) []string {
		return []string{"/usr/lib/frr/" + d, "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-u", "frr", "-g", "frr", "-P", "0", "--log", "stdout"}
	}
	f := &frr{zebra: l.start("zebra", ns, args("zebra")...)}
	waitFor("zebra's socket", 10*time.Second, func() bool { _, err := os.Stat(filepath.Join(dir, "zserv.api")); return err == nil })
	f.bgpd = l.start("bgpd", ns, args("bgpd")...)
	return f
}

// reloads counts the reloads serve has logged so far.
func (h *host) reloads() int {
	b, _ := os.ReadFile(filepath.Join(h.l.dir, fmt.Sprintf("serve-h%d.log", h.n)))
	return strings.Count(string(b), "msg=reloaded")
}

// reloadedAt waits for the reload after the first `before` ones and
// returns the time serve logged it.
func (h *host) reloadedAt(before int) time.Time {
	var at time.Time
	waitFor(fmt.Sprintf("serve on h%d logs its reload", h.n), 10*time.Minute, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.l.dir, fmt.Sprintf("serve-h%d.log", h.n)))
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "msg=reloaded") {
				if n++; n > before {
					f := strings.Fields(line)
					t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
					at = t
					return err == nil
				}
			}
			if strings.Contains(line, "msg=reload ") && strings.Contains(line, "level=ERROR") {
				die(fmt.Errorf("serve on h%d: %s", h.n, line))
			}
		}
		return false
	})
	return at
}
