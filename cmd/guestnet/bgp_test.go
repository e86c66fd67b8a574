package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/daemon"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

var bgpNow = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

// sampleBGP is a speaker with one established peer, one that is not (its
// last error from the peer holds a newline and an escape), two announced
// prefixes, and learned routes: one installed, one stale, three refused.
func sampleBGP() bgp.Status {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	return bgp.Status{ASN: 65001, RouterID: a("10.10.0.1"), Port: 179,
		Peers: []bgp.PeerStatus{
			{Address: a("10.10.0.2"), ASN: 65002, State: bgp.StateEstablished, Since: bgpNow.Add(-3*time.Minute - 12*time.Second - 400*time.Millisecond), Sent: 2, Received: 4, Installed: 1},
			{Address: a("10.10.0.254"), ASN: 65100, State: bgp.StateActive, Since: bgpNow.Add(-time.Hour), LastError: "hold timer expired\n10.10.0.9 65009 established\x1b[31m"},
		},
		Announced: []netip.Prefix{p("10.71.0.0/24"), p("203.0.113.7/32")},
		Learned: []bgp.Learned{
			{Prefix: p("0.0.0.0/0"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"), Refused: true, Why: "a default route: import does not list 0.0.0.0/0"},
			{Prefix: p("10.71.0.0/24"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"), Refused: true, Why: "inside this host's network 10.71.0.0/24"},
			{Prefix: p("10.72.0.0/24"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"), Installed: true},
			{Prefix: p("10.73.0.0/24"), NextHop: a("10.10.0.3"), Peer: a("10.10.0.2"), Installed: true, Stale: true},
			{Prefix: p("198.51.100.0/24"), NextHop: a("10.10.0.2"), Peer: a("10.10.0.2"), Refused: true, Why: "outside import (10.0.0.0/8, 172.16.0.0/12)"},
		},
	}
}

// The text of guestnet bgp, whole: the peers' table (state spelled out,
// uptime to the second while established, "-" otherwise, the peer's
// error text escaped so that it forges no row), the announced prefixes,
// the installed routes, the refused ones with their reason, the stale
// ones.
func TestPrintBGP(t *testing.T) {
	var b bytes.Buffer
	printBGP(&b, sampleBGP(), bgpNow)
	want := `AS 65001, router id 10.10.0.1, port 179
PEER         AS     STATE        UPTIME  SENT  RECEIVED  INSTALLED  LAST ERROR
10.10.0.2    65002  established  3m12s   2     4         1
10.10.0.254  65100  active       -       0     0         0          hold timer expired\n10.10.0.9 65009 established\x1b[31m

Announced (2):
  10.71.0.0/24
  203.0.113.7/32

Learned and installed (2):
  10.72.0.0/24 via 10.10.0.2 from 10.10.0.2
  10.73.0.0/24 via 10.10.0.3 from 10.10.0.2

Learned, not installed (3):
  0.0.0.0/0 via 10.10.0.2 from 10.10.0.2: a default route: import does not list 0.0.0.0/0
  10.71.0.0/24 via 10.10.0.2 from 10.10.0.2: inside this host's network 10.71.0.0/24
  198.51.100.0/24 via 10.10.0.2 from 10.10.0.2: outside import (10.0.0.0/8, 172.16.0.0/12)

Kept while their peer restarts (1):
  10.73.0.0/24 via 10.10.0.3 from 10.10.0.2
`
	if got := b.String(); got != want {
		t.Errorf("guestnet bgp printed:\n%s\nwant:\n%s", got, want)
	}
	// A speaker not started yet: no router id, no peers, nothing learned.
	b.Reset()
	printBGP(&b, bgp.Status{ASN: 65001, Port: 179}, bgpNow)
	want = "AS 65001, router id -, port 179\nNo peers.\n\nAnnounced (0):\n\nLearned and installed (0):\n\nLearned, not installed (0):\n"
	if b.String() != want {
		t.Errorf("an idle speaker printed:\n%q\nwant:\n%q", b.String(), want)
	}
}

func TestBGPSummary(t *testing.T) {
	st := sampleBGP()
	want := "bgp: AS 65001 announces 10.71.0.0/24, 203.0.113.7/32; peers: 10.10.0.2 established, 10.10.0.254 active"
	if got := bgpSummary(st); got != want {
		t.Errorf("bgpSummary = %q, want %q", got, want)
	}
	st.Peers = nil
	st.Announced = nil
	for i := range 6 {
		st.Announced = append(st.Announced, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 71, byte(i), 0}), 24))
	}
	want = "bgp: AS 65001 announces 10.71.0.0/24, 10.71.1.0/24, 10.71.2.0/24, 10.71.3.0/24, and 2 more; peers: none"
	if got := bgpSummary(st); got != want {
		t.Errorf("bgpSummary = %q, want %q", got, want)
	}
}

func TestCleanEscapesControls(t *testing.T) {
	for in, want := range map[string]string{
		"hold timer expired":   "hold timer expired",
		"":                     "",
		"a\nb\tc\x1b[31m":      `a\nb\tc\x1b[31m`,
		"caf\xc3\xa9 shutdown": "café shutdown",
		"bad \xff byte":        `bad \xff byte`,
		"\u202egnp":            `\u202egnp`, // right-to-left override: reorders what the terminal shows
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeDaemon answers GET /v1/bgp on the API socket of the state folder
// the CLI reads with --netns testNetns: with st, or, when st is nil, as
// a daemon whose config has no bgp section (HTTP 409).
func fakeDaemon(t *testing.T, st *bgp.Status) string {
	t.Helper()
	return fakeDaemonFor(t, testNetns, st)
}

// fakeDaemonFor is fakeDaemon for the state folder of namespace ns.
func fakeDaemonFor(t *testing.T, ns string, st *bgp.Status) string {
	t.Helper()
	dir := t.TempDir()
	sock := daemon.SocketPath(filepath.Dir(state.Path(dir, ns)))
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		if st == nil {
			http.Error(w, "no bgp section", http.StatusConflict)
			return
		}
		json.NewEncoder(w).Encode(st)
	})
	// What status and doctor ask besides (doctor's daemon.Running reads
	// the leases).
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]daemon.ServiceStatus{{Name: "bgp", State: "degraded", Problem: "BGP sessions not established: 10.10.0.254 (AS 65100) active"}})
	})
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("[]")) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return dir
}

// guestnet bgp end to end against a daemon's socket: the table, -o json
// (the Status as the daemon sent it), and the two ways it cannot answer:
// no daemon, no bgp section. Each is exit 1 with an error that says what
// to do, as JSON on stdout too with -o json.
func TestBGPCommand(t *testing.T) {
	st := sampleBGP()
	dir := fakeDaemon(t, &st)
	g := []string{"--netns", testNetns, "--state-dir", dir}
	out, errs, code := runCLI(t, append(g, "bgp")...)
	if code != 0 || !regexp.MustCompile(`(?m)^10\.10\.0\.2 +65002 +established +\d+[hms0-9]* +2 +4 +1$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^10\.10\.0\.254 +65100 +active +- +0 +0 +0 +hold timer`).MatchString(out) ||
		!strings.Contains(out, "\n  0.0.0.0/0 via 10.10.0.2 from 10.10.0.2: a default route") {
		t.Errorf("bgp: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runCLI(t, append(g, "-o", "json", "bgp")...)
	var got bgp.Status
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("bgp -o json: exit %d, %v\n%s%s", code, err, out, errs)
	}

	for _, tc := range []struct {
		name, dir, want string
	}{
		{"no daemon", stateDir(t), "no guestnet serve runs for namespace " + testNetns},
		{"no bgp section", fakeDaemon(t, nil), "has no bgp section"},
	} {
		g := []string{"--netns", testNetns, "--state-dir", tc.dir}
		out, errs, code := runCLI(t, append(g, "bgp")...)
		if code != 1 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", tc.name, code, out, errs, tc.want)
		}
		out, _, code = runCLI(t, append(g, "-o", "json", "bgp")...)
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(out), &e); code != 1 || err != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s -o json: exit %d, stdout %q", tc.name, code, out)
		}
	}
}

// -o json of a speaker with nothing yet: lists are [], not null.
func TestBGPJSONEmptyLists(t *testing.T) {
	dir := fakeDaemon(t, &bgp.Status{ASN: 65001, Port: 179})
	out, errs, code := runCLI(t, "--netns", testNetns, "--state-dir", dir, "-o", "json", "bgp")
	for _, k := range []string{`"peers": []`, `"announced": []`, `"learned": []`} {
		if code != 0 || !strings.Contains(out, k) {
			t.Errorf("bgp -o json: exit %d, want %s in:\n%s%s", code, k, out, errs)
		}
	}
}

// guestnet bgp takes no argument: the shell offers no file names.
func TestBGPCompletion(t *testing.T) {
	out, errs, code := runCLI(t, "__complete", "--netns", testNetns, "--state-dir", stateDir(t), "bgp", "")
	if code != 0 || strings.TrimSpace(out) != ":4" { // cobra.ShellCompDirectiveNoFileComp
		t.Errorf("__complete bgp: exit %d, %q (want only the directive :4, no file names)\n%s", code, out, errs)
	}
}

// needNetns skips a test that needs a network namespace of its own, or
// fails it when GUESTNET_E2E_REQUIRED=1 (CI) says it must run; it makes
// one and removes it when the test ends.
func needNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
			t.Fatal("this test needs root (a network namespace to observe), and GUESTNET_E2E_REQUIRED=1")
		}
		t.Skip("SKIPPED: needs root to make a network namespace")
	}
	ns := fmt.Sprintf("gn-clibgp-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	return ns
}

// status and doctor of a real (empty) namespace whose daemon runs a
// speaker: status has its bgp: line and its "bgp" part in JSON; doctor
// reports the peer not established, the refused routes (info), and the
// prefixes announced while forwarding is off (a new namespace has
// ip_forward 0), and exits 1.
func TestStatusAndDoctorBGP(t *testing.T) {
	ns := needNetns(t)
	st := sampleBGP()
	g := []string{"--netns", ns, "--state-dir", fakeDaemonFor(t, ns, &st)}
	out, errs, code := runCLI(t, append(g, "status")...)
	if code != 0 || !strings.Contains(out, "\n  bgp: AS 65001 announces 10.71.0.0/24, 203.0.113.7/32; peers: 10.10.0.2 established, 10.10.0.254 active\n") {
		t.Errorf("status: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runCLI(t, append(g, "-o", "json", "status")...)
	var doc struct{ BGP *bgp.Status }
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.BGP == nil || len(doc.BGP.Peers) != 2 {
		t.Errorf("status -o json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	out, errs, code = runCLI(t, append(g, "-o", "json", "doctor")...)
	var fs []struct{ Check, Severity, What string }
	if err := json.Unmarshal([]byte(out), &fs); err != nil || code != 1 {
		t.Fatalf("doctor -o json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	var got []string
	for _, f := range fs {
		if strings.HasPrefix(f.Check, "bgp-") {
			got = append(got, f.Check+":"+f.Severity)
		}
	}
	want := "bgp-session:warning bgp-learned:info bgp-learned:info bgp-learned:info bgp-forwarding:error"
	if strings.Join(got, " ") != want {
		t.Errorf("doctor's bgp findings: %v, want %s\n%s", got, want, out)
	}
	// Without a bgp section, neither says anything of BGP.
	g = []string{"--netns", ns, "--state-dir", fakeDaemonFor(t, ns, nil)}
	out, errs, code = runCLI(t, append(g, "status")...)
	if code != 0 || strings.Contains(out, "bgp:") {
		t.Errorf("status without a bgp section: exit %d\n%s%s", code, out, errs)
	}
	out, _, _ = runCLI(t, append(g, "doctor")...)
	if strings.Contains(out, "bgp-") {
		t.Errorf("doctor without a bgp section reports BGP:\n%s", out)
	}
}

// IPv6 peers, prefixes and next hops read as IPv4 ones do, a link-local
// next hop with its interface (fe80::2%lan0), in the text and in -o json.
func TestPrintBGP6(t *testing.T) {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	st := bgp.Status{ASN: 65001, RouterID: a("10.10.0.1"), Port: 179,
		Peers:     []bgp.PeerStatus{{Address: a("fd00:10::2"), ASN: 65002, State: bgp.StateEstablished, Since: bgpNow.Add(-time.Minute), Sent: 1, Received: 2, Installed: 1}},
		Announced: []netip.Prefix{p("2001:db8:71::/64")},
		Learned: []bgp.Learned{
			{Prefix: p("::/0"), NextHop: a("fd00:10::2"), Peer: a("fd00:10::2"), Refused: true, Why: "a default route: installed only when import lists ::/0"},
			{Prefix: p("fd00:90::/64"), NextHop: a("fe80::2%lan0"), Peer: a("fd00:10::2"), Installed: true},
		},
	}
	var b bytes.Buffer
	printBGP(&b, st, bgpNow)
	want := `AS 65001, router id 10.10.0.1, port 179
PEER        AS     STATE        UPTIME  SENT  RECEIVED  INSTALLED  LAST ERROR
fd00:10::2  65002  established  1m0s    1     2         1

Announced (1):
  2001:db8:71::/64

Learned and installed (1):
  fd00:90::/64 via fe80::2%lan0 from fd00:10::2

Learned, not installed (1):
  ::/0 via fd00:10::2 from fd00:10::2: a default route: installed only when import lists ::/0
`
	if got := b.String(); got != want {
		t.Errorf("guestnet bgp printed:\n%s\nwant:\n%s", got, want)
	}
	js, err := json.Marshal(bgpJSON(st))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"address":"fd00:10::2"`, `"announced":["2001:db8:71::/64"]`, `"prefix":"fd00:90::/64","next_hop":"fe80::2%lan0"`, `"prefix":"::/0"`} {
		if !strings.Contains(string(js), w) {
			t.Errorf("json lacks %s:\n%s", w, js)
		}
	}
	var back bgp.Status
	if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(back.Learned, st.Learned) {
		t.Errorf("json round trip: %v\n%+v\nwant %+v", err, back.Learned, st.Learned)
	}
}

// The EVPN part of guestnet bgp: VTEPs per VNI (this host's, the remote
// ones), then every remote MAC with its IP, VTEP and sequence (a MAC two
// VTEPs name is listed twice); a peer that is this host shows "self".
// -o json carries the same.
func TestPrintBGPEVPN(t *testing.T) {
	a := netip.MustParseAddr
	remote := model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 6000, VTEP: a("10.10.0.2")}, {VNI: 6000, VTEP: a("10.10.0.3")}},
		MACs: []model.EVPNMAC{
			{VNI: 6000, VTEP: a("10.10.0.2"), MAC: "52:54:00:0b:00:01", IP: a("10.60.0.102")},
			{VNI: 6000, VTEP: a("10.10.0.2"), MAC: "52:54:00:0c:00:01", Seq: 1},
			{VNI: 6000, VTEP: a("10.10.0.3"), MAC: "52:54:00:0c:00:01", IP: a("10.60.0.103"), Seq: 2},
		},
	}
	local := model.EVPN{
		Flood: []model.EVPNFlood{{VNI: 6000, VTEP: a("10.10.0.1")}, {VNI: 7000, VTEP: a("10.10.0.1")}},
		MACs:  []model.EVPNMAC{{VNI: 6000, VTEP: a("10.10.0.1"), MAC: "52:54:00:0a:00:01", IP: a("10.60.0.101")}},
	}
	st := bgp.Status{ASN: 65000, RouterID: a("10.10.0.1"), Port: 179,
		Peers: []bgp.PeerStatus{
			{Address: a("10.10.0.1"), ASN: 65000, State: bgp.StateSelf, LastError: "10.10.0.1 is this host's own address (dev lan0): left out of the sessions"},
			{Address: a("10.10.0.2"), ASN: 65000, State: bgp.StateEstablished, Since: bgpNow.Add(-time.Minute), Sent: 3, Received: 3},
		},
		EVPN: &bgp.EVPNStatus{Local: local, Remote: remote, VNIs: []bgp.VNIStatus{
			{VNI: 6000, LocalVTEP: a("10.10.0.1"), RemoteVTEPs: []netip.Addr{a("10.10.0.2"), a("10.10.0.3")}, LocalMACs: 1, RemoteMACs: 3},
			{VNI: 7000, LocalVTEP: a("10.10.0.1"), RemoteVTEPs: []netip.Addr{}},
		}, Ready: true},
	}
	var b bytes.Buffer
	printBGP(&b, st, bgpNow)
	want := `AS 65000, router id 10.10.0.1, port 179
PEER       AS     STATE        UPTIME  SENT  RECEIVED  INSTALLED  LAST ERROR
10.10.0.1  65000  self         -       0     0         0          10.10.0.1 is this host's own address (dev lan0): left out of the sessions
10.10.0.2  65000  established  1m0s    3     3         0

Announced (0):

Learned and installed (0):

Learned, not installed (0):

EVPN VNIs (2):
  VNI 6000: local VTEP 10.10.0.1, remote VTEPs 10.10.0.2, 10.10.0.3; MACs 1 local, 3 remote
  VNI 7000: local VTEP 10.10.0.1, remote VTEPs none; MACs 0 local, 0 remote

Remote MACs (3):
  VNI   MAC                IP           VTEP       SEQ
  6000  52:54:00:0b:00:01  10.60.0.102  10.10.0.2  0
  6000  52:54:00:0c:00:01  -            10.10.0.2  1
  6000  52:54:00:0c:00:01  10.60.0.103  10.10.0.3  2
`
	if got := b.String(); got != want {
		t.Errorf("guestnet bgp printed:\n%s\nwant:\n%s", got, want)
	}
	b.Reset()
	notReady := *st.EVPN
	notReady.Ready = false
	printEVPN(&b, notReady)
	if !strings.Contains(b.String(), "EVPN VNIs (2, remote routes incomplete: waiting for the peers' End-of-RIB):") {
		t.Errorf("EVPN not ready printed:\n%s", b.String())
	}
	dir := fakeDaemon(t, &st)
	out, errs, code := runCLI(t, "--netns", testNetns, "--state-dir", dir, "-o", "json", "bgp")
	var got bgp.Status
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || !reflect.DeepEqual(got.EVPN, st.EVPN) {
		t.Errorf("bgp -o json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	for _, w := range []string{`"remote_vteps": [`, `"mac": "52:54:00:0c:00:01"`, `"seq": 2`, `"state": "self"`} {
		if !strings.Contains(out, w) {
			t.Errorf("bgp -o json lacks %s:\n%s", w, out)
		}
	}
}
