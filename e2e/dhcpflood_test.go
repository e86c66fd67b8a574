package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/netns"
)

// floodFrames sends frames out of eth0 of ns, round and round, rate a
// second, until stop closes; it counts what it sent.
func floodFrames(t *testing.T, ns string, frames [][]byte, rate int, stop <-chan struct{}, sent *atomic.Uint64) {
	n, err := netns.Open(ns)
	if err != nil {
		t.Error(err)
		return
	}
	defer n.Close()
	var fd, ifindex int
	if err := n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	}); err != nil {
		t.Error(err)
		return
	}
	defer unix.Close(fd)
	paced(rate, stop, sent, func(i int) bool {
		b := frames[i%len(frames)]
		to := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
		copy(to.Addr[:], b[:6])
		return unix.Sendto(fd, b, 0, to) == nil
	})
}

// paced calls send(0), send(1), ... rate times a second, in bursts each
// millisecond, until stop closes, counting the sends that succeeded.
func paced(rate int, stop <-chan struct{}, sent *atomic.Uint64, send func(i int) bool) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for range rate / 1000 {
			if send(i) {
				sent.Add(1)
			}
			i++
		}
	}
}

// A guest of network a floods the one DHCP socket with 20,000 DISCOVERs
// a second from invented MACs; a guest of network b must still get its
// lease from a real client (busybox udhcpc), every time it asks.
func TestDHCPFloodDoesNotStarveOtherNetwork(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	d := l.Serve_(host, l.Spec(twoDHCPSpec))
	ga := l.dhcpGuest(host, "a", "ga", "vga", "02:00:00:00:0a:01")
	gb := l.dhcpGuest(host, "b", "gb", "vgb", "02:00:00:00:0b:01")
	src := hwaddr(t, "02:00:00:00:0a:01")
	bcastMAC := hwaddr(t, "ff:ff:ff:ff:ff:ff")
	var frames [][]byte
	for i := range 4096 {
		chaddr := net.HardwareAddr{0x02, 0xaa, 0, 0, byte(i >> 8), byte(i)}
		f := frame{src: src, dst: bcastMAC, sip: netip.IPv4Unspecified(), dip: netip.MustParseAddr("255.255.255.255"),
			msg: dhcpMsg(t, dhcpv4.MessageTypeDiscover, chaddr)}
		frames = append(frames, f.frames()...)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var sent atomic.Uint64
	go func() { defer close(done); floodFrames(t, ga, frames, 20000, stop, &sent) }()
	defer func() { close(stop); <-done }()
	waitFor(t, "a second of the flood sent", func() bool { return sent.Load() >= 20000 })
	hook := l.clientScript()
	asked, got := 0, 0
	var slowest time.Duration
	for range 5 {
		asked++
		start := time.Now()
		out, err := l.tryIn(gb, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", hook)
		if took := time.Since(start); took > slowest {
			slowest = took
		}
		if err == nil {
			got++
		} else {
			t.Logf("udhcpc in network b: %v\n%s", err, out)
		}
		l.tryIn(gb, "ip", "addr", "flush", "dev", "eth0")
	}
	t.Logf("network a's guest sent %d DISCOVERs; network b's guest got a lease %d of %d times (slowest %v); daemon's open files %d",
		sent.Load(), got, asked, slowest.Round(time.Millisecond), openFiles(d))
	if got != asked {
		t.Errorf("network b's DHCP starved by network a's flood: %d of %d leases", got, asked)
	}
	if !alive(d) {
		t.Errorf("the daemon died under the flood")
	}
}

// openFiles is how many file descriptors the daemon holds.
func openFiles(d *Daemon) int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	return len(es)
}
