package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernel reads one namespace's main table through its own netlink
// handle: a dump of a thousand routes costs about a millisecond, so the
// waits below poll every 5 ms without starting a process each time.
type kernel struct {
	name string
	h    *netlink.Handle
}

func openKernel(name, ns string) *kernel {
	n, err := netns.GetFromName(ns)
	if err != nil {
		die(fmt.Errorf("netns %s: %w", ns, err))
	}
	defer n.Close()
	h, err := netlink.NewHandleAt(n)
	if err != nil {
		die(fmt.Errorf("netlink in %s: %w", ns, err))
	}
	return &kernel{name: name, h: h}
}

// bgpRoutes is the set of main-table destinations of protocol bgp (186),
// the protocol guestnet's speaker and FRR's zebra both install with.
func (k *kernel) bgpRoutes() map[string]bool {
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: 186},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		die(fmt.Errorf("%s: list routes: %w", k.name, err))
	}
	have := make(map[string]bool, len(rs))
	for _, r := range rs {
		if r.Dst != nil {
			have[r.Dst.String()] = true
		}
	}
	return have
}

// count is how many of want the kernel has.
func (k *kernel) count(want []string) int {
	have, n := k.bgpRoutes(), 0
	for _, p := range want {
		if have[p] {
			n++
		}
	}
	return n
}

// waitCount polls the kernels every 5 ms until each holds exactly n of
// want, and returns, per kernel, how long after t0 that first held.
func waitCount(t0 time.Time, want []string, n int, limit time.Duration, ks ...*kernel) []time.Duration {
	took := make([]time.Duration, len(ks))
	left := len(ks)
	for left > 0 {
		for i, k := range ks {
			if took[i] == 0 && k.count(want) == n {
				took[i] = time.Since(t0)
				left--
			}
		}
		if time.Since(t0) > limit {
			var s []string
			for _, k := range ks {
				s = append(s, fmt.Sprintf("%s has %d", k.name, k.count(want)))
			}
			die(fmt.Errorf("waiting for %d of %d prefixes: not within %v (%s)", n, len(want), limit, strings.Join(s, ", ")))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return took
}

// rss is a process's resident memory in MiB (VmRSS).
func rss(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb float64
			fmt.Sscan(f[1], &kb)
			return kb / 1024
		}
	}
	return 0
}

// prefixes i of a bulk run: 10.(100+i/256).(i%256).0/24.
func bulkPrefixes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = (&net.IPNet{IP: net.IPv4(10, byte(100+i/256), byte(i%256), 0), Mask: net.CIDRMask(24, 32)}).String()
	}
	return out
}

// bulkNetworks are the routed networks whose subnets are bulkPrefixes.
func bulkNetworks(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("b%d: {mode: routed, bridge: gb%d, ipv4: 10.%d.%d.1/24}", i, i, 100+i/256, i%256)
	}
	return out
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// spread is "median (min-max)" of runs.
func spread(d []time.Duration) string {
	if len(d) == 1 {
		return ms(d[0])
	}
	return fmt.Sprintf("%s (%s-%s)", ms(median(d)), ms(slices.Min(d)), ms(slices.Max(d)))
}

func maxOf(d []time.Duration) time.Duration { return slices.Max(d) }
