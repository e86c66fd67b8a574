// Command forwards measures traffic through a port forward with 0, 1,000
// and 10,000 forwards installed: guestnet's map against the common
// iptables approach (one DNAT rule per forward in a chain, the measured
// forward last), same namespaces, same run. It prints a table: iperf3
// throughput and TCP connect/close rate, each as a share of the no-forward
// rate. Needs root, iperf3 and bin/guestnet; creates and removes its own
// namespaces only.
//
//	go run ./bench/forwards -guestnet bin/guestnet [-seconds 5]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/guestnet/guestnet/internal/netns"
)

var (
	bin     = flag.String("guestnet", "bin/guestnet", "guestnet binary")
	seconds = flag.Int("seconds", 5, "seconds per measurement")
)

var made []string

func die(err error) {
	fmt.Fprintln(os.Stderr, "bench/forwards:", err)
	for _, ns := range made {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	os.Exit(1)
}

func run(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		die(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
}

// lab makes client <-> host <-> guest; the host's uplink is 198.51.100.1.
func lab(i int) (cli, host, guest string) {
	p := fmt.Sprintf("gnfw%d-%d-", os.Getpid(), i)
	cli, host, guest = p+"cli", p+"host", p+"guest"
	for _, n := range []string{cli, host, guest} {
		made = append(made, n)
		run("ip", "netns", "add", n)
		run("ip", "-n", n, "link", "set", "lo", "up")
	}
	run("ip", "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", cli)
	run("ip", "-n", host, "addr", "add", "198.51.100.1/24", "dev", "up0")
	run("ip", "-n", host, "link", "set", "up0", "up")
	run("ip", "-n", cli, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	run("ip", "-n", cli, "link", "set", "eth0", "up")
	run("ip", "-n", host, "link", "add", "vg", "type", "veth", "peer", "name", "eth0", "netns", guest)
	run("ip", "-n", guest, "addr", "add", "10.99.0.10/24", "dev", "eth0")
	run("ip", "-n", guest, "link", "set", "eth0", "up")
	run("ip", "-n", guest, "route", "add", "default", "via", "10.99.0.1")
	return
}

// withGuestnet installs n forwards (and the measured one, 5201) with guestnet.
func withGuestnet(dir, host string, n int) {
	var b strings.Builder
	b.WriteString("networks:\n  default:\n    mode: nat\n    bridge: gnat0\n    ipv4: 10.99.0.1/24\n    forwards:\n")
	b.WriteString("      - {proto: tcp, port: 5201, to: 10.99.0.10}\n")
	for start := 20000; start < 20000+n; start += 1000 {
		end := min(start+999, 20000+n-1)
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d-%d, to: 10.99.0.10}\n", start, end)
	}
	spec := filepath.Join(dir, host+".yaml")
	os.WriteFile(spec, []byte(b.String()), 0o644)
	run(*bin, "--netns", host, "--state-dir", filepath.Join(dir, host), "apply", spec)
	run(*bin, "--netns", host, "--state-dir", filepath.Join(dir, host), "attach", "default", "vg")
}

// withIptables builds the same network the way hook scripts do: bridge,
// forwarding, masquerade, and one DNAT rule per forward, the measured last.
func withIptables(dir, host string, n int) {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:FWD - [0:0]\n-A PREROUTING -j FWD\n")
	b.WriteString("-A POSTROUTING -s 10.99.0.0/24 ! -d 10.99.0.0/24 -j MASQUERADE\n")
	for p := 20000; p < 20000+n; p++ {
		fmt.Fprintf(&b, "-A FWD -p tcp --dport %d -j DNAT --to-destination 10.99.0.10:%d\n", p, p)
	}
	b.WriteString("-A FWD -p tcp --dport 5201 -j DNAT --to-destination 10.99.0.10:5201\nCOMMIT\n")
	b.WriteString("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
	rules := filepath.Join(dir, host+".rules")
	os.WriteFile(rules, []byte(b.String()), 0o644)
	run("ip", "-n", host, "link", "add", "gnat0", "type", "bridge")
	run("ip", "-n", host, "addr", "add", "10.99.0.1/24", "dev", "gnat0")
	run("ip", "-n", host, "link", "set", "gnat0", "up")
	run("ip", "-n", host, "link", "set", "vg", "master", "gnat0", "up")
	run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run("ip", "netns", "exec", host, "iptables-restore", rules)
}

func iperf(cli string) float64 {
	out, err := exec.Command("ip", "netns", "exec", cli, "iperf3", "-c", "198.51.100.1", "-p", "5201", "-t", fmt.Sprint(*seconds), "-J").Output()
	if err != nil {
		die(fmt.Errorf("iperf3: %v", err))
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	json.Unmarshal(out, &r)
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// connRate opens and closes TCP connections to the forward for a while.
func connRate(cli string) float64 {
	n, err := netns.Open(cli)
	if err != nil {
		die(err)
	}
	defer n.Close()
	count := 0
	deadline := time.Now().Add(time.Duration(*seconds) * time.Second)
	n.Do(func() error {
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp4", "198.51.100.1:5201", time.Second)
			if err != nil {
				continue
			}
			c.Close()
			count++
		}
		return nil
	})
	return float64(count) / float64(*seconds)
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		die(fmt.Errorf("needs root (it creates network namespaces)"))
	}
	dir, _ := os.MkdirTemp("", "guestnet-bench-fw-")
	defer os.RemoveAll(dir)
	type result struct{ gbps, conns float64 }
	res := map[string]map[int]result{"guestnet (nft map)": {}, "iptables (DNAT rule per forward)": {}}
	i := 0
	for _, n := range []int{0, 1000, 10000} {
		for name, install := range map[string]func(string, string, int){"guestnet (nft map)": withGuestnet, "iptables (DNAT rule per forward)": withIptables} {
			i++
			cli, host, guest := lab(i)
			install(dir, host, n)
			srv := exec.Command("ip", "netns", "exec", guest, "iperf3", "-s", "-p", "5201")
			srv.Start()
			time.Sleep(300 * time.Millisecond)
			g := iperf(cli)
			srv.Process.Kill()
			srv.Wait()
			closer := acceptAndClose(guest)
			c := connRate(cli)
			closer.Close()
			res[name][n] = result{g, c}
			for _, ns := range []string{cli, host, guest} {
				exec.Command("ip", "netns", "del", ns).Run()
			}
		}
	}
	fmt.Printf("\n| forwards | approach | iperf3 Gbit/s | vs 0 forwards | connects/s | vs 0 forwards |\n|---|---|---|---|---|---|\n")
	for _, n := range []int{0, 1000, 10000} {
		for _, name := range []string{"guestnet (nft map)", "iptables (DNAT rule per forward)"} {
			r, base := res[name][n], res[name][0]
			fmt.Printf("| %d | %s | %.2f | %.0f %% | %.0f | %.0f %% |\n", n, name, r.gbps, 100*r.gbps/base.gbps, r.conns, 100*r.conns/base.conns)
		}
	}
	fmt.Println("\nGoal: at 10,000 forwards guestnet keeps >= 95 % of its no-forward rate.")
}

// acceptAndClose listens on the guest's 5201 and closes every connection.
func acceptAndClose(guest string) net.Listener {
	n, err := netns.Open(guest)
	if err != nil {
		die(err)
	}
	defer n.Close()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.99.0.10:5201"); return }); err != nil {
		die(err)
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
