package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/guestnet/guestnet/bench/internal/benchlab"
)

// lab is the run's benchlab.Lab, with this benchmark's LAN and peers.
type lab struct{ *benchlab.Lab }

func newLab() *lab { return &lab{benchlab.New("bench/bgp", "gnbgp")} }

// start runs a long-lived process inside ns (ip netns exec execs it: the
// PID is the process's own; "" runs it as it is), its output to a log
// file in the lab folder.
func (l *lab) start(name, ns string, args ...string) *exec.Cmd {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	c := exec.Command(args[0], args[1:]...)
	f, err := os.Create(filepath.Join(l.Dir, name+".log"))
	if err != nil {
		benchlab.Die(err)
	}
	c.Stdout, c.Stderr = f, f
	l.Start(c)
	return c
}

// logTail is the end of a process's log, for an error message.
func (l *lab) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, name+".log"))
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
	n := &lan{l: l, ns: l.Netns("lan")}
	benchlab.Run("ip", "-n", n.ns, "link", "add", "br0", "type", "bridge")
	benchlab.Run("ip", "-n", n.ns, "link", "set", "br0", "up")
	return n
}

// plug gives ns a veth lan0 with addr (a /24) into the bridge.
func (n *lan) plug(ns, addr string) {
	n.ports++
	port := fmt.Sprintf("p%d", n.ports)
	benchlab.Run("ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", port, "netns", n.ns)
	benchlab.Run("ip", "-n", ns, "addr", "add", addr+"/24", "dev", "lan0")
	benchlab.Run("ip", "-n", ns, "link", "set", "lan0", "up")
	benchlab.Run("ip", "-n", n.ns, "link", "set", port, "master", "br0", "up")
}

// waitFor polls ok every 20 ms for up to d.
func waitFor(what string, d time.Duration, ok func() bool) {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
		if time.Now().After(deadline) {
			benchlab.Die(fmt.Errorf("%s: not within %v", what, d))
		}
	}
}
