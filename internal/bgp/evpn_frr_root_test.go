package bgp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/engine"
	"github.com/guestnet/guestnet/internal/model"
)

// Interop with a speaker we did not write: FRR's bgpd (with zebra, which
// reads the kernel's VXLAN devices and writes their FDB) in one namespace,
// our speaker in another, one iBGP session (AS 65000) over a veth pair,
// L2VPN EVPN activated on it. Our speaker runs in a child process (this
// test binary, TestEVPNFRRChild) started inside its namespace with ip
// netns exec: GoBGP opens its sockets in the namespace of whichever
// thread runs, so the test process, in the root namespace, cannot host
// it. The child writes its RemoteEVPN and peers to a file.

const (
	frrChildEnv = "GUESTNET_EVPN_FRR_CHILD" // the file the child writes
	frrChildNS  = "GUESTNET_EVPN_FRR_NS"
)

// ourEVPN is what our speaker announces to FRR.
func ourEVPN() model.EVPN {
	return model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 100, VTEP: addr("10.10.0.1")}},
		MACs: []model.EVPNMAC{
			{VNI: 100, VTEP: addr("10.10.0.1"), MAC: "52:54:00:aa:00:01", IP: addr("10.60.0.101")},
			{VNI: 100, VTEP: addr("10.10.0.1"), MAC: "52:54:00:aa:00:02", Seq: 2},
		},
	}
}

// childView is what the child reports.
type childView struct {
	Remote model.EVPN
	Peers  []PeerStatus
	Ready  bool
}

// TestEVPNFRRChild is our speaker's side of TestEVPNFRR; it runs only as
// that test's child, inside its namespace.
func TestEVPNFRRChild(t *testing.T) {
	out := os.Getenv(frrChildEnv)
	if out == "" {
		t.Skip("the child of TestEVPNFRR")
	}
	e, err := engine.Open(os.Getenv(frrChildNS), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := New(e.Kernel, testLog(t, "guestnet"))
	if err := s.AnnounceEVPN(ourEVPN()); err != nil {
		t.Fatal(err)
	}
	c := model.BGP{ASN: 65000, RouterID: addr("10.10.0.1"), Listen: []netip.Addr{addr("10.10.0.1")}, EVPN: true, Import: model.DefaultImport,
		Peers: []model.BGPPeer{{Address: addr("10.10.0.2"), ASN: 65000, Hold: model.BGPMinHold}}}
	if err := s.Configure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(false)
	for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		b, _ := json.Marshal(childView{Remote: s.RemoteEVPN(), Peers: s.Status().Peers, Ready: s.EVPNReady()})
		if err := os.WriteFile(out+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(out+".tmp", out); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(out + ".stop"); err == nil {
			return
		}
	}
}

func TestEVPNFRR(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
			t.Fatal("FRR's bgpd is missing (apt-get install frr), and GUESTNET_E2E_REQUIRED=1")
		}
		t.Skip("SKIPPED: needs FRR (/usr/lib/frr/bgpd)")
	}
	id := fmt.Sprintf("%d-%d", os.Getpid(), nsSeq.Add(1))
	nsG, nsF := "gn-evpng-"+id, "gn-evpnf-"+id
	for _, ns := range []string{nsG, nsF} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "-n", nsG, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", nsF)
	ipCmd(t, "-n", nsG, "addr", "add", "10.10.0.1/24", "dev", "lan0")
	ipCmd(t, "-n", nsF, "addr", "add", "10.10.0.2/24", "dev", "lan0")
	for _, ns := range []string{nsG, nsF} {
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", ns, "link", "set", "lan0", "up")
	}
	// FRR's side of VNI 100: a VXLAN device in a bridge (zebra finds the
	// VNI there, bgpd advertises it: advertise-all-vni), and a guest port
	// with a MAC in the bridge's FDB (advertised as type 2).
	ipCmd(t, "-n", nsF, "link", "add", "br100", "type", "bridge")
	ipCmd(t, "-n", nsF, "link", "add", "vx100", "type", "vxlan", "id", "100", "local", "10.10.0.2", "dstport", "4789", "nolearning")
	ipCmd(t, "-n", nsF, "link", "add", "tap0", "type", "veth", "peer", "name", "tap0p")
	ipCmd(t, "-n", nsF, "link", "set", "vx100", "master", "br100")
	ipCmd(t, "-n", nsF, "link", "set", "tap0", "master", "br100")
	for _, l := range []string{"br100", "vx100", "tap0", "tap0p"} {
		ipCmd(t, "-n", nsF, "link", "set", l, "up")
	}
	bridgeCmd(t, nsF, "fdb", "add", "52:54:00:ff:00:01", "dev", "tap0", "master", "static")

	f := startFRR(t, nsF, `frr defaults traditional
hostname frr
router bgp 65000
 bgp router-id 10.10.0.2
 no bgp ebgp-requires-policy
 neighbor 10.10.0.1 remote-as 65000
 neighbor 10.10.0.1 timers 3 9
 neighbor 10.10.0.1 timers connect 2
 address-family l2vpn evpn
  neighbor 10.10.0.1 activate
  advertise-all-vni
 exit-address-family
`)

	out := filepath.Join(t.TempDir(), "view.json")
	child := exec.Command("ip", "netns", "exec", nsG, os.Args[0], "-test.run=^TestEVPNFRRChild$", "-test.count=1")
	if testing.Verbose() {
		child.Args = append(child.Args, "-test.v")
	}
	var clog bytes.Buffer
	child.Stdout, child.Stderr = &clog, &clog
	child.Env = append(os.Environ(), frrChildEnv+"="+out, frrChildNS+"="+nsG)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(out+".stop", nil, 0o600)
		done := make(chan error, 1)
		go func() { done <- child.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			child.Process.Kill() // by PID: the child this test started
			<-done
		}
		if t.Failed() {
			t.Logf("our speaker's log:\n%s", clog.String())
		}
	}()
	view := func() childView {
		var v childView
		b, err := os.ReadFile(out)
		if err == nil {
			json.Unmarshal(b, &v)
		}
		return v
	}

	took := waitFor(t, "the session with FRR established", 60*time.Second, func() (bool, string) {
		v := view()
		return len(v.Peers) == 1 && v.Peers[0].State == StateEstablished, fmt.Sprintf("%+v\n%s", v.Peers, f.vtysh(t, "show bgp summary"))
	})
	t.Logf("session with FRR established %s after start", took.Round(time.Millisecond))

	// FRR holds our type 3 and both type 2 (their RD, next hop, label).
	waitFor(t, "FRR shows our type-2 and type-3 routes", 30*time.Second, func() (bool, string) {
		text := f.vtysh(t, "show bgp l2vpn evpn")
		ok := true
		for _, w := range []string{"[3]:[0]:[32]:[10.10.0.1]", "[2]:[0]:[48]:[52:54:00:aa:00:01]:[32]:[10.60.0.101]", "[2]:[0]:[48]:[52:54:00:aa:00:02]", "Route Distinguisher: 10.10.0.1:100"} {
			ok = ok && strings.Contains(text, w)
		}
		return ok, text
	})
	t.Logf("FRR's show bgp l2vpn evpn:\n%s", f.vtysh(t, "show bgp l2vpn evpn"))
	t.Logf("FRR's view of our MAC with mobility:\n%s", f.vtysh(t, "show bgp l2vpn evpn route rd 10.10.0.1:100 mac 52:54:00:aa:00:02"))

	// FRR imported them into VNI 100 (RT 65000:100) and zebra wrote them to
	// its kernel: our VTEP in the flood list, our MACs behind it.
	waitFor(t, "FRR's kernel FDB has our VTEP and MACs", 30*time.Second, func() (bool, string) {
		fdb := bridgeOut(t, nsF, "fdb", "show", "dev", "vx100")
		ok := true
		for _, w := range []string{"00:00:00:00:00:00 dst 10.10.0.1", "52:54:00:aa:00:01 dst 10.10.0.1", "52:54:00:aa:00:02 dst 10.10.0.1"} {
			ok = ok && strings.Contains(fdb, w)
		}
		return ok, fdb + "\n" + f.vtysh(t, "show evpn vni 100") + f.vtysh(t, "show evpn mac vni 100")
	})
	t.Logf("FRR's kernel FDB of vx100:\n%s", bridgeOut(t, nsF, "fdb", "show", "dev", "vx100"))

	// And the other way: RemoteEVPN has FRR's type 3 (VNI 100, VTEP
	// 10.10.0.2) and its guest's MAC (besides the MAC of the bridge port
	// itself, which zebra advertises too).
	guest := model.EVPNMAC{VNI: 100, VTEP: addr("10.10.0.2"), MAC: "52:54:00:ff:00:01"}
	flood := []model.EVPNFlood{{VNI: 100, VTEP: addr("10.10.0.2")}}
	waitFor(t, "RemoteEVPN shows FRR's type-3 and type-2 routes", 30*time.Second, func() (bool, string) {
		v := view()
		return slices.Equal(v.Remote.Flood, flood) && slices.Contains(v.Remote.MACs, guest), fmt.Sprintf("%+v\n%s", v.Remote, f.vtysh(t, "show bgp l2vpn evpn"))
	})
	t.Logf("our RemoteEVPN: %+v", view().Remote)
	took = waitFor(t, "EVPNReady by FRR's End-of-RIB", deferralTime*time.Second/2, func() (bool, string) { return view().Ready, "" })
	t.Logf("EVPN ready (FRR's End-of-RIB) %s after FRR's routes were seen", took.Round(time.Millisecond))

	// FRR's guest leaves: its type 2 is withdrawn, RemoteEVPN follows.
	bridgeCmd(t, nsF, "fdb", "del", "52:54:00:ff:00:01", "dev", "tap0", "master", "static")
	took = waitFor(t, "RemoteEVPN drops FRR's withdrawn MAC", 30*time.Second, func() (bool, string) {
		v := view()
		return slices.Equal(v.Remote.Flood, flood) && !slices.Contains(v.Remote.MACs, guest), fmt.Sprintf("%+v", v.Remote)
	})
	t.Logf("FRR's withdraw reached RemoteEVPN %s after the FDB entry went", took.Round(time.Millisecond))
}

func bridgeCmd(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "bridge"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("bridge %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func bridgeOut(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "bridge"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("bridge %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// frrProc is zebra and bgpd in one namespace, their sockets in dir.
type frrProc struct{ dir string }

// startFRR runs zebra and bgpd (as user frr: zebra refuses root) inside
// ns with bgpdConf, in a folder of their own; both are ended by PID when
// the test ends.
func startFRR(t *testing.T, ns, bgpdConf string) *frrProc {
	t.Helper()
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("user frr: %v (the Debian package frr makes it)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "guestnet-evpn-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for name, text := range map[string]string{"zebra.conf": "", "bgpd.conf": bgpdConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chown(filepath.Join(dir, name), uid, gid)
	}
	os.Chown(dir, uid, gid)
	os.Chmod(dir, 0o755)
	run := func(d string) {
		var log bytes.Buffer
		cmd := exec.Command("ip", "netns", "exec", ns, "/usr/lib/frr/"+d, "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-u", "frr", "-g", "frr", "-P", "0", "--log", "stdout")
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", d, err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt) // by PID
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", d, log.String())
			}
		})
	}
	run("zebra")
	waitFor(t, "zebra's socket", 10*time.Second, func() (bool, string) {
		_, err := os.Stat(filepath.Join(dir, "zserv.api"))
		return err == nil, fmt.Sprint(err)
	})
	run("bgpd")
	f := &frrProc{dir: dir}
	waitFor(t, "bgpd answers vtysh", 10*time.Second, func() (bool, string) {
		out, err := exec.Command("vtysh", "--vty_socket", dir, "-c", "show bgp summary").CombinedOutput()
		return err == nil, string(out)
	})
	return f
}

func (f *frrProc) vtysh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("vtysh", "--vty_socket", f.dir, "-c", cmd).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("vtysh -c %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}
