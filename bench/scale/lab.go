package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/guestnet/guestnet/bench/internal/benchlab"
)

// lab is the run's benchlab.Lab, with this benchmark's hosts and guests.
type lab struct{ *benchlab.Lab }

func newLab() *lab { return &lab{benchlab.New("bench/scale", "gnsc")} }

// start runs a long-lived process in ns (ip netns exec execs it, so the
// PID is the process's own) and gives it time to listen.
func (l *lab) start(ns string, args ...string) *exec.Cmd {
	c := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	l.Start(c)
	time.Sleep(300 * time.Millisecond)
	return c
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
	h := &host{ns: l.Netns(name), inet: l.Netns(name + "i")}
	h.state = filepath.Join(l.Dir, name)
	benchlab.Run("ip", "-n", h.ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", h.inet)
	benchlab.Run("ip", "-n", h.ns, "addr", "add", "198.51.100.1/24", "dev", "up0")
	benchlab.Run("ip", "-n", h.ns, "link", "set", "up0", "up")
	benchlab.Run("ip", "-n", h.inet, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	benchlab.Run("ip", "-n", h.inet, "link", "set", "eth0", "up")
	benchlab.Run("ip", "-n", h.ns, "route", "add", "default", "via", "198.51.100.2")
	h.server = l.start(h.inet, "iperf3", "-s", "-B", "198.51.100.2")
	return h
}

// guestnet runs the binary against the host's namespace and state dir.
func (h *host) guestnet(args ...string) string {
	return benchlab.Run(append([]string{*bin, "--netns", h.ns, "--state-dir", h.state}, args...)...)
}

// guest makes a guest namespace on network net (index i of the spec): a
// veth whose host end guestnet attaches to the network's bridge, bound to
// the guest's address and MAC as `guestnet serve` would bind a leased guest.
func (l *lab) guest(h *host, i int) (ns, port string) {
	h.guests++
	port = fmt.Sprintf("vg%d", h.guests)
	ns = l.Netns(fmt.Sprintf("%sg%d", strings.TrimPrefix(h.ns, l.Prefix), h.guests))
	s := subnet(i)
	mac := "02:00:00:00:00:10"
	benchlab.Run("ip", "-n", h.ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	benchlab.Run("ip", "-n", ns, "link", "set", "eth0", "address", mac)
	benchlab.Run("ip", "-n", ns, "addr", "add", s+".10/24", "dev", "eth0")
	benchlab.Run("ip", "-n", ns, "link", "set", "eth0", "up")
	benchlab.Run("ip", "-n", ns, "route", "add", "default", "via", s+".1")
	h.guestnet("attach", netName(i), port, "--ip", s+".10", "--mac", mac)
	return ns, port
}

// subnet i is 10.(100+i/256).(i%256).0/24: 4,000 networks fit below 10.116.
func subnet(i int) string { return fmt.Sprintf("10.%d.%d", 100+i/256, i%256) }

func netName(i int) string { return fmt.Sprintf("n%d", i) }
