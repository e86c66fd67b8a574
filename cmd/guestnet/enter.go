package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/daemon"
	gnetns "github.com/guestnet/guestnet/internal/netns"
)

// metricsFDEnv carries the metrics listener across enterNetns's exec.
const metricsFDEnv = "GUESTNET_METRICS_FD"

// enterNetns makes the whole serve process live in the namespace name,
// as `ip netns exec` does: switch this thread into it, then exec guestnet
// again with the same arguments (an exec keeps the calling thread's
// namespace, and the new process has no other thread). Sockets a library
// opens on its own goroutines (GoBGP dials and listens on its own) are
// then in the served namespace: Go gives no way to move a running
// process's every thread. It returns nil without exec when the process
// is already there.
//
// The metrics listener is opened first and handed over: metrics stay
// where the operator started guestnet (usually the host's namespace).
func enterNetns(name, metrics string) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return gnetns.OpenError(name, err)
	}
	defer target.Close()
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("netns: current: %w", err)
	}
	defer cur.Close()
	if cur.Equal(target) {
		return nil
	}
	env := os.Environ()
	if metrics != "" {
		ln, err := net.Listen("tcp", metrics)
		if err != nil {
			return daemon.MetricsListenError(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		// File's descriptor is close-on-exec; this one must survive it.
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		// The PID (exec keeps it) tells this hand-over from a variable
		// left in the environment serve was started in.
		env = append(env, fmt.Sprintf("%s=%d:%d", metricsFDEnv, os.Getpid(), f.Fd()))
	}
	runtime.LockOSThread() // never unlocked: this thread execs or the process fails
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %q: %w", name, err)
	}
	// /proc/self/exe, not the path: the very binary running, even if an
	// upgrade replaced the file a moment ago.
	return fmt.Errorf("exec guestnet again in netns %q: %w", name, syscall.Exec("/proc/self/exe", os.Args, env))
}

// inheritedMetrics is the metrics listener enterNetns handed over, or nil
// (also for a variable enterNetns of this process did not set).
func inheritedMetrics() (net.Listener, error) {
	v := os.Getenv(metricsFDEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(metricsFDEnv)
	pid, fdText, _ := strings.Cut(v, ":")
	if pid != strconv.Itoa(os.Getpid()) {
		return nil, nil // not handed over by enterNetns in this process
	}
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", metricsFDEnv, v, err)
	}
	f := os.NewFile(uintptr(fd), "metrics")
	defer f.Close()
	return net.FileListener(f)
}
