package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
)

// Breaker tests of guestnet destroy while serve runs (issue 14): the
// held-down set, on the in-memory kernel.

const twoNets = `networks:
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

// startPrepared is start with the state folder made ready by prepare
// before Run (a destroyed.json left by an earlier serve). It returns the
// rig, or Run's error when the daemon does not start.
func startPrepared(t *testing.T, spec string, prepare func(dir string)) (*rig, error) {
	t.Helper()
	r := &rig{t: t, k: &fake.Kernel{Host: fake.BaseHost(vm0)}, ev: &events{watched: make(chan struct{})}}
	r.config = filepath.Join(t.TempDir(), "guestnet.yaml")
	r.write(spec)
	dir := t.TempDir()
	prepare(dir)
	r.d = &Daemon{Engine: engine.New(r.k, filepath.Join(dir, "state.json")), Config: []string{r.config},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: r.ev, Sockets: loopSockets{}}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- r.d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		return nil, err
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	})
	return r, nil
}

func (r *rig) heldFile() string {
	data, err := os.ReadFile(DestroyedPath(r.d.Dir()))
	if errors.Is(err, os.ErrNotExist) {
		return "(none)"
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// A destroy naming one unknown network changes nothing, the known one
// included, and records nothing.
func TestBreaker14bDestroyUnknownChangesNothing(t *testing.T) {
	r := start(t, twoNets)
	err := r.d.destroy(context.Background(), []string{"iso", "nope"})
	var unknown *unknownError
	if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("destroy iso nope: %v", err)
	}
	if got := r.bridgeAddr("giso0"); got == "(none)" {
		t.Fatal("destroy with an unknown name removed giso0")
	}
	if got := r.heldFile(); got != "(none)" {
		t.Fatalf("destroy with an unknown name recorded %s", got)
	}
}

// Destroying a network already destroyed is not a typo: the network is
// in the config, and it is down, as asked. The first version answered
// "not a network guestnet serve runs here", exit 1.
func TestBreaker14bDestroyAgain(t *testing.T) {
	r := start(t, twoNets)
	if err := r.d.destroy(context.Background(), []string{"iso"}); err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("giso0"); got != "(none)" {
		t.Fatalf("giso0 after destroy: %s", got)
	}
	if err := r.d.destroy(context.Background(), []string{"iso"}); err != nil {
		t.Fatalf("second destroy of iso: %v", err)
	}
	if got := r.heldFile(); got != `["iso"]` {
		t.Fatalf("destroyed.json after destroying iso twice: %s", got)
	}
	// A typo next to a held name is still refused.
	if err := r.d.destroy(context.Background(), []string{"iso", "isoo"}); err == nil {
		t.Fatal("destroy iso isoo succeeded")
	}
}

// guestnet apply of a broken config while a network is held: the held
// set survives, SIGHUP of the fixed config keeps it down, apply brings it
// back and forgets the file.
func TestBreaker14bApplyBrokenConfigKeepsHeld(t *testing.T) {
	r := start(t, twoNets)
	if err := r.d.destroy(context.Background(), []string{"iso"}); err != nil {
		t.Fatal(err)
	}
	r.write("networks:\n  default: {mode: nat}\n  iso: {mode: isolated, bridge: giso0}\n")
	if err := r.d.Apply(context.Background()); err == nil {
		t.Fatal("apply of a broken config succeeded")
	}
	if got := r.heldFile(); got != `["iso"]` {
		t.Fatalf("destroyed.json after a failed apply: %s", got)
	}
	r.write(twoNets)
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("giso0"); got != "(none)" {
		t.Fatalf("SIGHUP brought the destroyed iso back: giso0 %s", got)
	}
	if err := r.d.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("giso0"); got == "(none)" {
		t.Fatal("apply did not bring iso back")
	}
	if got := r.heldFile(); got != "(none)" {
		t.Fatalf("destroyed.json after apply: %s", got)
	}
}

// A held network's leases are kept in the store, listed while it is
// held, and served again once apply brings it back: the guest keeps its
// address.
func TestBreaker14bHeldLeasesComeBack(t *testing.T) {
	r := start(t, twoNets)
	hw := net.HardwareAddr{2, 0, 0, 0, 0x14, 0xb}
	ip := r.lease(hw)
	if err := r.d.destroy(context.Background(), []string{"default"}); err != nil {
		t.Fatal(err)
	}
	// guestnet leases still shows it: it comes back with the network
	// (the first version listed nothing while the network was held).
	if got := r.d.leases("default"); len(got) != 1 || got[0].IP != ip.String() {
		t.Errorf("the daemon's leases of the destroyed network: %v, want the one at %s", got, ip)
	}
	if err := r.d.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := r.d.leases("default")
	if len(got) != 1 || got[0].IP != ip.String() || got[0].MAC != hw.String() {
		t.Fatalf("leases of default after destroy and apply: %v, want %s at %s", got, hw, ip)
	}
	if again := r.lease(hw); !again.Equal(ip) {
		t.Fatalf("the guest got %s after destroy and apply, had %s", again, ip)
	}
}

// A destroyed.json serve cannot read stops it with an error that names
// the file and the way out, whatever is wrong with it.
func TestBreaker14bHeldFileUnreadable(t *testing.T) {
	for name, prepare := range map[string]func(path string) error{
		"corrupt":   func(p string) error { return os.WriteFile(p, []byte(`["iso"`), 0o600) },
		"empty":     func(p string) error { return os.WriteFile(p, nil, 0o600) },
		"object":    func(p string) error { return os.WriteFile(p, []byte(`{"iso":true}`), 0o600) },
		"directory": func(p string) error { return os.Mkdir(p, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			_, err := startPrepared(t, twoNets, func(dir string) {
				if err := prepare(DestroyedPath(dir)); err != nil {
					t.Fatal(err)
				}
			})
			if err == nil {
				t.Fatal("serve started with an unreadable destroyed.json")
			}
			if !strings.Contains(err.Error(), "destroyed.json") || !strings.Contains(err.Error(), "remove the file") {
				t.Fatalf("the error does not name the file and the way out: %v", err)
			}
		})
	}
}

// A destroyed.json that is JSON null holds nothing; one naming networks
// the config no longer declares starts serve, with the declared networks
// up.
func TestBreaker14bHeldFileOddButReadable(t *testing.T) {
	r, err := startPrepared(t, twoNets, func(dir string) {
		if err := os.WriteFile(DestroyedPath(dir), []byte(`["gone", "iso"]`), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("giso0"); got != "(none)" {
		t.Fatalf("iso held in destroyed.json came up: %s", got)
	}
	if got := r.bridgeAddr("gnat0"); got == "(none)" {
		t.Fatal("default is down")
	}
}

// A SIGHUP that arrives while serve starts, before Run read
// destroyed.json, must not apply the config without it: that brings the
// destroyed networks back.
func TestBreaker14bReloadBeforeRun(t *testing.T) {
	k := &fake.Kernel{Host: fake.BaseHost(vm0)}
	config := filepath.Join(t.TempDir(), "guestnet.yaml")
	if err := os.WriteFile(config, []byte(twoNets), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(DestroyedPath(dir), []byte(`["iso"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Engine: engine.New(k, filepath.Join(dir, "state.json")), Config: []string{config},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: &events{watched: make(chan struct{})}, Sockets: loopSockets{}}
	err := d.Reload(context.Background())
	h, oerr := k.Observe(nil)
	if oerr != nil {
		t.Fatal(oerr)
	}
	if _, ok := h.Link("giso0"); ok {
		t.Fatalf("a reload before Run made the destroyed iso (reload: %v)", err)
	}
	if err == nil || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("a reload before Run: %v, want an error saying serve is starting", err)
	}
}

// guestnet status says which networks of the config guestnet destroy
// holds down, and the way back: the first version showed the remaining
// networks only, as if the config declared nothing else.
func TestBreaker14bStatusNamesHeld(t *testing.T) {
	r := start(t, twoNets)
	if err := r.d.destroy(context.Background(), []string{"iso"}); err != nil {
		t.Fatal(err)
	}
	var nets ServiceStatus
	for _, s := range r.d.Status() {
		if s.Name == "networks" {
			nets = s
		}
	}
	if nets.State != "running" || !strings.Contains(nets.Note, "iso") || !strings.Contains(nets.Note, "guestnet apply") {
		t.Fatalf("networks service with iso held down: %+v", nets)
	}
	if err := r.d.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range r.d.Status() {
		if s.Name == "networks" && s.Note != "" {
			t.Fatalf("networks service after apply: %+v", s)
		}
	}
}

// A destroy and reloads at the same moment (an operator's destroy while
// a config tool sends SIGHUP): whatever the order, iso ends down and
// held, default up.
func TestBreaker14bDestroyDuringReload(t *testing.T) {
	r := start(t, twoNets)
	errs := make(chan error, 5)
	for range 4 {
		go func() { errs <- r.d.Reload(context.Background()) }()
	}
	go func() { errs <- r.d.destroy(context.Background(), []string{"iso"}) }()
	for range 5 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("giso0"); got != "(none)" {
		t.Fatalf("giso0 after destroy among reloads: %s", got)
	}
	if got := r.bridgeAddr("gnat0"); got != "[10.99.0.1/24]" {
		t.Fatalf("gnat0 after destroy among reloads: %s", got)
	}
	if got := r.heldFile(); got != `["iso"]` {
		t.Fatalf("destroyed.json: %s", got)
	}
}

// ReleaseHeld (guestnet apply without serve) forgets the applied names
// only, undo writes the set back, and a set it does not touch is not
// written.
func TestBreaker14bReleaseHeld(t *testing.T) {
	dir := t.TempDir()
	if err := saveHeld(dir, map[string]bool{"iso": true, "lab": true}); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(DestroyedPath(dir))
		if errors.Is(err, os.ErrNotExist) {
			return "(none)"
		}
		return strings.TrimSpace(string(b))
	}
	undo, err := ReleaseHeld(dir, []string{"default", "iso"})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `["lab"]` {
		t.Fatalf("after releasing iso: %s", got)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `["iso","lab"]` {
		t.Fatalf("after undo: %s", got)
	}
	if _, err := ReleaseHeld(dir, []string{"iso", "lab"}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "(none)" {
		t.Fatalf("after releasing both: %s", got)
	}
	if _, err := ReleaseHeld(dir, []string{"iso"}); err != nil {
		t.Fatalf("release with no file: %v", err)
	}
}
