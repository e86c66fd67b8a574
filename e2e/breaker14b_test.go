package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Breaker tests of issue 14's serve --netns (it re-executes itself in
// the namespace) and of guestnet destroy while serve runs.

const b14bSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dhcp:
      range: 10.99.0.100-10.99.0.199
      lease: 1h
  iso:
    mode: isolated
    bridge: giso0
`

// startServeIn runs `guestnet --netns ns serve` from inside namespace
// from (ip netns exec execs, so the PID is guestnet's), and waits until
// the daemon answers, or returns its exit and output once it stops.
func (l *Lab) startServeIn(from, ns, spec string, extra ...string) (*Daemon, error) {
	l.t.Helper()
	d := &Daemon{log: &bytes.Buffer{}}
	args := append([]string{"netns", "exec", from, guestnetBin, "--netns", ns, "--state-dir", l.StateDir,
		"serve", "--config", spec}, extra...)
	d.cmd = exec.Command("ip", args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	l.t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			return d, fmt.Errorf("serve stopped: %v\n%s", err, d.log)
		default:
		}
		if _, errs, code := l.Run(ns, "leases"); code == 0 && strings.Contains(errs, "from the daemon") {
			return d, nil
		}
	}
	l.t.Fatalf("daemon did not become ready:\n%s", d.log)
	return nil, nil
}

// netnsInode is the inode of a process's network namespace.
func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// metricsIn GETs /metrics at addr from inside ns.
func metricsIn(ns, addr string) (string, error) {
	c, err := dialIn(ns, addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	return string(b), err
}

// serve --netns host started from inside namespace outer: the PID the
// caller holds is the daemon's, in host; --metrics listens in outer (where
// the operator started it), not in host, also after a SIGHUP; a second
// serve on host is refused and the first goes on; SIGTERM stops it.
func TestBreaker14bServeFromOtherNamespace(t *testing.T) {
	l := newLab(t)
	outer, host := l.NS("outer"), l.NS("host")
	spec := l.Spec(b14bSpec)
	addr := fmt.Sprintf("127.0.0.1:%d", 20000+os.Getpid()%1000)
	d, err := l.startServeIn(outer, host, spec, "--metrics", addr)
	if err != nil {
		t.Fatal(err)
	}
	pid := d.cmd.Process.Pid
	if got, want := netnsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), netnsInode(t, "/run/netns/"+host); got != want {
		t.Fatalf("PID %d is in netns inode %d, want host's %d", pid, got, want)
	}
	if body, err := metricsIn(outer, addr); err != nil || !strings.Contains(body, "guestnet_apply_duration_seconds") {
		t.Fatalf("metrics in outer: %v\n%s", err, body)
	}
	if _, err := dialIn(host, addr, 300*time.Millisecond); err == nil {
		t.Fatalf("metrics answer in host's namespace too: %s", addr)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload logged", func() bool { return strings.Contains(d.log.String(), "reloaded") })
	if body, err := metricsIn(outer, addr); err != nil || !strings.Contains(body, "guestnet_apply_duration_seconds") {
		t.Fatalf("metrics in outer after SIGHUP: %v\n%s", err, body)
	}
	// A second serve on host, metrics on another port: refused, first goes on.
	addr2 := fmt.Sprintf("127.0.0.1:%d", 21000+os.Getpid()%1000)
	d2 := exec.Command("ip", "netns", "exec", outer, guestnetBin, "--netns", host, "--state-dir", t.TempDir(),
		"serve", "--config", spec, "--metrics", addr2)
	out, err := d2.CombinedOutput()
	if err == nil {
		t.Fatalf("a second serve on %s ran:\n%s", host, out)
	}
	if !strings.Contains(string(out), fmt.Sprint(pid)) {
		t.Errorf("the second serve's refusal does not name the first's PID %d:\n%s", pid, out)
	}
	// The same --metrics port: refused before it enters the namespace.
	out, err = exec.Command("ip", "netns", "exec", outer, guestnetBin, "--netns", host, "--state-dir", l.StateDir,
		"serve", "--config", spec, "--metrics", addr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics") || !strings.Contains(string(out), "free address") {
		t.Fatalf("a second serve on the same --metrics port: %v\n%s", err, out)
	}
	t.Logf("second serve, same --metrics: %s", strings.TrimSpace(lastLines(string(out), 1)))
	if body, err := metricsIn(outer, addr); err != nil || !strings.Contains(body, "guestnet_apply_duration_seconds") {
		t.Fatalf("metrics of the first serve after the second was refused: %v", err)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "serve to stop on SIGTERM", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
}

// serve --netns of a namespace that does not exist says which, and how
// to make it.
func TestBreaker14bServeNoNamespace(t *testing.T) {
	l := newLab(t)
	spec := l.Spec(b14bSpec)
	out, err := exec.Command(guestnetBin, "--netns", l.prefix+"never", "--state-dir", l.StateDir,
		"serve", "--config", spec).CombinedOutput()
	if err == nil {
		t.Fatalf("serve in a missing namespace ran:\n%s", out)
	}
	if !strings.Contains(string(out), l.prefix+"never") || !strings.Contains(string(out), "ip netns add") {
		t.Fatalf("serve in a missing namespace: %s", out)
	}
}

const b14bPeersSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    peers: [iso]
    dhcp:
      range: 10.99.0.100-10.99.0.199
      lease: 1h
  iso:
    mode: nat
    bridge: giso0
    ipv4: 10.98.0.1/24
`

// linkUp reports whether ns has the link name.
func (l *Lab) linkUp(ns, name string) bool {
	_, err := l.tryIn(ns, "ip", "link", "show", name)
	return err == nil
}

// guestnet destroy while serve runs, the odd ways: a name list with a
// typo changes nothing; the destroyed network is one another lists in
// peers (that one stays up, and its rules lose the peer); status and
// leases of the held network; kill -9 of serve right after the destroy
// was recorded keeps it down at the restart; apply brings it back with
// the lease its guest had.
func TestBreaker14bDestroyWhileServing(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(b14bPeersSpec)
	d := l.Serve_(host, spec)
	g := l.dhcpGuest(host, "default", "g", "vg1", "")
	l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript())
	ip := l.addrOf(g)
	if !strings.HasPrefix(ip, "10.99.0.") {
		t.Fatalf("guest address %q", ip)
	}

	out, errs, code := l.Run(host, "destroy", "iso", "isoo")
	if code == 0 || !strings.Contains(errs, "isoo") {
		t.Fatalf("destroy iso isoo: exit %d\n%s%s", code, out, errs)
	}
	if !l.linkUp(host, "giso0") {
		t.Fatal("destroy iso isoo removed giso0")
	}

	l.Guestnet(host, "destroy", "iso")
	if l.linkUp(host, "giso0") {
		t.Fatal("giso0 still there after destroy iso")
	}
	if !l.linkUp(host, "gnat0") {
		t.Fatal("destroy iso took gnat0, which lists iso in peers")
	}
	if rules := l.In(host, "nft", "list", "ruleset"); strings.Contains(rules, "giso0") {
		t.Errorf("rules still name giso0 after destroy iso:\n%s", rules)
	}
	// A second destroy of iso: it is down, as asked.
	if out, errs, code := l.Run(host, "destroy", "iso"); code != 0 {
		t.Errorf("destroy iso again: exit %d\n%s%s", code, out, errs)
	}
	st, errs, code := l.Run(host, "status")
	if code != 0 || !strings.Contains(st, "held down by guestnet destroy: iso") {
		t.Errorf("guestnet status with iso held down (exit %d) does not say so:\n%s%s", code, st, errs)
	}
	leases := l.Guestnet(host, "leases")
	if !strings.Contains(leases, ip) {
		t.Errorf("leases lost %s after destroy iso:\n%s", ip, leases)
	}

	// Destroy default, whose guest holds a lease, and kill -9 serve once
	// the destroy is recorded.
	destroy := exec.Command(guestnetBin, "--netns", host, "--state-dir", l.StateDir, "destroy", "default")
	if err := destroy.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "destroyed.json to name default", func() bool {
		b, _ := os.ReadFile(filepath.Join(l.StateDir, "netns", host, "destroyed.json"))
		return strings.Contains(string(b), "default")
	})
	d.Kill()
	destroy.Wait()
	t.Logf("destroy cut by kill -9 of serve: %v, gnat0 up: %v", destroy.ProcessState, l.linkUp(host, "gnat0"))
	d = l.Serve_(host, spec)
	if l.linkUp(host, "gnat0") || l.linkUp(host, "giso0") {
		t.Fatalf("the restart of serve brought back a destroyed network: gnat0 %v giso0 %v",
			l.linkUp(host, "gnat0"), l.linkUp(host, "giso0"))
	}
	if leases := l.Guestnet(host, "leases"); !strings.Contains(leases, ip) {
		t.Errorf("guestnet leases with default held down lacks %s, which comes back with it:\n%s", ip, leases)
	}
	l.Guestnet(host, "apply", spec)
	if !l.linkUp(host, "gnat0") || !l.linkUp(host, "giso0") {
		t.Fatal("apply did not bring both networks back")
	}
	if leases := l.Guestnet(host, "leases"); !strings.Contains(leases, ip) {
		t.Fatalf("the lease of %s did not come back with default:\n%s", ip, leases)
	}
	d.Stop()
}

// SIGTERM at once after serve starts (before or while it enters the
// namespace and applies): it stops, and leaves nothing that keeps the
// next serve from starting (the namespace lock, the API socket).
func TestBreaker14bSIGTERMBeforeReady(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(b14bSpec)
	for _, wait := range []time.Duration{0, 5 * time.Millisecond, 30 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond} {
		cmd := exec.Command(guestnetBin, "--netns", host, "--state-dir", l.StateDir, "serve", "--config", spec)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(wait) // the moment of the signal, not an assertion
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		t.Logf("SIGTERM %v after start: %v, %s", wait, err, strings.TrimSpace(lastLines(log.String(), 1)))
	}
	l.Serve_(host, spec).Stop()
}

// SIGHUP at once after serve starts (a config tool reloading as it
// starts serve): serve goes on, with the config it read at start, and
// the network held down by guestnet destroy stays down.
func TestBreaker14bSIGHUPWhileStarting(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(b14bSpec)
	d := l.Serve_(host, spec)
	l.Guestnet(host, "destroy", "iso")
	d.Stop()
	// Not at once: no program outlives a SIGHUP that comes before its
	// runtime and packages have started (the default action ends it).
	// Once serve has entered the namespace (exec'd) it ignores SIGHUP
	// until its reload handler takes it: the signal comes wait after that
	// moment.
	want := netnsInode(t, "/run/netns/"+host)
	for _, wait := range []time.Duration{0, 50 * time.Millisecond, 150 * time.Millisecond} {
		cmd := exec.Command(guestnetBin, "--netns", host, "--state-dir", l.StateDir, "serve", "--config", spec)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM) }) // by PID; an error once it was waited for
		waitFor(t, "serve to enter the namespace", func() bool {
			var st syscall.Stat_t
			return syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &st) == nil && st.Ino == want
		})
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		time.Sleep(wait) // the moment of the signal, not an assertion
		cmd.Process.Signal(syscall.SIGHUP)
		ready, died := false, false
		for deadline := time.Now().Add(10 * time.Second); !ready && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			select {
			case err := <-exited:
				t.Errorf("SIGHUP %v after serve entered the namespace stopped it: %v\n%s", wait, err, log.String())
				died, deadline = true, time.Time{}
				continue
			default:
			}
			_, errs, code := l.Run(host, "leases")
			ready = code == 0 && strings.Contains(errs, "from the daemon")
		}
		if died {
			continue
		}
		if !ready {
			t.Fatalf("serve not ready after SIGHUP %v after it entered the namespace:\n%s", wait, log.String())
		}
		if l.linkUp(host, "giso0") {
			t.Errorf("SIGHUP %v after serve entered the namespace brought the destroyed iso back", wait)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
}

// guestnet destroy while serve runs, then serve stopped and the config
// applied by hand: the operator said "make the host match the config".
// The next serve must not take iso down again.
func TestBreaker14bApplyWhileServeStopped(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(b14bSpec)
	d := l.Serve_(host, spec)
	l.Guestnet(host, "destroy", "iso")
	d.Stop()
	l.Guestnet(host, "apply", spec)
	if !l.linkUp(host, "giso0") {
		t.Fatal("apply without serve did not make giso0")
	}
	d = l.Serve_(host, spec)
	if !l.linkUp(host, "giso0") {
		t.Fatal("serve took iso down again after guestnet apply of its config brought it back")
	}
	d.Stop()
}

// A GUESTNET_METRICS_FD that guestnet did not set (left in the
// environment serve starts in) is not taken for the metrics listener:
// serve listens on --metrics itself.
func TestBreaker14bStrayMetricsFD(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(b14bSpec)
	addr := fmt.Sprintf("127.0.0.1:%d", 22000+os.Getpid()%1000)
	// From inside host: serve has no namespace to enter, and no exec.
	cmd := exec.Command("ip", "netns", "exec", host, guestnetBin, "--netns", host, "--state-dir", l.StateDir,
		"serve", "--config", spec, "--metrics", addr)
	cmd.Env = append(os.Environ(), "GUESTNET_METRICS_FD=0")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); <-exited })
	waitFor(t, "metrics in host", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("serve with a stray GUESTNET_METRICS_FD stopped: %v\n%s", err, log.String())
		default:
		}
		body, err := metricsIn(host, addr)
		return err == nil && strings.Contains(body, "guestnet_apply_duration_seconds")
	})
}
