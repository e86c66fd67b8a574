// Package benchlab is the benchmarks' throwaway lab: it remembers every
// namespace and process one run made, so that a normal end, a failure
// (Die) and a signal all remove exactly those and nothing else.
package benchlab

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lab is one run's namespaces, processes and folder.
type Lab struct {
	Prefix string // every namespace of this run starts with it
	Dir    string // state dirs, configs, sockets, logs

	name  string // the benchmark, in messages ("bench/scale")
	mu    sync.Mutex
	nss   []string
	procs []*exec.Cmd
	done  bool
}

var current *Lab // the one Die cleans up

// New makes the run's folder (readable by other users: FRR runs as user
// frr and keeps its sockets in it) and removes the run's namespaces on
// SIGINT, SIGTERM and SIGHUP. name is the benchmark's, tag starts its
// namespaces' names.
func New(name, tag string) *Lab {
	dir, err := os.MkdirTemp("", "guestnet-"+strings.ReplaceAll(name, "/", "-")+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	l := &Lab{Prefix: fmt.Sprintf("%s%d-", tag, os.Getpid()%100000), Dir: dir, name: name}
	current = l
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "%s: %v: removing the namespaces of this run\n", name, s)
		l.Close()
		os.Exit(130)
	}()
	return l
}

// Close stops the processes this run started (by PID) and deletes its
// namespaces and folder. The kernel frees a namespace's links in the
// background.
func (l *Lab) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	for _, c := range l.procs {
		StopCmd(c)
	}
	for _, ns := range l.nss {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: ip netns del %s: %v: %s", l.name, ns, err, out)
		}
	}
	os.RemoveAll(l.Dir)
}

// Die reports err, cleans up and exits 1.
func Die(err error) {
	name := "bench"
	if current != nil {
		name = current.name
	}
	fmt.Fprintln(os.Stderr, name+":", err)
	if current != nil {
		current.Close()
	}
	os.Exit(1)
}

// Run runs a command to its end; a failure is Die.
func Run(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		Die(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
	return string(out)
}

// Netns makes a namespace with its loopback up; its name is name after
// the run's prefix.
func (l *Lab) Netns(name string) string {
	ns := l.Prefix + name
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	Run("ip", "netns", "add", ns)
	Run("ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// DelNetns deletes one namespace of the run before the end.
func (l *Lab) DelNetns(ns string) {
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

// Start starts c and remembers it, to be stopped at the end.
func (l *Lab) Start(c *exec.Cmd) {
	l.mu.Lock()
	l.procs = append(l.procs, c)
	l.mu.Unlock()
	if err := c.Start(); err != nil {
		Die(fmt.Errorf("%s: %v", strings.Join(c.Args, " "), err))
	}
}

// Stop ends one process this run started, by its PID.
func (l *Lab) Stop(c *exec.Cmd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.procs {
		if x == c {
			l.procs = append(l.procs[:i], l.procs[i+1:]...)
			StopCmd(c)
			return
		}
	}
}

// StopCmd ends a started process: SIGTERM, then SIGKILL after 5 s.
func StopCmd(c *exec.Cmd) {
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
