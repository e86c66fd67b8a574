package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// crashRun runs guestnet with the test hook GUESTNET_CRASH_AFTER_WRITES=n
// and reports whether it died of SIGKILL (as it must, when the plan has
// at least n writes).
func (l *Lab) crashRun(ns string, n int, args ...string) bool {
	l.t.Helper()
	cmd := exec.Command(guestnetBin, append([]string{"--netns", ns, "--state-dir", l.StateDir}, args...)...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("GUESTNET_CRASH_AFTER_WRITES=%d", n))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	l.t.Logf("guestnet %v with a crash after write %d was not killed: %v\n%s", args, n, err, out.String())
	return false
}

// planWrites is how many kernel writes applying spec would make now: one
// per action of the plan.
func (l *Lab) planWrites(ns string, args ...string) int {
	l.t.Helper()
	out, errs, code := l.Run(ns, append([]string{"-o", "json"}, args...)...)
	if code != 0 && code != 2 {
		l.t.Fatalf("guestnet %v: exit %d\n%s", args, code, errs)
	}
	var p struct {
		Changes int `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		l.t.Fatalf("guestnet %v: %v\n%s", args, err, out)
	}
	return p.Changes
}

// sameAsBefore fails the test when the namespace (links, addresses,
// routes, every nft table, ip_forward, guestnet's state) differs from
// before; an empty state file equals none.
func (l *Lab) sameAsBefore(ns, before, what string) {
	l.t.Helper()
	after := l.snapshot(ns)
	if after != before && after != before+"{}\n" {
		l.t.Fatalf("%s: the namespace is not as before the first apply:\n%s", what, diffLines(before, after))
	}
}

// manySpec declares n networks, nat and routed in turn (so ip_forward is
// turned on), plus a bridge-mode network on eth1 and a floating address.
func manySpec(n int) string {
	var b strings.Builder
	b.WriteString("networks:\n  lan: {mode: bridge, bridge: br0, uplink: eth1}\n")
	b.WriteString("  n000: {mode: nat, bridge: gn000, ipv4: 10.100.0.1/24, floating: [{public: 198.51.100.10, guest: 10.100.0.10}]}\n")
	for i := 1; i < n-1; i++ {
		mode := map[bool]string{true: "nat", false: "routed"}[i%2 == 0]
		fmt.Fprintf(&b, "  n%03d: {mode: %s, bridge: gn%03d, ipv4: 10.%d.%d.1/24}\n", i, mode, i, 100+i/250, i%250)
	}
	return b.String()
}

// TestCrashDuring200NetworkApply kills `guestnet apply` of 200 networks
// (kill -9, through the test hook) at 20 points spread over its writes;
// after each, destroy (in 4 cases an apply first, in 4 others a destroy
// killed half way first) must leave the namespace exactly
// as it was before the first apply, ip_forward off included.
func TestCrashDuring200NetworkApply(t *testing.T) {
	start := time.Now()
	l := newLab(t)
	host := allModesHost(l)
	spec := l.Spec(manySpec(200))
	before := l.snapshot(host)
	total := l.planWrites(host, "plan", spec)
	if total < 400 {
		t.Fatalf("the 200-network plan has %d writes; expected several per network", total)
	}
	for i := range 20 {
		n := 1 + i*(total-1)/19
		what := fmt.Sprintf("apply killed after write %d/%d", n, total)
		if !l.crashRun(host, n, "apply", spec) {
			t.Fatalf("%s: guestnet was not killed", what)
		}
		switch i % 5 {
		case 1:
			l.Guestnet(host, "apply", spec)
			if _, _, code := l.Run(host, "plan", spec); code != 0 {
				t.Fatalf("%s: plan after the re-apply: exit %d, want 0", what, code)
			}
			what += ", re-applied"
		case 3:
			d := l.planWrites(host, "plan", l.Spec("networks: {}\n"))
			if d > 1 && l.crashRun(host, d/2, "destroy", spec) {
				what += fmt.Sprintf(", destroy killed after write %d/%d", d/2, d)
			}
		}
		l.Guestnet(host, "destroy", spec)
		l.sameAsBefore(host, before, what+", destroyed")
	}
	t.Logf("20 crashes of a %d-write apply, each destroyed to the namespace as before, in %v", total, time.Since(start).Round(time.Millisecond))
}

// TestCrashAtEachWriteAllModes kills apply of every mode after each of its
// writes (bridge mode's uplink move among them), then destroys, re-applying
// first every other time; then it kills destroy after each of its writes
// and destroys again. Each time the namespace must be as before.
func TestCrashAtEachWriteAllModes(t *testing.T) {
	l := newLab(t)
	host := allModesHost(l)
	// The floating address goes with the nat network, declared last.
	spec := l.Spec(strings.Replace(allModesSpec, "    ipv4: 10.99.0.1/24\n", "    ipv4: 10.99.0.1/24\n    floating: [{public: 198.51.100.10, guest: 10.99.0.10}]\n", 1))
	before := l.snapshot(host)
	total := l.planWrites(host, "plan", spec)
	for n := 1; n <= total; n++ {
		what := fmt.Sprintf("apply killed after write %d/%d", n, total)
		if !l.crashRun(host, n, "apply", spec) {
			t.Fatalf("%s: guestnet was not killed", what)
		}
		if n%2 == 0 {
			l.Guestnet(host, "apply", spec)
			what += ", re-applied"
		}
		l.Guestnet(host, "destroy", spec)
		l.sameAsBefore(host, before, what+", destroyed")
	}
	l.Guestnet(host, "apply", spec)
	applied := l.snapshot(host)
	destroy := l.planWrites(host, "plan", l.Spec("networks: {}\n"))
	for n := 1; n <= destroy; n++ {
		what := fmt.Sprintf("destroy killed after write %d/%d", n, destroy)
		if !l.crashRun(host, n, "destroy", spec) {
			t.Fatalf("%s: guestnet was not killed", what)
		}
		l.Guestnet(host, "destroy", spec)
		l.sameAsBefore(host, before, what+", destroyed again")
		l.Guestnet(host, "apply", spec)
		if got := l.snapshot(host); stripState(got) != stripState(applied) {
			t.Fatalf("%s: apply after it differs:\n%s", what, diffLines(applied, got))
		}
	}
	t.Logf("apply killed after each of its %d writes and destroy after each of its %d: the namespace came back every time", total, destroy)
}

// stripState drops the state file (its ruleset generation mark differs
// from one apply to the next) from a snapshot.
func stripState(s string) string { return s[:strings.LastIndex(s, "\nstate:")] }

// TestAttachDetachUnderRulesetFlush runs 1,000 attach and detach commands,
// a third of the attaches binding the port (--ip --mac), while the test
// flushes the whole ruleset every 200 ms and guestnet serve repairs it:
// no command may fail. Retries are counted from the commands' stderr.
func TestAttachDetachUnderRulesetFlush(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	spec := l.Spec(natSpec)
	d := l.Serve_(host, spec)
	const taps = 10
	for i := range taps {
		l.must("ip", "-n", host, "tuntap", "add", "dev", fmt.Sprintf("tap%d", i), "mode", "tap")
	}
	stop := make(chan struct{})
	var flushes atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := exec.Command("ip", "netns", "exec", host, "nft", "flush", "ruleset").Run(); err == nil {
					flushes.Add(1)
				}
			}
		}
	}()
	start := time.Now()
	var mu sync.Mutex
	var failed, retries, bound int
	why := map[string]int{} // the kinds of errors retried
	run := func(args ...string) {
		_, errs, code := l.Run(host, args...)
		mu.Lock()
		defer mu.Unlock()
		for _, line := range strings.Split(errs, "\n") {
			if _, err, ok := strings.Cut(line, "msg=retrying"); ok {
				retries++
				kind := "a failed write (undone)"
				if strings.Contains(err, "err=\"observe ") {
					kind = "a failed read of the host"
				}
				why[kind]++
			}
		}
		if code != 0 {
			failed++
			t.Errorf("guestnet %v: exit %d\n%s", args, code, errs)
		}
	}
	// Two workers, each with its own TAPs: the commands overlap where they
	// do not hold the state lock.
	var workers sync.WaitGroup
	for w := range 2 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := w; i < 500; i += 2 {
				tap := fmt.Sprintf("tap%d", i%taps)
				attach := []string{"attach", "default", tap}
				if i%3 == 0 {
					attach = append(attach, "--ip", fmt.Sprintf("10.99.0.%d", 10+i%taps), "--mac", fmt.Sprintf("52:54:00:00:00:%02x", i%taps))
					mu.Lock()
					bound++
					mu.Unlock()
				}
				run(attach...)
				run("detach", "default", tap)
			}
		}()
	}
	workers.Wait()
	wall := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("1000 commands (%d attaches with a binding) under %d ruleset flushes: %d failed, %d retries, %v (%.1f ms a command)",
		bound, flushes.Load(), failed, retries, wall.Round(time.Millisecond), float64(wall.Milliseconds())/1000)
	t.Logf("errors retried: %v", why)
	if flushes.Load() < 10 {
		t.Errorf("only %d flushes happened: the test did not exercise what it claims", flushes.Load())
	}
	// The daemon repairs the last flush; then nothing of the ports is left.
	waitFor(t, "the daemon's repair of the last flush", func() bool {
		_, _, code := l.Run(host, "plan", spec)
		return code == 0
	})
	if out := l.In(host, "nft", "list", "set", "bridge", "guestnet", "bound"); strings.Contains(out, "tap") {
		t.Errorf("a detached port is still bound:\n%s", out)
	}
	d.Stop()
	t.Logf("daemon: %d drift repairs retried, %d failed repairs", strings.Count(d.log.String(), "msg=retrying"), strings.Count(d.log.String(), "drift repair failed"))
}

// TestDriftRepairRetriedOnTimer makes drift the daemon cannot repair at
// first (its bridge down, and a route over its subnet that the spec check
// refuses): the failed repair must be tried again on a timer, with growing
// waits, although no kernel event comes; once the route is gone, the
// bridge is up again.
func TestDriftRepairRetriedOnTimer(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	spec := l.Spec(natSpec)
	d := l.Serve_(host, spec)
	// A route over the network's subnet makes the spec contradict the
	// host: every repair fails its check until the route is gone.
	l.must("ip", "-n", host, "route", "add", "10.99.0.0/16", "via", "198.51.100.126")
	l.must("ip", "-n", host, "link", "set", "gnat0", "down")
	waitFor(t, "four failed repairs in a row", func() bool {
		return strings.Count(d.log.String(), "drift repair failed") >= 4
	})
	var waits []string
	for _, line := range strings.Split(d.log.String(), "\n") {
		if _, w, ok := strings.Cut(line, "retry_in="); ok && strings.Contains(line, "drift repair failed") {
			waits = append(waits, w)
		}
	}
	if len(waits) < 4 || strings.Join(waits[:4], " ") != "50ms 100ms 200ms 400ms" {
		t.Errorf("waits between failed repairs: %v, want 50ms 100ms 200ms 400ms first", waits)
	}
	l.must("ip", "-n", host, "route", "del", "10.99.0.0/16")
	waitFor(t, "the repair once the route is gone", func() bool {
		_, _, code := l.Run(host, "plan", spec)
		return code == 0
	})
	t.Logf("failed repairs retried after %v", waits)
}
