package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lab remembers every namespace and process the run made, so that a normal
// end, a failure (die) and a signal all remove exactly those and nothing else.
type lab struct {
	mu     sync.Mutex
	prefix string // every namespace of this run starts with it
	dir    string // state dirs and spec files
	nss    []string
	procs  []*exec.Cmd
	done   bool
}

var theLab *lab

func newLab() *lab {
	dir, err := os.MkdirTemp("", "guestnet-bench-scale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/scale:", err)
		os.Exit(1)
	}
	l := &lab{prefix: fmt.Sprintf("gnsc%d-", os.Getpid()), dir: dir}
	theLab = l
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench/scale: %v: removing the namespaces of this run\n", s)
		l.close()
		os.Exit(130)
	}()
	return l
}

// close stops the processes this run started (by PID) and deletes its
// namespaces. The kernel frees a namespace's links in the background.
func (l *lab) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	for _, c := range l.procs {
		if c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	for _, ns := range l.nss {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench/scale: ip netns del %s: %v: %s", ns, err, out)
		}
	}
	os.RemoveAll(l.dir)
}

// die reports err, cleans up and exits 1.
func die(err error) {
	fmt.Fprintln(os.Stderr, "bench/scale:", err)
	if theLab != nil {
		theLab.close()
	}
	os.Exit(1)
}

func run(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		die(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
	return string(out)
}

// netns makes a namespace with its loopback up; the name is prefixed with
// the run's prefix.
func (l *lab) netns(name string) string {
	ns := l.prefix + name
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	run("ip", "netns", "add", ns)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// delNetns deletes one namespace of the run before the end.
func (l *lab) delNetns(ns string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.nss {
		if x == ns {
			l.nss = append(l.nss[:i], l.nss[i+1:]...)
			break
		}
	}
	exec.Command("ip", "netns", "del", ns).Run()
}

// start runs a long-lived process in ns (ip netns exec execs it, so the
// PID is the process's own) and gives it time to listen.
func (l *lab) start(ns string, args ...string) *exec.Cmd {
	c := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	l.mu.Lock()
	l.procs = append(l.procs, c)
	l.mu.Unlock()
	if err := c.Start(); err != nil {
		die(fmt.Errorf("%s: %v", strings.Join(args, " "), err))
	}
	time.Sleep(300 * time.Millisecond)
	return c
}

// stop ends one process this run started, by its PID.
func (l *lab) stop(c *exec.Cmd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.procs {
		if x == c {
			l.procs = append(l.procs[:i], l.procs[i+1:]...)
			c.Process.Kill()
			c.Wait()
			return
		}
	}
}

// host is a namespace guestnet manages, with an uplink to its own pretend
// internet: host up0 198.51.100.1/24 <-> inet eth0 198.51.100.2/24, the
// host's default route via the internet host, where iperf3 -s listens.
type host struct {
	ns, inet, state string
	server          *exec.Cmd // iperf3 -s in inet
	guests          int       // veths made so far, for unique names
}

func (l *lab) host(name string) *host {
	h := &host{ns: l.netns(name), inet: l.netns(name + "i")}
	h.state = filepath.Join(l.dir, name)
	run("ip", "-n", h.ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", h.inet)
	run("ip", "-n", h.ns, "addr", "add", "198.51.100.1/24", "dev", "up0")
	run("ip", "-n", h.ns, "link", "set", "up0", "up")
	run("ip", "-n", h.inet, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	run("ip", "-n", h.inet, "link", "set", "eth0", "up")
	run("ip", "-n", h.ns, "route", "add", "default", "via", "198.51.100.2")
	h.server = l.start(h.inet, "iperf3", "-s", "-B", "198.51.100.2")
	return h
}

// guestnet runs the binary against the host's namespace and state dir.
func (h *host) guestnet(args ...string) string {
	return run(append([]string{*bin, "--netns", h.ns, "--state-dir", h.state}, args...)...)
}

// guest makes a guest namespace on network net (index i of the spec): a
// veth whose host end guestnet attaches to the network's bridge, bound to
// the guest's address and MAC as `guestnet serve` would bind a leased guest.
func (l *lab) guest(h *host, i int) (ns, port string) {
	h.guests++
	port = fmt.Sprintf("vg%d", h.guests)
	ns = l.netns(fmt.Sprintf("%sg%d", strings.TrimPrefix(h.ns, l.prefix), h.guests))
	s := subnet(i)
	mac := "02:00:00:00:00:10"
	run("ip", "-n", h.ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run("ip", "-n", ns, "link", "set", "eth0", "address", mac)
	run("ip", "-n", ns, "addr", "add", s+".10/24", "dev", "eth0")
	run("ip", "-n", ns, "link", "set", "eth0", "up")
	run("ip", "-n", ns, "route", "add", "default", "via", s+".1")
	h.guestnet("attach", netName(i), port, "--ip", s+".10", "--mac", mac)
	return ns, port
}

// subnet i is 10.(100+i/256).(i%256).0/24: 4,000 networks fit below 10.116.
func subnet(i int) string { return fmt.Sprintf("10.%d.%d", 100+i/256, i%256) }

func netName(i int) string { return fmt.Sprintf("n%d", i) }
