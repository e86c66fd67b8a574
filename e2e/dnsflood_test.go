package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/guestnet/guestnet/internal/netns"
)

// floodSpec: network default forwards to an upstream that never answers
// (a blackhole route in the pretend internet: as slow as a resolver
// chasing a name server the guest's owner made mute), network other to
// dnsmasq.
const floodSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dns:
      domain: lab.internal
      upstream: [203.0.113.99]
  other:
    mode: nat
    bridge: gnat1
    ipv4: 10.99.1.1/24
    dns:
      domain: other.internal
      upstream: [203.0.113.53]
`

// floodDNS sends UDP queries for distinct names from ns to server, rate a
// second, until stop closes; it counts what it sent.
func floodDNS(t *testing.T, ns, server string, rate int, stop <-chan struct{}, sent *atomic.Uint64) {
	n, err := netns.Open(ns)
	if err != nil {
		t.Error(err)
		return
	}
	defer n.Close()
	var c net.PacketConn
	if err := n.Do(func() (err error) { c, err = net.ListenPacket("udp4", ":0"); return }); err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	dst, _ := net.ResolveUDPAddr("udp4", server)
	paced(rate, stop, sent, func(i int) bool {
		m := new(mdns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.slow.example.", i), mdns.TypeA)
		b, _ := m.Pack()
		_, err := c.WriteTo(b, dst)
		return err == nil
	})
}

// A guest of one network floods its DNS with queries its upstream never
// answers; a guest of another network must still get its answers, local
// and forwarded. The two networks share one miekg/dns server, one queue
// and the daemon's file descriptors (each forwarded query holds a socket
// for the upstream timeout).
func TestDNSFloodDoesNotStarveOtherNetwork(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host, inet := natHost(l)
	startUpstreamDNS(l, inet)
	l.must("ip", "-n", inet, "route", "add", "blackhole", "203.0.113.99/32")
	d := l.Serve_(host, l.Spec(floodSpec))
	ga := l.Guest(host, "default", "ga", "vga", "10.99.0.20/24", "10.99.0.1")
	gb := l.Guest(host, "other", "gb", "vgb", "10.99.1.20/24", "10.99.1.1")
	if r := l.dig(gb, "10.99.1.1", "web.example.test"); r.status != "NOERROR" || r.answers != 1 {
		t.Fatalf("before the flood, network other's guest: %s\n%s", r, r.out)
	}
	stop := make(chan struct{})
	var sent atomic.Uint64
	done := make(chan struct{})
	go func() { defer close(done); floodDNS(t, ga, "10.99.0.1:53", 20000, stop, &sent) }()
	// The flood has reached the forwarder: the daemon holds sockets for
	// queries waiting on the dead upstream (2 s each).
	waitFor(t, "the flood's forwarded queries waiting", func() bool {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
		return err == nil && len(fds) >= 150
	})
	asked, answered, maxFDs := 0, 0, 0
	var last digResult
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); {
		asked++
		r := l.dig(gb, "10.99.1.1", "web.example.test")
		if r.status == "NOERROR" && r.answers == 1 {
			answered++
		} else {
			last = r
		}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)); err == nil && len(fds) > maxFDs {
			maxFDs = len(fds)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	<-done
	t.Logf("flood from network default: %d queries; network other's guest: %d of %d answered; daemon's open files at most %d",
		sent.Load(), answered, asked, maxFDs)
	if answered < asked*9/10 {
		t.Errorf("network other's DNS starved by network default's flood: %d of %d answered (last: %s)", answered, asked, last)
	}
}

// holdTCP opens n TCP connections from ns to server, each with a query
// sent at once (miekg/dns drops a silent one after 2 s, an idle one after
// 8 s), in a child process of its own (the test binary again, running
// holdTCPChild): it has a file limit of its own. The child is ended
// by PID when the test ends. It returns how many connections are open.
func holdTCP(t *testing.T, ns, server string, n int) int {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("GUESTNET_HOLD_TCP=%s,%d", server, n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if held, ok := strings.CutPrefix(sc.Text(), "held "); ok {
			go io.Copy(io.Discard, out)
			k, _ := strconv.Atoi(held)
			return k
		}
	}
	t.Fatalf("the TCP holder ended before saying how many it holds")
	return 0
}

// holdTCPChild is holdTCP's child: the test binary run again with
// GUESTNET_HOLD_TCP=SERVER,COUNT, which TestMain sends here before
// anything else. It never returns (it is killed).
func holdTCPChild(arg string) {
	server, count, _ := strings.Cut(arg, ",")
	n, _ := strconv.Atoi(count)
	m := new(mdns.Msg)
	m.SetQuestion("held.lab.internal.", mdns.TypeA)
	b, _ := m.Pack()
	msg := append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
	var mu sync.Mutex
	var conns []net.Conn
	go func() { // ask again on each before the 8 s idle timeout, until killed
		for {
			time.Sleep(3 * time.Second)
			mu.Lock()
			cs := conns
			mu.Unlock()
			for _, c := range cs {
				c.Write(msg)
			}
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp4", server, time.Second)
		if err != nil {
			break
		}
		c.Write(msg)
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	mu.Lock()
	fmt.Printf("held %d\n", len(conns))
	mu.Unlock()
	select {}
}

// A guest of one network holds 22,000 TCP connections to its DNS (asking
// on each, as a client keeping them alive would); a guest of another
// network must still get its answers over UDP, forwarded, and over TCP.
func TestDNSTCPHoldDoesNotStarveOtherNetwork(t *testing.T) {
	l := newLab(t)
	needDig(t)
	host, inet := natHost(l)
	startUpstreamDNS(l, inet)
	d := l.Serve_(host, l.Spec(floodSpec))
	ga := l.Guest(host, "default", "ga", "vga", "10.99.0.20/24", "10.99.0.1")
	gb := l.Guest(host, "other", "gb", "vgb", "10.99.1.20/24", "10.99.1.1")
	held := holdTCP(t, ga, "10.99.0.1:53", 11000) + holdTCP(t, ga, "10.99.0.1:53", 11000)
	maxFDs := 0
	for range 10 { // the daemon accepts them
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)); err == nil && len(fds) > maxFDs {
			maxFDs = len(fds)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("network default's guest holds %d TCP connections; the daemon has at most %d open files", held, maxFDs)
	for _, q := range []struct {
		what string
		args []string
	}{
		{"forwarded over UDP", []string{"web.example.test"}},
		{"forwarded over TCP", []string{"+tcp", "web.example.test"}},
	} {
		if r := l.dig(gb, "10.99.1.1", q.args...); r.status != "NOERROR" || r.answers != 1 {
			t.Errorf("network other's guest, %s, while default's guest holds its connections: %s", q.what, r)
		} else {
			t.Logf("ok  network other's guest, %s: %s", q.what, r)
		}
	}
	if !alive(d) {
		t.Errorf("the daemon died while a guest held its TCP connections (out of file descriptors)")
	}
}

// alive reports whether the daemon's process is running (not ended, nor
// a zombie waiting for the test to reap it).
func alive(d *Daemon) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}
