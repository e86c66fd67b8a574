// Command bgp measures guestnet's BGP speaker (issue 14) against peers we
// did not write, in the same run, and prints one markdown table:
//
//   - convergence: a network applied on host A (`guestnet apply` of serve's
//     config) until its route is installed on B and C, and removed until it
//     is gone; against BIRD 2 announcing one static route (`birdc enable`)
//     to the same receivers B and C;
//   - 1,000 prefixes: A applies 1,000 routed networks, until B has them all
//     in its kernel; against BIRD's static protocol of the same 1,000
//     prefixes into the same receiver B; and the receivers compared: B
//     (guestnet) against FRR (bgpd + zebra) receiving A's 1,000;
//   - memory (VmRSS) of each speaker with the 1,000.
//
// The lab, all namespaces (nothing in the root namespace):
//
//	[A 10.10.0.1 AS 65001] [B .2 AS 65002] [C .3 AS 65003]   guestnet serve, eBGP full mesh
//	[bird 10.10.0.254 AS 65100] peers B and C   [frr 10.10.0.253 AS 65200] peers A
//	all on one LAN: a bridge in its own namespace
//
// Needs root, bird2 and frr (Debian packages), and a guestnet binary.
//
//	go run ./bench/bgp -guestnet bin/guestnet -runs 5 -n 1000
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

var (
	bin  = flag.String("guestnet", "bin/guestnet", "guestnet binary")
	runs = flag.Int("runs", 5, "convergence runs of each speaker (alternating)")
	bulk = flag.Int("n", 1000, "prefixes of the bulk rows (at most 4,096)")
)

// row is one line of the table: what was measured, guestnet's figure, the
// peer's in the same run, and the ratio of the two (times only).
type row struct {
	what, guestnet, peer string
	g, p                 time.Duration
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/bgp: needs root (it creates network namespaces)")
		os.Exit(1)
	}
	for tool, pkg := range map[string]string{"bird": "bird2", "birdc": "bird2", "/usr/lib/frr/bgpd": "frr", "ip": "iproute2"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "bench/bgp: needs %s (Debian: apt-get install -y %s)\n", tool, pkg)
			os.Exit(1)
		}
	}
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "bench/bgp: %v (build it: make build, or pass -guestnet PATH)\n", err)
		os.Exit(2)
	}
	if *runs < 1 || *bulk < 1 || *bulk > 4096 {
		fmt.Fprintln(os.Stderr, "bench/bgp: -runs at least 1, -n from 1 to 4096")
		os.Exit(2)
	}
	l := newLab()
	defer l.close()
	began, loadBefore := time.Now(), loadavg()

	net := l.lan()
	a, b, c := l.host(1, net), l.host(2, net), l.host(3, net)
	birdNS, frrNS := l.netns("bird"), l.netns("frr")
	net.plug(birdNS, "10.10.0.254")
	net.plug(frrNS, "10.10.0.253")
	a.peers = []peer{{b.addr, b.asn}, {c.addr, c.asn}, {"10.10.0.253", 65200}}
	b.peers = []peer{{a.addr, a.asn}, {c.addr, c.asn}, {"10.10.0.254", 65100}}
	c.peers = []peer{{a.addr, a.asn}, {b.addr, b.asn}, {"10.10.0.254", 65100}}
	const one, oneNet = "10.80.0.0/24", "conv: {mode: routed, bridge: gconv, ipv4: 10.80.0.1/24}"
	prefixes := bulkPrefixes(*bulk)
	bd := l.bird(birdNS, birdConf([]*host{b, c}, one, prefixes))
	fr := l.frr(frrNS, []*host{a})
	for _, h := range []*host{a, b, c} {
		h.config(nil)
		h.start()
	}
	kb, kc, kf := openKernel("B", b.ns), openKernel("C", c.ns), openKernel("FRR", frrNS)
	fmt.Fprintln(os.Stderr, "bench/bgp: waiting for the sessions...")
	waitFor("B and C have A's subnet, FRR too", 60*time.Second, func() bool {
		return kb.bgpRoutes()["10.71.0.0/24"] && kc.bgpRoutes()["10.71.0.0/24"] && kf.bgpRoutes()["10.71.0.0/24"]
	})
	waitFor("BIRD's sessions established", 60*time.Second, func() bool {
		out, err := exec.Command("birdc", "-s", bd.sock, "show", "protocols").Output()
		return err == nil && strings.Count(string(out), "Established") == 2
	})

	var rows []row
	// Convergence, alternating guestnet and BIRD.
	var gUp, gDown, pUp, pDown []time.Duration
	want := []string{one}
	for i := 0; i < *runs; i++ {
		a.config([]string{oneNet})
		t0 := time.Now()
		a.guestnet("apply", a.conf)
		gUp = append(gUp, maxOf(waitCount(t0, want, 1, 30*time.Second, kb, kc)))
		a.config(nil)
		t0 = time.Now()
		a.guestnet("apply", a.conf)
		gDown = append(gDown, maxOf(waitCount(t0, want, 0, 30*time.Second, kb, kc)))

		t0 = time.Now()
		bd.c("enable", "one")
		pUp = append(pUp, maxOf(waitCount(t0, want, 1, 30*time.Second, kb, kc)))
		t0 = time.Now()
		bd.c("disable", "one")
		pDown = append(pDown, maxOf(waitCount(t0, want, 0, 30*time.Second, kb, kc)))
		fmt.Fprintf(os.Stderr, "bench/bgp: convergence run %d: guestnet %v / %v, BIRD %v / %v (up / down)\n",
			i+1, gUp[i], gDown[i], pUp[i], pDown[i])
	}
	rows = append(rows,
		row{"a network applied on A → its route installed on B and C (median (min-max) of " + fmt.Sprint(*runs) + ")",
			"`guestnet apply` on A: " + spread(gUp), "BIRD `birdc enable` of a static route: " + spread(pUp), median(gUp), median(pUp)},
		row{"a network removed on A → its route gone from B and C",
			"`guestnet apply` without it: " + spread(gDown), "`birdc disable`: " + spread(pDown), median(gDown), median(pDown)})

	// 1,000 prefixes from BIRD into B, then the same from A into B and FRR.
	n := len(prefixes)
	rssB0, rssA0 := rss(b.serve.Process.Pid), rss(a.serve.Process.Pid)
	t0 := time.Now()
	bd.c("enable", "bulk")
	birdIn := waitCount(t0, prefixes, n, 5*time.Minute, kb)[0]
	rssBird, rssBwithBird := rss(bd.cmd.Process.Pid), rss(b.serve.Process.Pid)
	t0 = time.Now()
	bd.c("disable", "bulk")
	birdOut := waitCount(t0, prefixes, 0, 5*time.Minute, kb)[0]
	fmt.Fprintf(os.Stderr, "bench/bgp: BIRD's %d: on B after %v, gone after %v\n", n, birdIn, birdOut)

	a.config(bulkNetworks(n))
	fmt.Fprintf(os.Stderr, "bench/bgp: applying %d networks on A...\n", n)
	t0 = time.Now()
	reloads := a.reloads()
	a.serve.Process.Signal(syscall.SIGHUP) // `guestnet apply` would give up after the API client's 30 s
	in := waitCount(t0, prefixes, n, 10*time.Minute, kb, kf)
	applied := a.reloadedAt(reloads).Sub(t0)
	time.Sleep(2 * time.Second) // let the speakers settle before reading their memory
	rssA, rssB, rssF := rss(a.serve.Process.Pid), rss(b.serve.Process.Pid), rss(fr.bgpd.Process.Pid)+rss(fr.zebra.Process.Pid)
	a.config(nil)
	t0 = time.Now()
	reloads = a.reloads()
	a.serve.Process.Signal(syscall.SIGHUP)
	out := waitCount(t0, prefixes, 0, 10*time.Minute, kb, kf)
	removed := a.reloadedAt(reloads).Sub(t0)
	fmt.Fprintf(os.Stderr, "bench/bgp: A's %d: applied in %v, on B after %v, on FRR after %v; removed in %v, gone after %v / %v\n",
		n, applied, in[0], in[1], removed, out[0], out[1])

	rows = append(rows,
		row{fmt.Sprintf("%s prefixes announced → all installed on B", commas(n)),
			fmt.Sprintf("A reloads with %s more routed networks (SIGHUP): %s (the reload itself: %s)", commas(n), ms(in[0]), ms(applied)),
			"BIRD static protocol enabled: " + ms(birdIn), in[0], birdIn},
		row{"the same, counted from serve's `reloaded` log line (the speaker announces at the end of the reload, just before it: not comparable to BIRD's figure)",
			ms(in[0] - applied), "", 0, 0},
		row{fmt.Sprintf("A's %s prefixes → all installed, per receiver", commas(n)),
			"guestnet B: " + ms(in[0]), "FRR bgpd + zebra: " + ms(in[1]), in[0], in[1]},
		row{fmt.Sprintf("%s prefixes withdrawn → all gone from B", commas(n)),
			fmt.Sprintf("networks removed from A's config (SIGHUP): %s (FRR: %s; the reload itself: %s)", ms(out[0]), ms(out[1]), ms(removed)),
			"BIRD static protocol disabled: " + ms(birdOut), out[0], birdOut},
		row{fmt.Sprintf("memory (VmRSS) of the receiver holding %s learned routes", commas(n)),
			fmt.Sprintf("guestnet serve on B: %.1f MiB (%.1f MiB before; %.1f MiB with BIRD's)", rssB, rssB0, rssBwithBird),
			fmt.Sprintf("FRR bgpd + zebra: %.1f MiB", rssF), 0, 0},
		row{fmt.Sprintf("memory (VmRSS) of the sender announcing %s", commas(n)),
			fmt.Sprintf("guestnet serve on A with %s networks: %.1f MiB (%.1f MiB with 1)", commas(n), rssA, rssA0),
			fmt.Sprintf("BIRD with a %s-route static protocol: %.1f MiB", commas(n), rssBird), 0, 0},
	)
	l.close()
	printTable(rows, time.Since(began), loadBefore, loadavg())
}

func printTable(rows []row, took time.Duration, loadBefore, loadAfter string) {
	fmt.Printf("\n| measurement | guestnet | peer in the same run | guestnet / peer |\n|---|---|---|---|\n")
	for _, r := range rows {
		ratio := ""
		if r.p > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.g)/float64(r.p))
		}
		fmt.Printf("| %s | %s | %s | %s |\n", r.what, r.guestnet, r.peer, ratio)
	}
	fmt.Printf("\nTimes are from the command's start (guestnet apply, birdc, SIGHUP) until the kernel of every receiver\n")
	fmt.Printf("named held the route(s) as protocol bgp (read by netlink every 5 ms).\n")
	fmt.Printf("Total run time %s; load average %s at the start, %s at the end, on %d CPUs.\n",
		took.Round(time.Second), loadBefore, loadAfter, runtime.NumCPU())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	var a, b5, c float64
	fmt.Sscan(string(b), &a, &b5, &c)
	return fmt.Sprintf("%.2f %.2f %.2f", a, b5, c)
}

// commas writes 1000 as 1,000.
func commas(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
