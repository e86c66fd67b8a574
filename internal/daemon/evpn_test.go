package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/evpn"
	"github.com/guestnet/guestnet/internal/model"
)

// fakeEVPNKernel holds the evpn service's entries in memory: Do applies
// each op to the observed state the next Read returns.
type fakeEVPNKernel struct {
	mu    sync.Mutex
	o     evpn.Observed
	fail  error // every Do fails with it while set
	reads int
}

func (k *fakeEVPNKernel) Read(nets []evpn.Network) (evpn.Observed, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reads++
	o := k.o
	o.Local = slices.Clone(o.Local)
	o.Flood, o.MACs, o.Masters, o.Neighs = slices.Clone(o.Flood), slices.Clone(o.MACs), slices.Clone(o.Masters), slices.Clone(o.Neighs)
	return o, nil
}

func (k *fakeEVPNKernel) Do(op evpn.Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return k.fail
	}
	o := &k.o
	switch op.Kind {
	case evpn.FloodAdd:
		o.Flood = append(o.Flood, op.Flood)
	case evpn.FloodDel:
		o.Flood = slices.DeleteFunc(o.Flood, func(f evpn.Flood) bool { return f == op.Flood })
	case evpn.MACSet:
		o.MACs = slices.DeleteFunc(o.MACs, func(m evpn.RemoteMAC) bool { return m.MAC == op.MAC.MAC })
		o.Masters = slices.DeleteFunc(o.Masters, func(m evpn.RemoteMAC) bool { return m.MAC == op.MAC.MAC })
		o.MACs = append(o.MACs, evpn.RemoteMAC{Device: op.MAC.Device, MAC: op.MAC.MAC, VTEP: op.MAC.VTEP})
		o.Masters = append(o.Masters, evpn.RemoteMAC{Device: op.MAC.Device, Bridge: op.MAC.Bridge, MAC: op.MAC.MAC})
	case evpn.MACDel:
		o.MACs = slices.DeleteFunc(o.MACs, func(m evpn.RemoteMAC) bool { return m.MAC == op.MAC.MAC })
		o.Masters = slices.DeleteFunc(o.Masters, func(m evpn.RemoteMAC) bool { return m.MAC == op.MAC.MAC })
	case evpn.NeighSet:
		o.Neighs = slices.DeleteFunc(o.Neighs, func(n evpn.Neigh) bool { return n.IP == op.Neigh.IP })
		o.Neighs = append(o.Neighs, op.Neigh)
	case evpn.NeighDel:
		o.Neighs = slices.DeleteFunc(o.Neighs, func(n evpn.Neigh) bool { return n.IP == op.Neigh.IP })
	}
	return nil
}

func (k *fakeEVPNKernel) setLocal(g ...evpn.Guest) {
	k.mu.Lock()
	k.o.Local = g
	k.mu.Unlock()
}

func (k *fakeEVPNKernel) macs() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s []string
	for _, m := range k.o.MACs {
		s = append(s, m.MAC+"@"+m.VTEP.String())
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// fakeSpeaker is the BGP side: what was announced last, and the remote
// routes the test sets (which call the OnEVPN function, as the speaker
// does after a pass that saw them change).
type fakeSpeaker struct {
	mu        sync.Mutex
	announced model.EVPN
	remote    model.EVPN
	on        func()
}

func (s *fakeSpeaker) AnnounceEVPN(e model.EVPN) error {
	s.mu.Lock()
	s.announced = e
	s.mu.Unlock()
	return nil
}

func (s *fakeSpeaker) RemoteEVPN() model.EVPN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote
}

func (s *fakeSpeaker) OnEVPN(f func()) { s.mu.Lock(); s.on = f; s.mu.Unlock() }

func (s *fakeSpeaker) setRemote(e model.EVPN) {
	s.mu.Lock()
	s.remote = e
	f := s.on
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

func (s *fakeSpeaker) seqOf(mac string) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.announced.MACs {
		if r.MAC == mac {
			return r.Seq, true
		}
	}
	return 0, false
}

func stretchSpec(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return fmt.Sprintf(`bgp:
  asn: 65001
  router_id: 10.10.0.1
  listen: [127.0.0.1]
  port: %d
  peers: []
networks:
  stretch: {mode: isolated, bridge: gst0, ipv4: 10.60.0.1/24, vxlan: {vni: 6000}}
  plain: {mode: isolated, bridge: gpl0, ipv4: 10.61.0.1/24}
`, port)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The evpn service on the daemon's lifecycle, with a fake kernel and
// speaker: it announces the local guests with this host's VTEP (the
// router ID), installs the remote ones as the speaker's routes change,
// follows a guest that moves here (Seq + 1), and says in its health what
// fails.
func TestEVPNService(t *testing.T) {
	k, sp := &fakeEVPNKernel{}, &fakeSpeaker{}
	k.setLocal(evpn.Guest{VNI: 6000, MAC: "52:54:00:00:00:01", IPs: []netip.Addr{netip.MustParseAddr("10.60.0.101")}})
	r := startWith(t, stretchSpec(t), func(d *Daemon) { d.EVPNKernel, d.EVPNSpeaker = k, sp })

	waitUntil(t, "the local guest announced", func() bool { _, ok := sp.seqOf("52:54:00:00:00:01"); return ok })
	sp.mu.Lock()
	ann := sp.announced
	sp.mu.Unlock()
	want := model.EVPN{Flood: []model.EVPNFlood{{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.1")}}, MACs: []model.EVPNMAC{
		{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.1"), MAC: "52:54:00:00:00:01"},
		{VNI: 6000, VTEP: netip.MustParseAddr("10.10.0.1"), MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.60.0.101")},
	}}
	if !slices.Equal(ann.Flood, want.Flood) || !slices.Equal(ann.MACs, want.MACs) {
		t.Fatalf("announced %+v, want %+v", ann, want)
	}

	b, c := netip.MustParseAddr("10.10.0.2"), netip.MustParseAddr("10.10.0.3")
	sp.setRemote(model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 6000, VTEP: b}},
		MACs:  []model.EVPNMAC{{VNI: 6000, VTEP: b, MAC: "52:54:00:00:00:02", Seq: 2}, {VNI: 6000, VTEP: c, MAC: "52:54:00:00:00:02", Seq: 1}},
	})
	waitUntil(t, "the remote guest installed", func() bool { return k.macs() == "52:54:00:00:00:02@10.10.0.2" })

	// The remote guest moves here: announced with Seq 3, its entry goes.
	k.setLocal(evpn.Guest{VNI: 6000, MAC: "52:54:00:00:00:01"}, evpn.Guest{VNI: 6000, MAC: "52:54:00:00:00:02"})
	r.d.evpn.wake() // what the bridge's notification does
	waitUntil(t, "the moved guest announced", func() bool { s, ok := sp.seqOf("52:54:00:00:00:02"); return ok && s == 3 })
	waitUntil(t, "its remote entry removed", func() bool { return k.macs() == "" })
	if st := r.status(); !strings.Contains(st, "evpn=running \n") {
		t.Fatalf("status:\n%s", st)
	}
	r.d.mu.Lock()
	n := r.d.evpnNote()
	r.d.mu.Unlock()
	if !strings.Contains(n, "stretch (VNI 6000, VTEP 10.10.0.1): 2 local MACs announced, 0 remote MACs installed, flood to 1 VTEPs") {
		t.Fatalf("note %q", n)
	}

	// A kernel that refuses: the health says what failed.
	k.mu.Lock()
	k.fail = errors.New("injected")
	k.mu.Unlock()
	sp.setRemote(model.EVPN{MACs: []model.EVPNMAC{{VNI: 6000, VTEP: c, MAC: "52:54:00:00:00:09"}}})
	waitUntil(t, "the failure in the health", func() bool {
		return strings.Contains(r.status(), "evpn=degraded install: bridge fdb replace 52:54:00:00:00:09 dev gvx6000 dst 10.10.0.3")
	})
	k.mu.Lock()
	k.fail = nil
	k.mu.Unlock()
	sp.setRemote(sp.RemoteEVPN())
	waitUntil(t, "the health back", func() bool { return strings.Contains(r.status(), "evpn=running \n") })

	// The network is no longer stretched: its routes are withdrawn and the
	// service leaves the status.
	spec := stretchSpec(t)
	r.write(strings.Replace(spec, ", vxlan: {vni: 6000}", "", 1))
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	sp.mu.Lock()
	left := sp.announced
	sp.mu.Unlock()
	if len(left.MACs)+len(left.Flood) != 0 || strings.Contains(r.status(), "evpn") {
		t.Fatalf("after the network stopped being stretched: announced %+v, status\n%s", left, r.status())
	}
}
