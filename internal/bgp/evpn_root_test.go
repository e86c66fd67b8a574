package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// evpnIs waits until s's RemoteEVPN is want.
func evpnIs(t *testing.T, s *Speaker, what string, want model.EVPN) time.Duration {
	t.Helper()
	want = canonical(want)
	return waitFor(t, what, 20*time.Second, func() (bool, string) {
		got := s.RemoteEVPN()
		return reflect.DeepEqual(got, want), fmt.Sprintf("%+v, want %+v", got, want)
	})
}

func evpnOfHost(vtep string, vni uint32, macs ...model.EVPNMAC) model.EVPN {
	e := model.EVPN{Flood: []model.EVPNFlood{{VNI: vni, VTEP: addr(vtep)}}}
	for _, m := range macs {
		m.VNI, m.VTEP = vni, addr(vtep)
		e.MACs = append(e.MACs, m)
	}
	return e
}

// TestEVPNSpeakers: two speakers (eBGP, then a restart of A's server
// with EVPN already announced) exchange type-2 and type-3 routes: each
// one's RemoteEVPN is the other's announced set, through adds, a changed
// Seq, a changed IP and withdraws; OnEVPN tells of each change; nothing
// EVPN enters the kernel's routes; a peer removed empties it.
func TestEVPNSpeakers(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	ca, cb := conf(port, 1, 2), conf(port, 2, 1)
	ca.EVPN, cb.EVPN = true, true

	// A announces before its speaker starts.
	a := New(kA, testLog(t, "A"))
	var changedA atomic.Int32
	a.OnEVPN(func() { changedA.Add(1) })
	ea := evpnOfHost("10.10.0.1", 6000,
		model.EVPNMAC{MAC: "52:54:00:0a:00:01", IP: addr("10.60.0.101")},
		model.EVPNMAC{MAC: "52:54:00:0a:00:02"})
	if err := a.AnnounceEVPN(ea); err != nil {
		t.Fatal(err)
	}
	if a.EVPNReady() {
		t.Error("EVPNReady before the speaker started")
	}
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(false)
	b := start(t, kB, cb, "B")
	defer b.Stop(false)
	eb := evpnOfHost("10.10.0.2", 6000, model.EVPNMAC{MAC: "52:54:00:0b:00:01", IP: addr("10.60.0.102"), Seq: 2})
	if err := b.AnnounceEVPN(eb); err != nil {
		t.Fatal(err)
	}
	took := evpnIs(t, b, "B receives A's type 2 and 3", ea)
	t.Logf("B has A's EVPN routes %s after start", took.Round(time.Millisecond))
	evpnIs(t, a, "A receives B's", eb)
	took = waitFor(t, "A's EVPN ready (B's End-of-RIB)", deferralTime*time.Second/2, func() (bool, string) { return a.EVPNReady(), "" })
	t.Logf("A's EVPN ready %s after B had A's routes", took.Round(time.Millisecond))
	if changedA.Load() == 0 {
		t.Error("A's OnEVPN not called when B's routes came")
	}
	if got := bgpTable(t, kA); len(got) != 0 {
		t.Errorf("A's kernel has BGP routes from EVPN: %q", got)
	}
	st := a.Status()
	if st.EVPN == nil || len(st.EVPN.VNIs) != 1 || st.EVPN.VNIs[0].LocalMACs != 2 || st.EVPN.VNIs[0].RemoteMACs != 1 ||
		!reflect.DeepEqual(st.EVPN.VNIs[0].RemoteVTEPs, []netip.Addr{addr("10.10.0.2")}) {
		t.Errorf("A's EVPN status: %+v", st.EVPN)
	}
	waitFor(t, "A counts B's 2 EVPN routes received, none installed", 15*time.Second, func() (bool, string) {
		p := a.Status().Peers[0]
		return p.Received == 2 && p.Sent == 3 && p.Installed == 0, fmt.Sprintf("%+v", p)
	})

	// Changes: a MAC moves to B with a higher Seq (A withdraws it), A's
	// other MAC gets an IP, B adds a second VNI.
	ea = evpnOfHost("10.10.0.1", 6000, model.EVPNMAC{MAC: "52:54:00:0a:00:02", IP: addr("10.60.0.111")})
	eb = evpnOfHost("10.10.0.2", 6000,
		model.EVPNMAC{MAC: "52:54:00:0b:00:01", IP: addr("10.60.0.102"), Seq: 2},
		model.EVPNMAC{MAC: "52:54:00:0a:00:01", IP: addr("10.60.0.101"), Seq: 1})
	eb.Flood = append(eb.Flood, model.EVPNFlood{VNI: 70000, VTEP: addr("10.10.0.2")})
	if err := a.AnnounceEVPN(ea); err != nil {
		t.Fatal(err)
	}
	if err := b.AnnounceEVPN(eb); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, b, "B follows A's withdraw and new IP", ea)
	evpnIs(t, a, "A sees the moved MAC with Seq 1 and B's new VNI", eb)

	// A changed Seq only: the route is replaced, not withdrawn.
	eb.MACs[1].Seq = 5
	if err := b.AnnounceEVPN(eb); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, a, "A sees Seq 5", eb)

	// A's server restarts (a new router ID): its routes are announced
	// again without a new AnnounceEVPN.
	ca.RouterID = addr("10.255.0.11")
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, b, "B has A's routes again after A's restart", ea)
	evpnIs(t, a, "A has B's routes again after its restart", eb)

	// B goes (its speaker stopped, the routes withdrawn): A's set empties.
	before := changedA.Load()
	b.Stop(false)
	took = evpnIs(t, a, "A drops B's routes", model.EVPN{})
	t.Logf("B's EVPN routes gone from A %s after B stopped", took.Round(time.Millisecond))
	if changedA.Load() == before {
		t.Error("A's OnEVPN not called when B's routes left")
	}
}

// TestEVPNSilentPeer: a peer gone silent (hold timer) takes its EVPN
// routes with it, though GoBGP keeps them stale; they come back with it.
func TestEVPNSilentPeer(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	hole := relay(t, fmt.Sprintf("127.0.0.2:%d", port), fmt.Sprintf("127.0.0.12:%d", port), "127.0.0.1")
	ca, cb := conf(port, 1, 2), conf(port, 2, 1)
	cb.Listen = []netip.Addr{addr("127.0.0.12")}
	ca.EVPN, cb.EVPN = true, true
	a := start(t, kA, ca, "A")
	defer a.Stop(false)
	b := start(t, kB, cb, "B")
	defer b.Stop(false)
	eb := evpnOfHost("10.10.0.2", 6000, model.EVPNMAC{MAC: "52:54:00:0b:00:01"})
	if err := b.AnnounceEVPN(eb); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, a, "A receives B's routes through the relay", eb)
	hole.freeze()
	took := evpnIs(t, a, "A drops the silent peer's routes", model.EVPN{})
	t.Logf("silent peer's EVPN routes dropped %s after the silence began (hold %s)", took.Round(time.Millisecond), model.BGPMinHold)
	hole.unfreeze()
	evpnIs(t, a, "A has B's routes again", eb)
}

// TestEVPNSelfPeer: a spec shared by every host lists this host among the
// peers: it is left out with state "self", no error, and the other
// session carries EVPN.
func TestEVPNSelfPeer(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	ca := conf(port, 1, 2)
	// 127.0.0.100 is kA's own address (hostNS's veth).
	ca.Peers = append(ca.Peers, model.BGPPeer{Address: addr("127.0.0.100"), ASN: 65001})
	ca.EVPN = true
	a := New(kA, testLog(t, "A"))
	if err := a.Configure(context.Background(), ca); err != nil {
		t.Fatalf("Configure with this host among the peers: %v", err)
	}
	defer a.Stop(false)
	cb := conf(port, 2, 1)
	cb.EVPN = true
	b := start(t, kB, cb, "B")
	defer b.Stop(false)
	ea := evpnOfHost("10.10.0.1", 6000)
	if err := a.AnnounceEVPN(ea); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, b, "B receives A's flood route", ea)
	var self *PeerStatus
	for _, p := range a.Status().Peers {
		if p.Address == addr("127.0.0.100") {
			self = &p
		}
	}
	if self == nil || self.State != StateSelf {
		t.Errorf("A's peer 127.0.0.100 (itself): %+v, want state self", self)
	}
}

// TestEVPNMobilityIBGP: two hosts of one AS (one route target per VNI).
// GoBGP checks MAC mobility as it takes a route: a MAC a peer announces
// with Seq 5 is refused from this host with Seq 2 (AnnounceEVPN says
// so, the rest of the set is announced), taken with Seq 6; a MAC
// announced with no Seq while a peer has it gets the peer's Seq + 1.
func TestEVPNMobilityIBGP(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	kA, kB := hostNS(t), hostNS(t)
	ca, cb := conf(port, 1, 2), conf(port, 2, 1)
	cb.ASN, ca.Peers[0].ASN = 65001, 65001
	ca.EVPN, cb.EVPN = true, true
	a := start(t, kA, ca, "A")
	defer a.Stop(false)
	b := start(t, kB, cb, "B")
	defer b.Stop(false)
	eb := evpnOfHost("10.10.0.2", 6000, model.EVPNMAC{MAC: "52:54:00:0b:00:01", Seq: 5}, model.EVPNMAC{MAC: "52:54:00:0b:00:02", Seq: 3})
	if err := b.AnnounceEVPN(eb); err != nil {
		t.Fatal(err)
	}
	evpnIs(t, a, "A receives B's MACs", eb)

	ea := evpnOfHost("10.10.0.1", 6000, model.EVPNMAC{MAC: "52:54:00:0b:00:01", Seq: 2})
	err := a.AnnounceEVPN(ea)
	t.Logf("A announces B's MAC with Seq 2: %v", err)
	if err == nil || !strings.Contains(err.Error(), "MAC 52:54:00:0b:00:01 VNI 6000 VTEP 10.10.0.1 seq 2") {
		t.Errorf("AnnounceEVPN with a Seq below the peer's: %v, want GoBGP's refusal naming the route", err)
	}
	evpnIs(t, b, "B has A's flood route (the refused MAC left out)", evpnOfHost("10.10.0.1", 6000))

	ea = evpnOfHost("10.10.0.1", 6000, model.EVPNMAC{MAC: "52:54:00:0b:00:01", Seq: 6}, model.EVPNMAC{MAC: "52:54:00:0b:00:02"})
	if err := a.AnnounceEVPN(ea); err != nil {
		t.Fatal(err)
	}
	seen := ea
	seen.MACs[1].Seq = 4 // GoBGP's: B's 3 + 1
	evpnIs(t, b, "B has A's MACs, Seq 6 and 4", seen)
}
