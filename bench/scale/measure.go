package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/guestnet/guestnet/internal/netns"

	"github.com/guestnet/guestnet/bench/internal/benchlab"
)

// applied is one `guestnet apply`: wall clock (process start included) and
// the kernel writes it reports.
type applied struct {
	took   time.Duration
	writes int
}

// apply makes the host carry networks n0..n{n-1}, NAT, one /24 each, plus
// extra YAML under the first network (its forwards).
func (h *host) apply(n int, extra string) applied {
	var b strings.Builder
	b.WriteString("networks:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  %s:\n    mode: nat\n    bridge: gn%d\n    ipv4: %s.1/24\n", netName(i), i, subnet(i))
		if i == 0 {
			b.WriteString(extra)
		}
	}
	spec := h.state + ".yaml"
	if err := os.WriteFile(spec, []byte(b.String()), 0o644); err != nil {
		benchlab.Die(err)
	}
	start := time.Now()
	cmd := exec.Command(*bin, "--netns", h.ns, "--state-dir", h.state, "-o", "json", "apply", spec)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		benchlab.Die(fmt.Errorf("guestnet apply of %d networks in %s: %v: %s%s", n, h.ns, err, out, stderr.String()))
	}
	var r struct {
		Writes int `json:"kernel_writes"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		benchlab.Die(fmt.Errorf("guestnet apply -o json: %v: %s", err, out))
	}
	return applied{took, r.Writes}
}

// ruleLines counts the lines of `nft list table inet guestnet` in the host,
// the measure the issue uses (24 lines at 1 network, 13,011 at 1,000 today).
func (h *host) ruleLines() int {
	out := benchlab.Run("ip", "netns", "exec", h.ns, "nft", "list", "table", "inet", "guestnet")
	return strings.Count(out, "\n")
}

// reachable waits until the guest reaches the internet host through the
// NAT (ARP resolved, rules in place), so no measurement pays for setup.
func reachable(guest, addr string) {
	var out []byte
	var err error
	for try := 0; try < 10; try++ {
		out, err = exec.Command("ip", "netns", "exec", guest, "busybox", "ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		if err == nil {
			return
		}
	}
	benchlab.Die(fmt.Errorf("%s cannot reach %s: %v: %s", guest, addr, err, out))
}

// udpResult is one iperf3 UDP run.
type udpResult struct {
	received float64 // datagrams per second the server received (sent minus lost, as it counted)
	sent     float64 // datagrams per second the client sent
	// perCPU is datagrams received per CPU-second that the iperf3 client and
	// server processes used (iperf3's getrusage figures). The forwarding of
	// a datagram mostly runs in the sender's system time (veth hands it to
	// the softirq of the sending CPU), so this is the inverse of a packet's
	// whole cost, and less at the mercy of other load on the machine than
	// the rate is: a process that gets less CPU sends less but pays the same
	// per packet. Softirq work deferred to ksoftirqd is not counted.
	perCPU float64
}

// udpRate sends 64-byte UDP datagrams from guest to the internet host as
// fast as iperf3 can (-b 0).
func udpRate(guest string) udpResult {
	var out []byte
	var err error
	for try := 0; try < 3; try++ { // the server refuses while it finishes the previous test
		out, err = exec.Command("ip", "netns", "exec", guest, "iperf3", "-c", "198.51.100.2",
			"-u", "-l", "64", "-b", "0", "-t", fmt.Sprint(*seconds), "-J").Output()
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		benchlab.Die(fmt.Errorf("iperf3 -u from %s: %v: %s", guest, err, out))
	}
	var r struct {
		End struct {
			Received struct {
				Seconds float64 `json:"seconds"`
				Packets int64   `json:"packets"`
				Lost    int64   `json:"lost_packets"`
			} `json:"sum_received"`
			Sent struct {
				Seconds float64 `json:"seconds"`
				Packets int64   `json:"packets"`
			} `json:"sum_sent"`
			CPU struct {
				Client float64 `json:"host_total"`
				Server float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.Received.Seconds == 0 || r.End.Sent.Seconds == 0 {
		benchlab.Die(fmt.Errorf("iperf3 -u -J from %s: no sum_received or sum_sent (%v): %.300s", guest, err, out))
	}
	rc, sc, cpu := r.End.Received, r.End.Sent, r.End.CPU
	res := udpResult{received: float64(rc.Packets-rc.Lost) / rc.Seconds, sent: float64(sc.Packets) / sc.Seconds}
	if cpuSeconds := (cpu.Client + cpu.Server) / 100 * rc.Seconds; cpuSeconds > 0 {
		res.perCPU = float64(rc.Packets-rc.Lost) / cpuSeconds
	}
	return res
}

// tcpRate runs iperf3 TCP from the client (the host's internet side) to the
// host's public address, port 5201, which a forward sends to the guest. It
// returns Gbit/s received and Gbit per CPU-second of iperf3 client + server.
func tcpRate(client string) (gbps, perCPU float64) {
	out, err := exec.Command("ip", "netns", "exec", client, "iperf3", "-c", "198.51.100.1", "-p", "5201",
		"-t", fmt.Sprint(*seconds), "-J").Output()
	if err != nil {
		benchlab.Die(fmt.Errorf("iperf3 through the forward from %s: %v: %.300s", client, err, out))
	}
	var r struct {
		End struct {
			Received struct {
				BPS float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Client float64 `json:"host_total"`
				Server float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.Received.BPS == 0 {
		benchlab.Die(fmt.Errorf("iperf3 -J from %s: no sum_received (%v): %.300s", client, err, out))
	}
	gbps = r.End.Received.BPS / 1e9
	if cpu := (r.End.CPU.Client + r.End.CPU.Server) / 100; cpu > 0 {
		perCPU = gbps / cpu
	}
	return gbps, perCPU
}

// connRate opens and closes TCP connections through the forward on port
// 5202 for the measuring time. It returns the connections per second that
// completed and the connections per CPU-second this process used meanwhile
// (the dialer and, in the guest, the accepting goroutine; the kernel's work
// for a connection's packets mostly runs in their system time): like the
// UDP figure, a cost per connection that other load on the machine moves
// less than the rate. The client resets (linger 0) instead of leaving
// TIME_WAIT behind, so runs from the same namespace never run out of ports.
func connRate(client string) (rate, perCPU float64) {
	n, err := netns.Open(client)
	if err != nil {
		benchlab.Die(err)
	}
	defer n.Close()
	count := 0
	before := cpuTime()
	deadline := time.Now().Add(time.Duration(*seconds) * time.Second)
	err = n.Do(func() error {
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp4", "198.51.100.1:5202", time.Second)
			if err != nil {
				continue
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			count++
		}
		return nil
	})
	used := cpuTime() - before
	if err != nil {
		benchlab.Die(err)
	}
	if count == 0 {
		benchlab.Die(fmt.Errorf("no TCP connection from %s through the forward to port 5202 completed", client))
	}
	return float64(count) / float64(*seconds), float64(count) / used.Seconds()
}

// cpuTime is the user and system time this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		benchlab.Die(fmt.Errorf("getrusage: %v", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// acceptAndClose listens on the guest's port 5202 and closes every
// connection; closing the listener (lab end or process exit) stops it.
func acceptAndClose(guest, addr string) net.Listener {
	n, err := netns.Open(guest)
	if err != nil {
		benchlab.Die(err)
	}
	defer n.Close()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen("tcp4", addr+":5202"); return }); err != nil {
		benchlab.Die(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// forwardsYAML is the forwards of network n0: fill forwards in ranges of
// 1,000 ports from 20000 (each port to the same port of the guest), then
// the two measured ones, 5201 (iperf3) and 5202 (connect/close), last.
func forwardsYAML(fill int) string {
	to := subnet(0) + ".10"
	var b strings.Builder
	b.WriteString("    forwards:\n")
	for start := 20000; start < 20000+fill; start += 1000 {
		end := min(start+999, 20000+fill-1)
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d-%d, to: %s}\n", start, end, to)
	}
	fmt.Fprintf(&b, "      - {proto: tcp, port: 5201, to: %s}\n      - {proto: tcp, port: 5202, to: %s}\n", to, to)
	return b.String()
}
