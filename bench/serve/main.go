// Command serve measures `guestnet serve` with N NAT networks, each with
// DHCP and DNS: how long after the process starts a guest on the LAST
// network gets a DHCP OFFER and a DNS answer from its gateway, and what
// the daemon then holds (VmRSS, VmHWM, file descriptors, threads,
// goroutines, live heap). It prints one table, with each row's cost per
// network against N = 1 measured in the same run.
//
// Needs root. Each N gets its own namespaces (a host and a guest), made by
// this program and removed at the end, also on failure; the root
// namespace is never changed. The guest sits on a veth attached to the
// last network's bridge, with the MAC and address of that network's
// static host, and asks with the DHCP library's own client (raw socket,
// DISCOVER every 25 ms until an OFFER) and miekg/dns (a query every 25 ms
// until an answer).
//
//	go run ./bench/serve -guestnet bin/guestnet [-nets 1,100,1000] [-settle 3s] [-log FILE] [-watch]
//
// Goroutines are counted from the stack dump of SIGQUIT (which ends the
// daemon: it is the last thing measured); the live heap is the last
// GODEBUG=gctrace=1 line before it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	mdns "github.com/miekg/dns"

	"github.com/guestnet/guestnet/internal/netns"
)

var (
	bin    = flag.String("guestnet", "bin/guestnet", "guestnet binary")
	nets   = flag.String("nets", "1,100,1000", "network counts, comma-separated")
	settle = flag.Duration("settle", 3*time.Second, "wait after serving before memory is read")
	limit  = flag.Duration("timeout", 60*time.Second, "longest wait for serving")
	watch  = flag.Bool("watch", false, "print the daemon's VmRSS every second while settling")
	keep   = flag.String("log", "", "write each daemon's log (debug level, GC trace, stack dump) to this path + .N")
)

// guestMAC is the static host of the last network: its OFFER needs no ARP
// check (the address is reserved), so the time measured is the daemon's.
const guestMAC = "02:00:00:00:00:0a"

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/serve: needs root (it creates network namespaces)")
		os.Exit(1)
	}
	defer cleanup()
	var rows []row
	for _, f := range strings.Split(*nets, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		check(err)
		r := measure(n)
		fmt.Fprintf(os.Stderr, "bench/serve: N=%d done: %+v\n", n, r)
		rows = append(rows, r)
	}
	printTable(rows)
}

// row is one N's figures.
type row struct {
	n                  int
	ready, offer, dns  time.Duration // after the process started
	rss, hwm           int           // kB
	fds, threads, gors int
	heapMB             float64 // live heap after the last GC
}

func printTable(rows []row) {
	base := rows[0]
	fmt.Printf("\n| networks | ready (log) | DHCP OFFER on last | DNS answer on last | VmRSS | VmHWM | fds | threads | goroutines | live heap |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %d | %s | %s | %s | %.1f MB | %.1f MB | %d | %d | %d | %.1f MB |\n", r.n, ms(r.ready), ms(r.offer), ms(r.dns),
			float64(r.rss)/1024, float64(r.hwm)/1024, r.fds, r.threads, r.gors, r.heapMB)
	}
	for _, r := range rows[1:] {
		d := float64(r.n - base.n)
		fmt.Printf("\nper network over N=%d, from N=%d: VmRSS %.1f kB, fds %.2f, goroutines %.2f, live heap %.1f kB; serving %.1f× N=%d's time",
			base.n, r.n, float64(r.rss-base.rss)/d, float64(r.fds-base.fds)/d, float64(r.gors-base.gors)/d,
			(r.heapMB-base.heapMB)*1024/d, float64(max(r.offer, r.dns))/float64(max(base.offer, base.dns)), base.n)
	}
	fmt.Printf("\n\nGoal (issue 13): at 1,000 networks < 40 MB RSS and serving (DHCP and DNS on the last network) < 1 s after start.\n")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// made lists the namespaces this run created, so even a failing run
// removes them all.
var (
	made   []string
	daemon *exec.Cmd
)

func cleanup() {
	if daemon != nil && daemon.ProcessState == nil {
		daemon.Process.Kill()
		daemon.Wait()
	}
	for _, ns := range made {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	made = nil
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/serve:", err)
		cleanup()
		os.Exit(1)
	}
}

func run(args ...string) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		check(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
}

func subnet(i int) string { return fmt.Sprintf("10.%d.%d", 100+i/256, i%256) }

// writeSpec declares n NAT networks with DHCP and DNS; the last one has
// the guest as a static host named vm.
func writeSpec(path string, n int) {
	var b strings.Builder
	b.WriteString("networks:\n")
	for i := 0; i < n; i++ {
		s := subnet(i)
		fmt.Fprintf(&b, "  n%d:\n    mode: nat\n    bridge: gn%d\n    ipv4: %s.1/24\n", i, i, s)
		fmt.Fprintf(&b, "    dhcp: {range: [%s.100-%s.199]", s, s)
		if i == n-1 {
			fmt.Fprintf(&b, ", hosts: [{mac: %q, ip: %s.10, name: vm}]", guestMAC, s)
		}
		fmt.Fprintf(&b, "}\n    dns: {domain: n%d.test}\n", i)
	}
	check(os.WriteFile(path, []byte(b.String()), 0o644))
}

// measure applies n networks in a fresh namespace, then starts serve and
// times it.
func measure(n int) row {
	defer cleanup()
	dir, err := os.MkdirTemp("", "guestnet-bench-serve-")
	check(err)
	defer os.RemoveAll(dir)
	host := fmt.Sprintf("gnsrv%d-%d", os.Getpid(), n)
	guest := host + "g"
	for _, ns := range []string{host, guest} {
		made = append(made, ns)
		run("ip", "netns", "add", ns)
	}
	last := subnet(n - 1)
	run("ip", "-n", host, "link", "add", "vb0", "type", "veth", "peer", "name", "eth0", "netns", guest)
	run("ip", "-n", guest, "link", "set", "eth0", "address", guestMAC)
	run("ip", "-n", guest, "addr", "add", last+".10/24", "dev", "eth0")
	run("ip", "-n", guest, "link", "set", "eth0", "up")
	run("ip", "-n", guest, "link", "set", "lo", "up")

	spec := filepath.Join(dir, "spec.yaml")
	writeSpec(spec, n)
	state := filepath.Join(dir, "state")
	gn := func(args ...string) {
		run(append([]string{*bin, "--netns", host, "--state-dir", state}, args...)...)
	}
	gn("apply", spec)
	gn("attach", fmt.Sprintf("n%d", n-1), "vb0", "--mac", guestMAC)
	linkReady(guest, last+".1")

	gns, err := netns.Open(guest)
	check(err)
	defer gns.Close()
	var dc *nclient4.Client
	check(gns.Do(func() (err error) {
		dc, err = nclient4.New("eth0", nclient4.WithTimeout(25*time.Millisecond), nclient4.WithRetry(1))
		return err
	}))
	defer dc.Close()

	var stderr strings.Builder
	var mu sync.Mutex
	ready := make(chan time.Time, 1)
	daemon = exec.Command(*bin, "--netns", host, "--state-dir", state, "serve", "--config", spec, "--log-level", "debug")
	daemon.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	pipe, err := daemon.StderrPipe()
	check(err)
	start := time.Now()
	check(daemon.Start())
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "msg=serving") {
				select {
				case ready <- time.Now():
				default:
				}
			}
			mu.Lock()
			stderr.WriteString(line + "\n")
			mu.Unlock()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	var offer, answer time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); offer = untilOffer(ctx, dc, start) }()
	go func() {
		defer wg.Done()
		answer = untilAnswer(ctx, gns, netip.MustParseAddr(last+".1"), fmt.Sprintf("vm.n%d.test.", n-1), start)
	}()
	wg.Wait()
	if offer == 0 || answer == 0 {
		mu.Lock()
		logf := fmt.Sprintf("/tmp/bench-serve-%d.log", n)
		os.WriteFile(logf, []byte(stderr.String()), 0o644)
		check(fmt.Errorf("N=%d: no OFFER (%v) or no DNS answer (%v) within %s; daemon log in %s", n, offer, answer, *limit, logf))
	}
	var r row
	r.n, r.offer, r.dns = n, offer, answer
	select {
	case t := <-ready:
		r.ready = t.Sub(start)
	case <-time.After(*limit):
	}
	pid := daemon.Process.Pid
	for t := time.Duration(0); t < *settle; t += time.Second {
		if *watch {
			rss, _, _ := status(pid)
			fmt.Fprintf(os.Stderr, "after %s: VmRSS %d kB\n", t, rss)
		}
		time.Sleep(time.Second)
	}
	r.rss, r.hwm, r.threads = status(pid)
	r.fds = fds(pid)
	daemon.Process.Signal(syscall.SIGQUIT) // dumps every goroutine's stack, then exits
	<-drained                              // the whole dump read (Wait closes the pipe)
	daemon.Wait()
	mu.Lock()
	log := stderr.String()
	mu.Unlock()
	if *keep != "" {
		log = "bench: daemon started at " + start.UTC().Format(time.RFC3339Nano) + "\n" + log
		check(os.WriteFile(fmt.Sprintf("%s.%d", *keep, n), []byte(log), 0o644))
	}
	r.gors = strings.Count(log, "\ngoroutine ")
	r.heapMB = lastLiveHeap(log)
	return r
}

// linkReady waits until the guest reaches its gateway: a veth whose carrier
// just came up drops what it is given until the kernel's link watch
// attaches its queue (up to a second later), which would otherwise count
// as the daemon's start time.
func linkReady(guest, gw string) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if exec.Command("ip", "netns", "exec", guest, "busybox", "ping", "-c", "1", "-W", "1", gw).Run() == nil {
			return
		}
	}
	check(fmt.Errorf("the guest does not reach its gateway %s after 30 s", gw))
}

// untilOffer sends DISCOVERs from the guest until one gets an OFFER.
func untilOffer(ctx context.Context, c *nclient4.Client, start time.Time) time.Duration {
	for ctx.Err() == nil {
		o, err := c.DiscoverOffer(ctx)
		if err == nil && o.MessageType() == dhcpv4.MessageTypeOffer {
			return time.Since(start)
		}
	}
	return 0
}

// untilAnswer asks the gateway for the guest's own name from inside the
// guest until an answer comes (any rcode: the server answers).
func untilAnswer(ctx context.Context, ns *netns.NS, gw netip.Addr, name string, start time.Time) time.Duration {
	var conn net.Conn
	check(ns.Do(func() (err error) {
		conn, err = net.Dial("udp4", netip.AddrPortFrom(gw, 53).String())
		return err
	}))
	defer conn.Close()
	cl := &mdns.Client{Timeout: 25 * time.Millisecond}
	q := new(mdns.Msg)
	q.SetQuestion(name, mdns.TypeA)
	for ctx.Err() == nil {
		q.Id = mdns.Id()
		r, _, err := cl.ExchangeWithConn(q, &mdns.Conn{Conn: conn})
		if err == nil && r.Id == q.Id {
			if len(r.Answer) != 1 {
				check(fmt.Errorf("DNS %s: want one A record, got %v", name, r))
			}
			return time.Since(start)
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !isTimeout(err) {
			time.Sleep(25 * time.Millisecond) // ICMP port unreachable before the listener: ask again
		}
	}
	return 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// status reads VmRSS, VmHWM (kB) and Threads from /proc/PID/status.
func status(pid int) (rss, hwm, threads int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		case "Threads:":
			threads = v
		}
	}
	return
}

func fds(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	check(err)
	return len(es)
}

// gctrace: "gc 12 @1.2s 3%: ... ms cpu, 4->5->2 MB, 5 MB goal, ..." (the
// third number is the live heap after the cycle).
var gcLine = regexp.MustCompile(`(\d+)->(\d+)->(\d+) MB`)

func lastLiveHeap(log string) float64 {
	m := gcLine.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(m[len(m)-1][3], 64)
	return v
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
