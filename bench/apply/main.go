// Command apply measures `guestnet apply` against the way the background
// recipes do it: a shell script of ip/iptables/sysctl commands, one per
// line, run in the same kind of fresh namespace in the same run. It prints
// a table with the ratio. Needs root; it creates and removes its own
// namespaces and never touches the root namespace.
//
//	go run ./bench/apply -guestnet bin/guestnet [-nets 100] [-noop 1000] [-runs 5] [-big 1000] [-forwards 10000] [-scale-only] [-cpuprofile FILE]
//
// The scale cases (one network on an empty host, one more on a host with
// -big, the no-op of -big networks with -forwards) are timed twice in the
// same run: the whole command, and in-process (spec load plus the
// engine's Converge, see inproc), whose CPU profile -cpuprofile writes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

var (
	bin  = flag.String("guestnet", "bin/guestnet", "guestnet binary")
	nets = flag.Int("nets", 100, "NAT networks applied from scratch")
	noop = flag.Int("noop", 1000, "networks in the no-op re-apply")
	runs = flag.Int("runs", 5, "repetitions (the median is reported)")
	big  = flag.Int("big", 1000, "networks on the host that gets one more, and in the no-op with forwards")
	fwds = flag.Int("forwards", 10000, "port forwards in the no-op of -big networks")
	only = flag.Bool("scale-only", false, "skip the comparison with the shell recipe (only the scale cases)")
	prof = flag.String("cpuprofile", "", "write a CPU profile of the in-process applies to this file")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/apply: needs root (it creates network namespaces)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "guestnet-bench-")
	check(err)
	defer os.RemoveAll(dir)

	l := newLab(2**runs + 2 + 2**runs + 2)
	defer l.close()
	if !*only {
		compare(dir, l)
	}
	scale(dir, l)
}

// compare times guestnet against the shell recipe, from scratch and as a
// no-op re-apply, and prints that table.
func compare(dir string, l *lab) {
	var gn, sh []time.Duration
	for r := 0; r < *runs; r++ {
		gn = append(gn, l.fresh(dir, func(ns string) time.Duration { return guestnetApply(dir, ns, *nets, nil) }))
		sh = append(sh, l.fresh(dir, func(ns string) time.Duration { return shell(dir, ns, *nets, false) }))
	}

	var gnNoop, shNoop []time.Duration
	writes := -1
	l.fresh(dir, func(ns string) time.Duration {
		guestnetApply(dir, ns, *noop, nil)
		for r := 0; r < *runs; r++ {
			gnNoop = append(gnNoop, guestnetApply(dir, ns, *noop, &writes))
		}
		return 0
	})
	l.fresh(dir, func(ns string) time.Duration {
		shell(dir, ns, *noop, true)
		shNoop = append(shNoop, shell(dir, ns, *noop, true)) // once: it is slow
		return 0
	})

	fmt.Printf("\n| case | guestnet | shell recipe (ip/iptables per line) | shell / guestnet |\n|---|---|---|---|\n")
	fmt.Printf("| %d NAT networks from scratch (median of %d) | %s | %s | %.1f× |\n",
		*nets, *runs, ms(median(gn)), ms(median(sh)), ratio(sh, gn))
	fmt.Printf("| no-op re-apply of %d networks (guestnet: median of %d, %d kernel writes; shell: checks each item with `ip link show`/`iptables -C`, 1 run) | %s | %s | %.1f× |\n",
		*noop, *runs, writes, ms(median(gnNoop)), ms(median(shNoop)), ratio(shNoop, gnNoop))
	fmt.Printf("\nGoals: ≥ 5× faster than the shell recipe from scratch; no-op apply under 150 ms with 0 kernel writes.\n")
}

// scale times the applies whose cost must not grow with the number of
// networks, as whole commands and in-process, and prints that table.
func scale(dir string, l *lab) {
	if *prof != "" {
		// Only the in-process applies use this process's CPU: the
		// commands run in children, which the profile does not see.
		f, err := os.Create(*prof)
		check(err)
		defer f.Close()
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	// One network on an empty host, against one more on a host with -big:
	// the same order of writes (a delta of its chains and map elements),
	// whatever the number of networks already there. Each case runs as a
	// command and in-process, alternating, on the same namespace.
	var one, more, noopC caseTimes
	for r := 0; r < *runs; r++ {
		l.fresh(dir, func(ns string) time.Duration {
			one.add(guestnetRun(dir, ns, specOf(0, 1, 0)), false)
			return 0
		})
		l.fresh(dir, func(ns string) time.Duration {
			one.add(inproc(dir, ns, specOf(0, 1, 0)), true)
			return 0
		})
	}
	l.fresh(dir, func(ns string) time.Duration {
		guestnetRun(dir, ns, specOf(0, *big, 0))
		for r := 0; r < *runs; r++ {
			more.add(guestnetRun(dir, ns, specOf(0, *big+1, 0)), false)
			guestnetRun(dir, ns, specOf(0, *big, 0)) // and back, untimed
			more.add(inproc(dir, ns, specOf(0, *big+1, 0)), true)
			guestnetRun(dir, ns, specOf(0, *big, 0))
		}
		return 0
	})
	l.fresh(dir, func(ns string) time.Duration {
		guestnetRun(dir, ns, specOf(0, *big, *fwds))
		for r := 0; r < *runs; r++ {
			noopC.add(guestnetRun(dir, ns, specOf(0, *big, *fwds)), false)
			noopC.add(inproc(dir, ns, specOf(0, *big, *fwds)), true)
		}
		return 0
	})

	fmt.Printf("\n| case (guestnet, median of %d) | whole command | in-process (spec load + Converge) | kernel writes | nft objects written |\n|---|---|---|---|---|\n", *runs)
	one.row("one NAT network on an empty host")
	more.row(fmt.Sprintf("one more NAT network on a host with %d", *big))
	noopC.row(fmt.Sprintf("no-op apply of %d networks with %d forwards", *big, *fwds))
	fmt.Printf("\nGoals: one more network on a host with %d: under 20 ms, the same order of writes as one on an empty host;\n", *big)
	fmt.Printf("no-op of %d networks and %d forwards: under 150 ms, 0 writes.\n", *big, *fwds)
	fmt.Printf("Whole command: wall clock of `guestnet apply`, process start and printing included. In-process: the same\n")
	fmt.Printf("apply inside this process (spec.Load, engine.Open, Converge): what guestnet itself spends.\n")
}

// caseTimes collects one case's runs, as commands and in-process.
type caseTimes struct {
	cmd, in []time.Duration
	last    result // of a command: its writes and nft objects
	inW     int
}

func (c *caseTimes) add(r result, in bool) {
	if in {
		c.in, c.inW = append(c.in, r.took), r.writes
		return
	}
	c.cmd, c.last = append(c.cmd, r.took), r
}

func (c *caseTimes) row(name string) {
	w := fmt.Sprint(c.last.writes)
	if c.inW != c.last.writes {
		w = fmt.Sprintf("%d (in-process %d)", c.last.writes, c.inW)
	}
	fmt.Printf("| %s | %s | %s | %s | %s |\n", name, ms(median(c.cmd)), ms(median(c.in)), w, c.last.nft)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func ratio(a, b []time.Duration) float64 { return float64(median(a)) / float64(median(b)) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// made lists the namespaces this run created, so even a failing run
// removes them all.
var made []string

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/apply:", err)
		for _, ns := range made {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		os.Exit(1)
	}
}

// lab makes every namespace the run needs before anything is timed, and
// removes them all at the end: the kernel tears a namespace down in the
// background, holding locks that would slow whatever is timed next.
type lab struct{ free []string }

func newLab(n int) *lab {
	l := &lab{}
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("gnbench%d-%d", os.Getpid(), i)
		peer := ns + "p"
		for _, x := range []string{ns, peer} {
			made = append(made, x)
			run("ip", "netns", "add", x)
		}
		run("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", peer)
		run("ip", "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "up0")
		run("ip", "-n", ns, "link", "set", "up0", "up")
		run("ip", "-n", ns, "route", "add", "default", "via", "198.51.100.254")
		l.free = append(l.free, ns)
	}
	time.Sleep(time.Second) // let namespace setup settle
	return l
}

func (l *lab) close() {
	for _, ns := range made {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// fresh runs f in an unused namespace of the lab.
func (l *lab) fresh(dir string, f func(ns string) time.Duration) time.Duration {
	ns := l.free[0]
	l.free = l.free[1:]
	os.RemoveAll(filepath.Join(dir, "state"))
	return f(ns)
}

func run(args ...string) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		check(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
}

func subnet(i int) string { return fmt.Sprintf("10.%d.%d", 100+i/256, i%256) }

// specOf is a spec of NAT networks from..to-1, with forwards port
// forwards spread over them (10 per network at most; each host port once).
func specOf(from, to, forwards int) string {
	var b strings.Builder
	b.WriteString("networks:\n")
	per := 0
	if forwards > 0 {
		per = (forwards + (to - from) - 1) / (to - from)
	}
	port := 10000
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "  n%d: {mode: nat, bridge: gn%d, ipv4: %s.1/24", i, i, subnet(i))
		if per > 0 && forwards > 0 {
			b.WriteString(", forwards: [")
			for j := 0; j < per && forwards > 0; j++ {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "{proto: tcp, port: %d, to: \"%s.10:22\"}", port, subnet(i))
				port++
				forwards--
			}
			b.WriteString("]")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// result is one timed apply: its wall clock, its kernel writes, and what
// its nftables action wrote (a delta's objects, or the table's rules).
type result struct {
	took   time.Duration
	writes int
	nft    string
}

func guestnetRun(dir, ns, specText string) result {
	spec := filepath.Join(dir, "spec.yaml")
	check(os.WriteFile(spec, []byte(specText), 0o644))
	start := time.Now()
	cmd := exec.Command(*bin, "--netns", ns, "--state-dir", filepath.Join(dir, "state"), "-o", "json", "apply", spec)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		check(fmt.Errorf("guestnet apply: %v: %s", err, stderr.String()))
	}
	var r struct {
		Writes  int `json:"kernel_writes"`
		Actions []struct {
			Command string `json:"command"`
			Op      string `json:"op"`
			Delta   map[string]json.RawMessage
			Rules   *struct {
				Chains []struct {
					Rules []json.RawMessage `json:"rules"`
				} `json:"chains"`
			} `json:"rules"`
		} `json:"actions"`
	}
	check(json.Unmarshal(out, &r))
	res := result{took: took, writes: r.Writes, nft: "none"}
	for _, a := range r.Actions {
		switch a.Op {
		case "nft-delta":
			res.nft = strings.TrimSuffix(strings.TrimPrefix(a.Command, "nft: "), " (table inet guestnet kept)")
		case "nft":
			n := 0
			for _, c := range a.Rules.Chains {
				n += 1 + len(c.Rules)
			}
			res.nft = fmt.Sprintf("whole table: %d chains and rules", n)
		}
	}
	return res
}

func guestnetApply(dir, ns string, n int, writes *int) time.Duration {
	var b strings.Builder
	b.WriteString("networks:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  n%d: {mode: nat, bridge: gn%d, ipv4: %s.1/24}\n", i, i, subnet(i))
	}
	spec := filepath.Join(dir, "spec.yaml")
	check(os.WriteFile(spec, []byte(b.String()), 0o644))
	start := time.Now()
	cmd := exec.Command(*bin, "--netns", ns, "--state-dir", filepath.Join(dir, "state"), "-o", "json", "apply", spec)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	d := time.Since(start)
	if err != nil {
		check(fmt.Errorf("guestnet apply: %v: %s", err, stderr.String()))
	}
	if writes != nil {
		var r struct {
			Writes int `json:"kernel_writes"`
		}
		check(json.Unmarshal(out, &r))
		*writes = r.Writes
	}
	return d
}

// shell writes the recipe: per network a bridge, its address, and the same
// forwarding and masquerade rules guestnet installs, in iptables form. With
// checks, each line first tests whether its item exists (how people make
// such scripts safe to re-run).
func shell(dir, ns string, n int, checks bool) time.Duration {
	var b strings.Builder
	b.WriteString("set -e\nsysctl -qw net.ipv4.ip_forward=1\n")
	for i := 0; i < n; i++ {
		br, s := fmt.Sprintf("gn%d", i), subnet(i)
		lines := []string{
			"ip link add " + br + " type bridge",
			"ip link set " + br + " up",
			"ip addr add " + s + ".1/24 dev " + br,
		}
		rules := []string{
			"-t nat POSTROUTING -s " + s + ".0/24 ! -o " + br + " -j MASQUERADE",
			"FORWARD -i " + br + " -o " + br + " -j ACCEPT",
			"FORWARD -o " + br + " -d " + s + ".0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			"FORWARD -o " + br + " -j REJECT",
			"FORWARD -i " + br + " -s " + s + ".0/24 -j ACCEPT",
			"FORWARD -i " + br + " -j REJECT",
		}
		if checks {
			b.WriteString("ip link show " + br + " >/dev/null 2>&1 || { " + strings.Join(lines, "; ") + "; }\n")
			for _, r := range rules {
				table, rule := "", r
				if strings.HasPrefix(r, "-t nat ") {
					table, rule = "-t nat ", strings.TrimPrefix(r, "-t nat ")
				}
				fmt.Fprintf(&b, "iptables %s-C %s 2>/dev/null || iptables %s-A %s\n", table, rule, table, rule)
			}
			continue
		}
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
		for _, r := range rules {
			table, rule := "", r
			if strings.HasPrefix(r, "-t nat ") {
				table, rule = "-t nat ", strings.TrimPrefix(r, "-t nat ")
			}
			fmt.Fprintf(&b, "iptables %s-A %s\n", table, rule)
		}
	}
	script := filepath.Join(dir, "recipe.sh")
	check(os.WriteFile(script, []byte(b.String()), 0o644))
	start := time.Now()
	run("ip", "netns", "exec", ns, "sh", script)
	return time.Since(start)
}
