package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/apply"
	"github.com/guestnet/guestnet/internal/arpprobe"
	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

// These tests run the whole daemon (Run, its service list, reload, drift
// repair, DHCP's handler and the leased bindings) on the in-memory kernel:
// no root, no namespace. Only DHCP's sockets are loopback ones, and the
// kernel's events come from the test.

const natSpec = `networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    dhcp:
      range: 10.99.0.100-10.99.0.199
      lease: 1h
`

const movedSpec = `networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.5.1/24
  iso:
    mode: isolated
    bridge: giso0
`

// events is the kernel's notifications as the test sends them.
type events struct {
	mu      sync.Mutex
	changed func()
	watched chan struct{} // closed once Watch runs
}

func (e *events) Watch(ctx context.Context, changed func()) error {
	e.mu.Lock()
	e.changed = changed
	close(e.watched)
	e.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (e *events) WatchNeigh(ctx context.Context, _ func(netlink.NeighUpdate), _ func(error, time.Duration)) {
	<-ctx.Done()
}

// fire is a kernel notification (a link, address, route or nft change).
func (e *events) fire() {
	<-e.watched
	e.mu.Lock()
	defer e.mu.Unlock()
	e.changed()
}

// loopSockets are DHCP and DNS sockets on loopback (on ports the kernel
// picks); there is no ARP prober and no upstream.
type loopSockets struct{}

func (loopSockets) DHCP() (dhcp.Conn, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return dhcp.NewConn(pc, nil)
}

func (loopSockets) ARP(string) (*arpprobe.Prober, error) {
	return nil, errors.New("no ARP socket in unit tests")
}

func (loopSockets) DNS(string) (net.PacketConn, net.Listener, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		pc.Close()
	}
	return pc, ln, err
}

func (loopSockets) Dial(network, addr string) (net.Conn, error) {
	return nil, fmt.Errorf("dial %s %s: no upstream in unit tests", network, addr)
}

func (loopSockets) HostAddrs() ([]net.Addr, error) {
	return []net.Addr{&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}}, nil
}

// rig is a daemon serving the fake kernel k.
type rig struct {
	t      *testing.T
	k      *fake.Kernel
	d      *Daemon
	ev     *events
	config string
}

// vm0 is a guest's TAP.
var vm0 = model.Link{Name: "vm0", Index: 4, Kind: "tuntap", MTU: 1500}

// start runs a daemon with config spec on a fresh fake host; it stops
// when the test ends.
func start(t *testing.T, spec string) *rig { t.Helper(); return startWith(t, spec, nil) }

// startWith is start with mod applied to the daemon before it runs.
func startWith(t *testing.T, spec string, mod func(*Daemon)) *rig {
	t.Helper()
	r := &rig{t: t, k: &fake.Kernel{Host: fake.BaseHost(vm0)}, ev: &events{watched: make(chan struct{})}}
	r.config = filepath.Join(t.TempDir(), "guestnet.yaml")
	r.write(spec)
	e := engine.New(r.k, filepath.Join(t.TempDir(), "state.json"))
	r.d = &Daemon{Engine: e, Config: []string{r.config}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Events: r.ev, Sockets: loopSockets{}}
	if mod != nil {
		mod(r.d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- r.d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	})
	return r
}

func (r *rig) write(spec string) {
	r.t.Helper()
	if err := os.WriteFile(r.config, []byte(spec), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// host reads the fake kernel as the daemon sees it.
func (r *rig) host() model.Host {
	r.t.Helper()
	h, err := r.k.Observe(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// status is the daemon's services as `guestnet status` shows them.
func (r *rig) status() string {
	var b strings.Builder
	for _, s := range r.d.Status() {
		fmt.Fprintf(&b, "%s=%s %s\n", s.Name, s.State, s.Problem)
	}
	return b.String()
}

// bridgeAddr is a bridge's addresses.
func (r *rig) bridgeAddr(name string) string {
	l, ok := r.host().Link(name)
	if !ok {
		return "(none)"
	}
	return fmt.Sprint(l.Addrs)
}

func TestRunStartsEveryService(t *testing.T) {
	r := start(t, natSpec)
	if got := r.bridgeAddr("gnat0"); got != "[10.99.0.1/24]" {
		t.Fatalf("gnat0 after start: %s", got)
	}
	want := "networks=running \nforwarding database=running \ndhcp=running \ndns=running \n" +
		"leased bindings=running \ndrift repair=running \napi=running \n"
	if got := r.status(); got != want {
		t.Errorf("services:\n%s\nwant\n%s", got, want)
	}
	// The CLI reads the same list over the API socket.
	svcs, err := Services(r.d.Dir())
	if err != nil || len(svcs) != 7 || svcs[2].Name != "dhcp" || svcs[2].State != "running" {
		t.Errorf("services over the API: %+v %v", svcs, err)
	}
}

func TestReload(t *testing.T) {
	r := start(t, natSpec)
	r.write(movedSpec)
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.bridgeAddr("gnat0") + " " + r.bridgeAddr("giso0"); got != "[10.99.5.1/24] []" {
		t.Fatalf("after reload: gnat0 giso0 = %s", got)
	}
	r.d.mu.Lock()
	n := len(r.d.servers)
	r.d.mu.Unlock()
	if n != 0 {
		t.Errorf("reload to a config without DHCP left %d DHCP servers", n)
	}
	// A config that does not load changes nothing and says why.
	r.write("networks:\n  default: {mode: nat}\n")
	if err := r.d.Reload(context.Background()); err == nil {
		t.Fatal("reload of a broken config succeeded")
	}
	if got := r.bridgeAddr("gnat0"); got != "[10.99.5.1/24]" {
		t.Fatalf("a failed reload changed gnat0: %s", got)
	}
	if st := r.status(); !strings.Contains(st, "networks=degraded reload: ") || !strings.Contains(st, "the previous config is still applied") {
		t.Errorf("a failed reload does not show:\n%s", st)
	}
	// Back to DHCP over the API, as `guestnet apply` asks a running daemon.
	r.write(natSpec)
	if ok, err := RequestReload(r.d.Dir()); !ok || err != nil {
		t.Fatalf("reload over the API: %v %v", ok, err)
	}
	if got := r.bridgeAddr("gnat0"); got != "[10.99.0.1/24]" {
		t.Fatalf("after the API reload: %s", got)
	}
	if st := r.status(); !strings.Contains(st, "dhcp=running \n") {
		t.Errorf("dhcp not back:\n%s", st)
	}
}

// waitRepairs waits (up to a minute, which only a hang reaches) for the
// repair loop to have made n repairs.
func (r *rig) waitRepairs(n uint64) {
	r.t.Helper()
	for deadline := time.Now().Add(time.Minute); r.d.repairs.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("no repair after the event (%d of %d)\n%s", r.d.repairs.Load(), n, r.status())
		}
	}
}

func TestDriftRepair(t *testing.T) {
	r := start(t, natSpec)
	// Someone deletes the bridge; the kernel says so; the daemon repairs.
	if err := r.k.Do(plan.Action{Op: plan.OpLinkDel, Link: "gnat0"}); err != nil {
		t.Fatal(err)
	}
	r.ev.fire()
	r.waitRepairs(1)
	if got := r.bridgeAddr("gnat0"); got != "[10.99.0.1/24]" {
		t.Fatalf("gnat0 after repair: %s", got)
	}
	if p, err := r.d.Engine.Plan(context.Background(), r.d.spec); err != nil || len(p.Actions) != 0 {
		t.Fatalf("host still drifted after repair: %v %v", p.Actions, err)
	}
	// The re-created bridge has a new ifindex: DHCP got a new socket.
	idx, _ := r.d.Engine.LinkIndex("gnat0")
	r.d.mu.Lock()
	s := r.d.servers["default"]
	r.d.mu.Unlock()
	if s == nil || s.ifindex != idx {
		t.Errorf("DHCP not re-bound to the new gnat0 (index %d): %+v", idx, s)
	}
	if st := r.status(); !strings.Contains(st, "drift repair=running \n") {
		t.Errorf("status after a repair:\n%s", st)
	}
}

// TestRepairFailsThenRecovers: a repair whose every try fails shows in the
// status, and the repair loop tries again on its timer.
func TestRepairFailsThenRecovers(t *testing.T) {
	r := start(t, natSpec)
	if err := r.k.Do(plan.Action{Op: plan.OpLinkDel, Link: "gnat0"}); err != nil {
		t.Fatal(err)
	}
	r.k.FailReads(unix.EBUSY) // every read fails: every try fails
	r.ev.fire()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(r.status(), "drift repair=degraded"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a failing repair does not show:\n%s", r.status())
		}
	}
	r.k.FailReads(nil)
	r.waitRepairs(1) // on the retry timer: no further event
	if got := r.bridgeAddr("gnat0"); got != "[10.99.0.1/24]" {
		t.Fatalf("gnat0 after the retried repair: %s", got)
	}
	if st := r.status(); !strings.Contains(st, "drift repair=running \n") {
		t.Errorf("status after recovery:\n%s", st)
	}
}

// handler is the DHCP handler the daemon serves a network with.
func (r *rig) handler(network string) func(*dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r.t.Helper()
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	s := r.d.servers[network]
	if s == nil {
		r.t.Fatalf("no DHCP server on %s:\n%s", network, r.status())
	}
	return s.handler.Handle
}

// lease runs DISCOVER and REQUEST for hw through the daemon's handler.
func (r *rig) lease(hw net.HardwareAddr, mods ...dhcpv4.Modifier) net.IP {
	r.t.Helper()
	handle := r.handler("default")
	disc, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		r.t.Fatal(err)
	}
	off := handle(disc)
	if off == nil || off.MessageType() != dhcpv4.MessageTypeOffer {
		r.t.Fatalf("no offer: %v", off)
	}
	req, err := dhcpv4.NewRequestFromOffer(off, mods...)
	if err != nil {
		r.t.Fatal(err)
	}
	ack := handle(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		r.t.Fatalf("no ack: %v", ack)
	}
	return ack.YourIPAddr
}

// bound is what learned() shows for a lease of ip to hw on vm0.
func bound(hw net.HardwareAddr, ip net.IP) string {
	a, _ := netip.AddrFromSlice(ip.To4())
	return fmt.Sprint(model.SortBinds(leaseBinds(dhcp.Lease{Port: "vm0", MAC: hw.String(), IP: a})))
}

// learned is the anti-spoofing table's leased bindings.
func (r *rig) learned() string { return fmt.Sprint(r.host().Guard.Learned) }

// waitLearned waits (up to a minute) for the learned bindings to be want.
func (r *rig) waitLearned(want string) {
	r.t.Helper()
	for deadline := time.Now().Add(time.Minute); r.learned() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("learned bindings %s, want %s\n%s", r.learned(), want, r.status())
		}
	}
}

// attachVM0 attaches vm0 to the NAT network and has the bridge learn hw
// on it.
func (r *rig) attachVM0(hw net.HardwareAddr) {
	r.t.Helper()
	if _, err := r.d.Engine.Attach(context.Background(), "default", "vm0", plan.AttachOptions{Owner: -1, Group: -1}); err != nil {
		r.t.Fatal(err)
	}
	br, _ := r.host().Link("gnat0")
	r.k.SetFDB([]netlink.Neigh{{Family: unix.AF_BRIDGE, State: netlink.NUD_REACHABLE, MasterIndex: br.Index, LinkIndex: vm0.Index, HardwareAddr: hw}})
}

// TestLeasedBindings: a lease binds the port its client sent from (the
// bridge's forwarding database says which) before the ACK leaves, and a
// release takes the binding away at the next sync.
func TestLeasedBindings(t *testing.T) {
	r := start(t, natSpec)
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x21}
	r.attachVM0(hw)
	ip := r.lease(hw)
	want := bound(hw, ip)
	if got := r.learned(); got != want {
		t.Fatalf("after the ACK: learned %s, want %s", got, want)
	}
	// Release: the handler tells the daemon, whose sync drops the binding.
	rel, err := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))))
	if err != nil {
		t.Fatal(err)
	}
	r.handler("default")(rel)
	r.waitLearned("[]")
	if st := r.status(); !strings.Contains(st, "leased bindings=running \n") {
		t.Errorf("status:\n%s", st)
	}
}

// flaky fails the nth kernel write (Do or Learn) counted from arm(n).
type flaky struct {
	engine.Kernel
	mu      sync.Mutex
	n, seen int
}

func (f *flaky) arm(n int) { f.mu.Lock(); f.n, f.seen = n, 0; f.mu.Unlock() }

func (f *flaky) fail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen++
	return f.seen == f.n
}

func (f *flaky) Do(a plan.Action) error {
	if f.fail() {
		return engine.ErrInjected
	}
	return f.Kernel.Do(a)
}

func (f *flaky) Learn(add, del model.Elems) error {
	if f.fail() {
		return engine.ErrInjected
	}
	return f.Kernel.Learn(add, del)
}

// hostText prints a host without ifindexes (a bridge a rollback deleted
// and made again gets a new one).
func hostText(h model.Host) string {
	for i := range h.Links {
		h.Links[i].Index = 0
	}
	return fmt.Sprintf("%+v", h)
}

// TestReloadFailsAtEveryStep fails each kernel write of a reload in turn:
// each time the reload reports the step, the host is as before, DHCP keeps
// serving the old config, and the status shows the failure until a reload
// succeeds.
func TestReloadFailsAtEveryStep(t *testing.T) {
	r := start(t, natSpec)
	f := &flaky{Kernel: r.d.Engine.Kernel}
	r.d.mu.Lock()
	r.d.Engine.Kernel = f // nothing else runs while d.mu is held
	r.d.mu.Unlock()
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x22}
	r.attachVM0(hw)
	r.lease(hw)
	before, learned := hostText(r.host()), r.learned()
	r.write(movedSpec)
	steps := -1
	for n := 1; steps < 0 || n <= steps; n++ {
		f.arm(n)
		err := r.d.Reload(context.Background())
		var se *apply.StepError
		if !errors.As(err, &se) || se.Step != n || !errors.Is(err, engine.ErrInjected) || se.Rollback != nil {
			t.Fatalf("reload failing at write %d: %v", n, err)
		}
		steps = se.Steps
		if after := hostText(r.host()); after != before {
			t.Fatalf("reload failing at write %d/%d (%s) changed the host:\n%s\nwant\n%s", n, steps, se.Action, after, before)
		}
		if st := r.status(); !strings.Contains(st, "networks=degraded reload: apply: step") || !strings.Contains(st, "the previous config is still applied") || !strings.Contains(st, "dhcp=running \n") {
			t.Fatalf("status after reload failing at write %d:\n%s", n, st)
		}
		r.handler("default") // still serving
	}
	if learned == "[]" || r.learned() != learned {
		t.Fatalf("leased bindings across failed reloads: %s, before %s", r.learned(), learned)
	}
	f.arm(0)
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.status(); !strings.Contains(st, "networks=running \n") {
		t.Errorf("status after a good reload:\n%s", st)
	}
	t.Logf("a failure at each of the reload's %d writes left the host as it was", steps)
}

// TestLeasedBindingWriteFails: when binding a port at the ACK fails, the
// sync it kicks binds it.
func TestLeasedBindingWriteFails(t *testing.T) {
	r := start(t, natSpec)
	f := &flaky{Kernel: r.d.Engine.Kernel}
	r.d.mu.Lock()
	r.d.Engine.Kernel = f
	r.d.mu.Unlock()
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x23}
	r.attachVM0(hw)
	f.arm(1) // the ACK's own Learn
	ip := r.lease(hw)
	r.waitLearned(bound(hw, ip))
}

// TestStartFailureStopsStartedServices: a service that cannot start (the
// API socket's path is taken by a folder) stops the daemon, and the
// services started before it are stopped.
func TestStartFailureStopsStartedServices(t *testing.T) {
	k := &fake.Kernel{Host: fake.BaseHost(vm0)}
	dir := t.TempDir()
	config := filepath.Join(dir, "guestnet.yaml")
	if err := os.WriteFile(config, []byte(natSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Engine: engine.New(k, filepath.Join(dir, "state", "state.json")), Config: []string{config},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: &events{watched: make(chan struct{})}, Sockets: loopSockets{}}
	if err := os.MkdirAll(filepath.Join(SocketPath(d.Dir()), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := d.Run(context.Background(), func() { t.Error("ready called") })
	if err == nil || !strings.Contains(err.Error(), "start api:") {
		t.Fatalf("Run with the API socket path taken: %v", err)
	}
	if st := fmt.Sprint(d.Status()); strings.Contains(st, "running") || len(d.servers) != 0 {
		t.Errorf("services left running: %s, %d DHCP servers", st, len(d.servers))
	}
	if l, ok := k.Host.Link("gnat0"); !ok || !l.Up {
		t.Errorf("the networks (applied before the failure) are not kept: %+v", l)
	}
}

// TestServiceMetrics: each service's health is a metric.
func TestServiceMetrics(t *testing.T) {
	r := start(t, natSpec)
	r.write("networks:\n  default: {mode: nat}\n")
	if err := r.d.Reload(context.Background()); err == nil {
		t.Fatal("reload of a broken config succeeded")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{r.d})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() == "guestnet_service_up" {
			for _, m := range mf.GetMetric() {
				got = append(got, fmt.Sprintf("%s=%g", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
			}
		}
	}
	want := "[api=1 dhcp=1 dns=1 drift repair=1 forwarding database=1 leased bindings=1 networks=0]"
	if fmt.Sprint(got) != want {
		t.Errorf("guestnet_service_up: %v, want %s", got, want)
	}
}

const dnsSpec = natSpec + `    dns:
      domain: lab.internal
      upstream: [203.0.113.53]
`

// TestDNSService: the name service starts with the config, answers a
// leased guest's name, and stops when a reload drops it.
func TestDNSService(t *testing.T) {
	r := start(t, dnsSpec)
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x24}
	ip := r.lease(hw, dhcpv4.WithOption(dhcpv4.OptHostName("vm1")))
	r.d.mu.Lock()
	s := r.d.dns["default"]
	r.d.mu.Unlock()
	if s == nil {
		t.Fatalf("no DNS server:\n%s", r.status())
	}
	addr := s.udp.LocalAddr().String()
	q := new(mdns.Msg).SetQuestion("vm1.lab.internal.", mdns.TypeA)
	in, _, err := new(mdns.Client).Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 1 || !in.Answer[0].(*mdns.A).A.Equal(ip) {
		t.Fatalf("vm1.lab.internal: %v, want %s", in.Answer, ip)
	}
	r.write(natSpec)
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.d.mu.Lock()
	n := len(r.d.dns)
	r.d.mu.Unlock()
	if n != 0 {
		t.Errorf("a reload without dns left %d name servers", n)
	}
	c := &mdns.Client{Timeout: time.Second}
	if _, _, err := c.Exchange(q, addr); err == nil {
		t.Error("the stopped name server still answers")
	}
}
