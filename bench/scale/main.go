// Command scale measures what the number of networks on a host costs a
// packet (issue 13): a NAT guest on the last of N networks sends 64-byte UDP
// to a pretend-internet host, against the same guest on the only network of
// a one-network host, measured in the same run, alternating, so the noise of
// a shared machine hits both. It also measures a TCP stream and the TCP
// connection rate through a port forward with 10,000 forwards against a host
// with only the two measured forwards, and reports the applies it made on the way. It prints one markdown table.
//
// Needs root, iperf3, busybox and nft; builds and removes its own
// namespaces only (also on failure or a signal), never touching the root
// namespace. The one-network host stays up through the run; the measured
// host grows from one N to the next by applying the larger spec, and each
// N gets a fresh guest on its last network.
//
//	go run ./bench/scale -guestnet bin/guestnet -n 1,100,1000,4000
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	bin      = flag.String("guestnet", "bin/guestnet", "guestnet binary")
	nList    = flag.String("n", "1,100,1000,4000", "comma-separated numbers of networks on the measured host")
	seconds  = flag.Int("seconds", 5, "seconds per iperf3 run and per connect loop")
	runs     = flag.Int("runs", 2, "runs per measurement, alternating with the baseline")
	forwards = flag.Int("forwards", 10000, "forwards for the TCP rows (0 skips them)")
)

// row is one line of the result table.
type row struct {
	what, host string
	lines      int // lines of `nft list table inet guestnet`, 0 = not shown
	baseLines  int // the same on the baseline host, 0 = not shown
	measured   []float64
	baseline   []float64
	unit       string // "pps", "Gbit/s", "conn/s"; "" for the apply rows
	text       string // apply rows: measured cell as text
	baseText   string
	goal       string
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/scale: needs root (it creates network namespaces)")
		os.Exit(1)
	}
	for _, tool := range []string{"iperf3", "busybox", "nft", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "bench/scale: needs %s (Debian: apt-get install iperf3 busybox nftables iproute2)\n", tool)
			os.Exit(1)
		}
	}
	ns, err := parseN(*nList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/scale: -n:", err)
		os.Exit(2)
	}
	if *runs < 1 || *seconds < 1 || *forwards < 0 {
		fmt.Fprintln(os.Stderr, "bench/scale: -runs and -seconds must be at least 1, -forwards at least 0")
		os.Exit(2)
	}
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "bench/scale: %v (build it: make build, or pass -guestnet PATH)\n", err)
		os.Exit(2)
	}
	l := newLab()
	defer l.Close()
	began, loadBefore := time.Now(), loadavg()
	var rows []row
	if *forwards > 0 {
		rows = append(rows, forwardRows(l)...)
	}
	rows = append(rows, scaleRows(l, ns)...)
	l.Close()
	printTable(rows, time.Since(began), loadBefore, loadavg())
}

func parseN(s string) ([]int, error) {
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("%q: want numbers of networks from 1 to 4096, like 1,100,1000,4000", f)
		}
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return slices.Compact(ns), nil
}

// scaleRows measures the packet rate of a guest on the last of each N
// networks against the guest of the one-network baseline host.
func scaleRows(l *lab, ns []int) []row {
	base := l.host("b")
	baseApply := base.apply(1, "")
	baseGuest, _ := l.guest(base, 0)
	reachable(baseGuest, "198.51.100.2")
	baseLines := base.ruleLines()

	big := l.host("s")
	var rows, applies []row
	prev, prevGuest, prevPort := 0, "", ""
	for _, n := range ns {
		fmt.Fprintf(os.Stderr, "bench/scale: applying %s (from %d)...\n", plural(n, "network"), prev)
		a := big.apply(n, "")
		applies = append(applies, row{
			what: fmt.Sprintf("apply growing the host from %s to %s (wall clock, kernel writes)", commas(prev), plural(n, "network")),
			host: plural(n, "network"), text: fmt.Sprintf("%s, %s writes", ms(a.took), commas(a.writes)),
			baseText: fmt.Sprintf("%s, %s writes (1 network on an empty host)", ms(baseApply.took), commas(baseApply.writes)),
		})
		if prevGuest != "" {
			big.guestnet("detach", netName(prev-1), prevPort)
			l.DelNetns(prevGuest)
		}
		guest, port := l.guest(big, n-1)
		reachable(guest, "198.51.100.2")
		r := row{
			what: "UDP 64 B packets/s received, guest on the last network",
			host: plural(n, "network"), lines: big.ruleLines(), baseLines: baseLines, unit: "pps", goal: "≥ 90 %",
		}
		c := row{
			what: "the same runs: packets received per CPU-second of iperf3 client + server",
			host: plural(n, "network"), unit: "/CPU-s",
		}
		fmt.Fprintf(os.Stderr, "bench/scale: measuring at %s...\n", plural(n, "network"))
		for i := 0; i < *runs; i++ {
			b, m := udpRate(baseGuest), udpRate(guest)
			fmt.Fprintf(os.Stderr, "bench/scale: %s, run %d: baseline received %s/s (sent %s/s, %s/CPU-s), measured received %s/s (sent %s/s, %s/CPU-s)\n",
				plural(n, "network"), i+1, commas(int(b.received)), commas(int(b.sent)), commas(int(b.perCPU)),
				commas(int(m.received)), commas(int(m.sent)), commas(int(m.perCPU)))
			r.baseline, r.measured = append(r.baseline, b.received), append(r.measured, m.received)
			c.baseline, c.measured = append(c.baseline, b.perCPU), append(c.measured, m.perCPU)
		}
		rows = append(rows, r, c)
		prev, prevGuest, prevPort = n, guest, port
	}
	return append(rows, applies...)
}

// forwardRows measures a TCP stream and the TCP connect/close rate through
// a port forward on a host with -forwards forwards, against a host with
// only the measured forwards, alternating.
func forwardRows(l *lab) []row {
	type fwHost struct {
		h      *host
		guest  string
		apply  applied
		lines  int
		server *exec.Cmd
		ln     net.Listener
	}
	build := func(name string, fill int) fwHost {
		h := l.host(name)
		a := h.apply(1, forwardsYAML(fill))
		guest, _ := l.guest(h, 0)
		srv := l.start(guest, "iperf3", "-s", "-B", subnet(0)+".10", "-p", "5201")
		ln := acceptAndClose(guest, subnet(0)+".10")
		return fwHost{h, guest, a, h.ruleLines(), srv, ln}
	}
	fmt.Fprintf(os.Stderr, "bench/scale: forwards: building hosts with 2 and %d forwards...\n", *forwards+2)
	f0, fN := build("f0", 0), build("fn", *forwards)
	host := fmt.Sprintf("1 network, %s forwards", commas(*forwards+2))
	tcp := row{what: "TCP Gbit/s through a forward (iperf3)", host: host, lines: fN.lines, baseLines: f0.lines, unit: "Gbit/s", goal: "≥ 95 %"}
	conn := row{what: "TCP connects/s through a forward", host: host, lines: fN.lines, baseLines: f0.lines, unit: "conn/s", goal: "≥ 95 %"}
	tcpCPU := row{what: "the same runs: Gbit per CPU-second of iperf3 client + server", host: host, unit: "Gbit/CPU-s"}
	connCPU := row{what: "the same runs: connections per CPU-second of the connecting and accepting process", host: host, unit: "/CPU-s"}
	for i := 0; i < *runs; i++ {
		bGbps, bGbpsCPU := tcpRate(f0.h.inet)
		mGbps, mGbpsCPU := tcpRate(fN.h.inet)
		tcp.baseline, tcp.measured = append(tcp.baseline, bGbps), append(tcp.measured, mGbps)
		tcpCPU.baseline, tcpCPU.measured = append(tcpCPU.baseline, bGbpsCPU), append(tcpCPU.measured, mGbpsCPU)
		bRate, bCPU := connRate(f0.h.inet)
		mRate, mCPU := connRate(fN.h.inet)
		fmt.Fprintf(os.Stderr, "bench/scale: forwards, run %d: %.2f / %.2f Gbit/s, %s / %s conn/s (%s / %s per CPU-s), baseline / measured\n",
			i+1, tcp.baseline[i], tcp.measured[i], commas(int(bRate)), commas(int(mRate)), commas(int(bCPU)), commas(int(mCPU)))
		conn.baseline, conn.measured = append(conn.baseline, bRate), append(conn.measured, mRate)
		connCPU.baseline, connCPU.measured = append(connCPU.baseline, bCPU), append(connCPU.measured, mCPU)
	}
	ap := row{
		what: "apply of 1 network with its forwards on an empty host (wall clock, kernel writes)", host: host,
		lines: fN.lines, baseLines: f0.lines,
		text:     fmt.Sprintf("%s, %s writes", ms(fN.apply.took), commas(fN.apply.writes)),
		baseText: fmt.Sprintf("%s, %s writes (2 forwards)", ms(f0.apply.took), commas(f0.apply.writes)),
	}
	for _, f := range []fwHost{f0, fN} { // a namespace lives on while a process or socket is in it
		f.ln.Close()
		l.Stop(f.server)
		l.Stop(f.h.server)
		for _, ns := range []string{f.guest, f.h.ns, f.h.inet} {
			l.DelNetns(ns)
		}
	}
	return []row{tcp, tcpCPU, conn, connCPU, ap}
}

func printTable(rows []row, took time.Duration, loadBefore, loadAfter string) {
	fmt.Printf("\n| benchmark | measured host | lines of `table inet guestnet` | measured (per run) | baseline in the same run (per run) | measured / baseline | goal |\n")
	fmt.Printf("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		lines := ""
		if r.lines > 0 {
			lines = commas(r.lines)
		}
		if r.baseLines > 0 {
			lines += " (baseline " + commas(r.baseLines) + ")"
		}
		if r.unit == "" {
			fmt.Printf("| %s | %s | %s | %s | %s | | |\n", r.what, r.host, lines, r.text, r.baseText)
			continue
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %.0f %% | %s |\n", r.what, r.host, lines,
			values(r.measured, r.unit), values(r.baseline, r.unit), 100*mean(r.measured)/mean(r.baseline), r.goal)
	}
	fmt.Printf("\nBaseline: for the UDP rows, a guest on the only network of a one-network host (same spec line,\n")
	fmt.Printf("same subnet shape, same binding), alternating with the measured guest, %d runs × %d s each; for the\n", *runs, *seconds)
	fmt.Printf("forward rows, a host whose only forwards are the two measured ones. Ratio: mean over mean.\n")
	fmt.Printf("The 1-network UDP row is a control (same host shape on both sides): its distance from 100 %%\n")
	fmt.Printf("is this sitting's noise. The per-CPU-second rows are a packet's (connection's) cost seen from\n")
	fmt.Printf("the processes, steadier under other load; softirq work in ksoftirqd is not counted in them.\n")
	fmt.Printf("Total run time %s; load average (1, 5, 15 min) %s at the start, %s at the end, on %d CPUs.\n",
		took.Round(time.Second), loadBefore, loadAfter, runtime.NumCPU())
}

func values(v []float64, unit string) string {
	var s []string
	for _, x := range v {
		switch unit {
		case "Gbit/s", "Gbit/CPU-s":
			s = append(s, fmt.Sprintf("%.2f", x))
		default:
			s = append(s, commas(int(x+0.5)))
		}
	}
	return strings.Join(s, " / ") + " " + unit
}

func mean(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t / float64(len(v))
}

// loadavg is the machine's load average, to tell a quiet run from a busy one.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// plural writes 1 network, 4,000 networks.
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return commas(n) + " " + what + "s"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// commas writes 13011 as 13,011.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
