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

// lab remembers every namespace and process the run made, so that a
// normal end, a failure (die) and a signal all remove exactly those and
// nothing else.
type lab struct {
	mu     sync.Mutex
	prefix string // every namespace of this run starts with it
	dir    string // state dir, configs, sockets
	nss    []string
	procs  []*exec.Cmd
	done   bool
}

var theLab *lab

func newLab() *lab {
	dir, err := os.MkdirTemp("", "guestnet-bench-bgp-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/bgp:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // FRR runs as user frr and keeps its sockets in here
	l := &lab{prefix: fmt.Sprintf("gnbgp%d-", os.Getpid()%100000), dir: dir}
	theLab = l
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench/bgp: %v: removing the namespaces of this run\n", s)
		l.close()
		os.Exit(130)
	}()
	return l
}

// close stops the processes this run started (SIGTERM, then SIGKILL, by
// PID) and deletes its namespaces.
func (l *lab) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	for _, c := range l.procs {
		stopCmd(c)
	}
	for _, ns := range l.nss {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench/bgp: ip netns del %s: %v: %s", ns, err, out)
		}
	}
	os.RemoveAll(l.dir)
}

func stopCmd(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// die reports err, cleans up and exits 1.
func die(err error) {
	fmt.Fprintln(os.Stderr, "bench/bgp:", err)
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

// netns makes a namespace with its loopback up.
func (l *lab) netns(name string) string {
	ns := l.prefix + name
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	run("ip", "netns", "add", ns)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// start runs a long-lived process inside ns (ip netns exec execs it: the
// PID is the process's own; "" runs it as it is), its output to a log
// file in the lab folder.
func (l *lab) start(name, ns string, args ...string) *exec.Cmd {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	c := exec.Command(args[0], args[1:]...)
	f, err := os.Create(filepath.Join(l.dir, name+".log"))
	if err != nil {
		die(err)
	}
	c.Stdout, c.Stderr = f, f
	l.mu.Lock()
	l.procs = append(l.procs, c)
	l.mu.Unlock()
	if err := c.Start(); err != nil {
		die(fmt.Errorf("%s: %v", strings.Join(args, " "), err))
	}
	return c
}

// logTail is the end of a process's log, for an error message.
func (l *lab) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// lan is a bridge in its own namespace; onLAN plugs a namespace into it.
type lan struct {
	l     *lab
	ns    string
	ports int
}

func (l *lab) lan() *lan {
	n := &lan{l: l, ns: l.netns("lan")}
	run("ip", "-n", n.ns, "link", "add", "br0", "type", "bridge")
	run("ip", "-n", n.ns, "link", "set", "br0", "up")
	return n
}

// plug gives ns a veth lan0 with addr (a /24) into the bridge.
func (n *lan) plug(ns, addr string) {
	n.ports++
	port := fmt.Sprintf("p%d", n.ports)
	run("ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", port, "netns", n.ns)
	run("ip", "-n", ns, "addr", "add", addr+"/24", "dev", "lan0")
	run("ip", "-n", ns, "link", "set", "lan0", "up")
	run("ip", "-n", n.ns, "link", "set", port, "master", "br0", "up")
}

// waitFor polls ok every 20 ms for up to d.
func waitFor(what string, d time.Duration, ok func() bool) {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
		if time.Now().After(deadline) {
			die(fmt.Errorf("%s: not within %v", what, d))
		}
	}
}
