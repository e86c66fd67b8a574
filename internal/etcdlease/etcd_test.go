package etcdlease

// A real etcd for the tests: Debian's etcd (3.4) run as a child on
// 127.0.0.1 with free ports and a data folder in t.TempDir(), killed by
// its PID.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// member is one etcd process of a test cluster.
type member struct {
	name, dir      string
	client, peer   string // URLs
	initialCluster string
	cmd            *exec.Cmd
	log            *os.File
}

// freePort is a port of 127.0.0.1 no one listens on (just now).
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts n etcd members on 127.0.0.1 and waits until the
// cluster answers a linearizable read.
func startCluster(t testing.TB, n int) []*member {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") != "" || os.Getenv("GUESTNET_E2E_REQUIRED") != "" {
			t.Fatalf("etcd is not installed (apt-get install etcd-server): %v", err)
		}
		t.Skipf("etcd is not installed (apt-get install etcd-server): %v", err)
	}
	ms := make([]*member, n)
	var ic []string
	for i := range ms {
		m := &member{name: fmt.Sprintf("m%d", i), dir: filepath.Join(t.TempDir(), "etcd"),
			client: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		ms[i] = m
		ic = append(ic, m.name+"="+m.peer)
	}
	for _, m := range ms {
		m.initialCluster = strings.Join(ic, ",")
		m.start(t, bin)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.kill()
		}
	})
	waitQuorum(t, endpoints(ms), 20*time.Second)
	return ms
}

func endpoints(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.client)
	}
	return out
}

// start runs the member (again, after kill: its data folder keeps it in
// the cluster).
func (m *member) start(t testing.TB, bin string) {
	var err error
	if m.log == nil {
		if m.log, err = os.Create(filepath.Join(filepath.Dir(m.dir), m.name+".log")); err != nil {
			t.Fatal(err)
		}
	}
	m.cmd = exec.Command(bin, "--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", m.initialCluster, "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500")
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", m.name, err)
	}
}

// kill ends the member's process by its PID.
func (m *member) kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

// waitQuorum waits until a linearizable read succeeds.
func waitQuorum(t testing.TB, eps []string, within time.Duration) {
	t.Helper()
	cli := rawClient(t, eps)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd %v has no quorum after %v: %v", eps, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rawClient is a plain etcd client for the test's own reads.
func rawClient(t testing.TB, eps []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
