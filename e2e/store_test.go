package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/dhcp/dhcptest"
	"github.com/guestnet/guestnet/internal/state"
)

// serveFails runs `guestnet serve` on a store it must refuse: it has to
// exit by itself with code 3 (RestartPreventExitStatus in the systemd
// unit), without a Go panic (exit 2, "panic:"), with a message naming the
// file and the way out.
func (l *Lab) serveFails(ns, spec string) string {
	l.t.Helper()
	cmd := exec.Command(guestnetBin, "--netns", ns, "--state-dir", l.StateDir, "serve", "--config", spec)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		l.t.Fatalf("serve kept running on a lease store it cannot read:\n%s", out.String())
	}
	code := cmd.ProcessState.ExitCode()
	msg := out.String()
	if code != 3 || strings.Contains(msg, "panic:") || strings.Contains(msg, "goroutine ") {
		l.t.Errorf("serve on a bad lease store: exit %d (want 3, which ends systemd's restarts; no panic):\n%s", code, msg)
	}
	for _, want := range []string{daemon.LeasePath(l.StateDirOf(ns)), "--recover-leases", "restore a backup"} {
		if !strings.Contains(msg, want) {
			l.t.Errorf("serve's message lacks %q:\n%s", want, msg)
		}
	}
	return msg
}

// StateDirOf is the state folder guestnet uses for ns.
func (l *Lab) StateDirOf(ns string) string { return filepath.Dir(state.Path(l.StateDir, ns)) }

// zeroLeafPage zeroes the middle leaf page of a bbolt file, as a disk or
// a bad copy might.
func zeroLeafPage(t *testing.T, path string) {
	t.Helper()
	if _, _, err := dhcptest.ZeroLeafPage(path); err != nil {
		t.Fatal(err)
	}
}

// TestStoreRefused corrupts the store of a real daemon two ways: a page
// zeroed in the middle of 300 leases (bbolt panics on it) and a file
// truncated to 0 bytes (bbolt would start empty). serve and leases must
// stop with the message, no address may be served; serve
// --recover-leases is the way out and keeps what can be read.
func TestStoreRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		problem string
		break_  func(t *testing.T, path string)
		kept    func(n int) bool
	}{
		{"zeroed-page", "a page cannot be read", zeroLeafPage, func(n int) bool { return n > 0 && n < 300 }},
		{"truncated", "0 bytes (truncated?)", func(t *testing.T, path string) { os.Truncate(path, 0) }, func(n int) bool { return n == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t)
			host := l.NS("host")
			spec := l.Spec(dhcpSpec)
			l.Serve_(host, spec).Stop() // makes the state folder and the store
			path := daemon.LeasePath(l.StateDirOf(host))
			st, err := dhcp.OpenBolt(path, false, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// 300 leases of guests that left long ago (expired): the store
			// is big enough to have many pages, and they free no address.
			for i := range 300 {
				a := netip.AddrFrom4([4]byte{10, 99, 1, byte(i % 250)})
				if i >= 250 {
					a = netip.AddrFrom4([4]byte{10, 99, 2, byte(i % 250)})
				}
				st.Put("default", dhcp.Lease{MAC: fmt.Sprintf("02:00:00:01:%02x:%02x", i/256, i%256), IP: a, Expiry: time.Unix(1e9, 0)})
			}
			st.Close()
			c.break_(t, path)

			msg := l.serveFails(host, spec)
			if !strings.Contains(msg, c.problem) {
				t.Errorf("serve's message lacks %q:\n%s", c.problem, msg)
			}
			t.Logf("serve: %s", strings.TrimSpace(msg))
			out, errs, code := l.Run(host, "leases")
			if code != 1 || !strings.Contains(errs, path) || !strings.Contains(errs, "--recover-leases") || strings.Contains(errs, "panic:") {
				t.Errorf("leases on a bad store: exit %d\n%s%s", code, out, errs)
			}
			g := l.dhcpGuest(host, "default", "g", "vg1", "")
			if _, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "2", "-T", "1", "-s", l.clientScript()); err == nil || l.addrOf(g) != "" {
				t.Errorf("a guest got %q while the store is refused", l.addrOf(g))
			}

			d := l.Serve_(host, spec, "--recover-leases")
			m := regexp.MustCompile(`moved_to=(\S+) kept=(\d+)`).FindStringSubmatch(d.log.String())
			if m == nil {
				t.Fatalf("--recover-leases did not say what it kept:\n%s", d.log)
			}
			if _, err := os.Stat(m[1]); err != nil {
				t.Errorf("the unreadable store was not kept aside: %v", err)
			}
			var kept int
			fmt.Sscan(m[2], &kept)
			if !c.kept(kept) {
				t.Errorf("recovery kept %d of 300 leases", kept)
			}
			var leases []struct{ IP string }
			json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases)
			if len(leases) != kept {
				t.Errorf("the daemon lists %d leases after recovery, kept %d", len(leases), kept)
			}
			if _, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", l.clientScript()); err != nil || l.addrOf(g) == "" {
				t.Errorf("no lease after recovery: %v", err)
			}
			t.Logf("recovered: moved to %s, kept %d leases", filepath.Base(m[1]), kept)
		})
	}
}

// TestStoreARPCheck puts a silent squatter on the bridge: a guest that set
// the range's first address by hand and never asked DHCP. On a first start
// (no store) the daemon must see it answer ARP, abandon that address and
// offer another; no address goes to two guests.
func TestStoreARPCheck(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	d := l.Serve_(host, l.Spec(dhcpSpec))
	squat := l.Guest(host, "default", "squat", "vsq", "10.99.0.100/24", "")
	hook := l.clientScript()
	got := map[string]string{"10.99.0.100": "squatter"}
	for i := range 3 {
		g := l.dhcpGuest(host, "default", fmt.Sprintf("g%d", i), fmt.Sprintf("vg%d", i), "")
		if out, err := l.tryIn(g, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
			t.Fatalf("udhcpc: %v\n%s", err, out)
		}
		a := l.addrOf(g)
		if who, dup := got[a]; dup || a == "" {
			t.Errorf("guest %d got %q, already held by %s", i, a, who)
		}
		got[a] = g
	}
	var leases []struct{ IP, MAC, State string }
	if err := json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, le := range leases {
		if _, dup := states[le.IP]; dup {
			t.Errorf("%s listed twice", le.IP)
		}
		states[le.IP] = le.State
	}
	if states["10.99.0.100"] != "abandoned" {
		t.Errorf("the squatter's address is %q in leases, want abandoned:\n%v", states["10.99.0.100"], leases)
	}
	if !l.Ping(squat, "10.99.0.1") {
		t.Errorf("the squatter lost its own connectivity")
	}
	log := d.log.String()
	if !strings.Contains(log, "answers ARP but has no lease") {
		t.Errorf("no abandonment in the daemon log")
	}
	for _, m := range regexp.MustCompile(`ARP check" network=\S+ ip=(\S+) answered_by=(\S*) took=(\S+)`).FindAllStringSubmatch(log, -1) {
		t.Logf("ARP check of %s: answered by %q after %s", m[1], m[2], m[3])
	}
}

// TestStoreRecoveryKeepsAddressesInUse loses the whole store under a
// guest that holds a lease (the file truncated to 0 bytes), recovers, and
// checks that the guest's address, of which the daemon now knows nothing,
// is not handed to a new guest: it answers ARP, so it is abandoned.
func TestStoreRecoveryKeepsAddressesInUse(t *testing.T) {
	l := newLab(t)
	host := l.NS("host")
	spec := l.Spec(dhcpSpec)
	d := l.Serve_(host, spec)
	hook := l.clientScript()
	a := l.dhcpGuest(host, "default", "a", "vga", "")
	if out, err := l.tryIn(a, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	held := l.addrOf(a)
	d.Stop()
	if err := os.Truncate(daemon.LeasePath(l.StateDirOf(host)), 0); err != nil {
		t.Fatal(err)
	}
	l.serveFails(host, spec)
	d = l.Serve_(host, spec, "--recover-leases")
	b := l.dhcpGuest(host, "default", "b", "vgb", "")
	if out, err := l.tryIn(b, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-s", hook); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	if got := l.addrOf(b); got == "" || got == held {
		t.Errorf("after the store was lost, a new guest got %q; guest a still holds %s", got, held)
	}
	var leases []struct{ IP, State string }
	json.Unmarshal([]byte(l.Guestnet(host, "leases", "-o", "json")), &leases)
	state := ""
	for _, le := range leases {
		if le.IP == held {
			state = le.State
		}
	}
	if state != "abandoned" {
		t.Errorf("guest a's %s is %q in leases, want abandoned: %v", held, state, leases)
	}
	t.Logf("guest a keeps %s (abandoned in the new store), guest b got %s", held, l.addrOf(b))
}
