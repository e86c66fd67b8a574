package nft

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/netns"
	"github.com/guestnet/guestnet/internal/spec"
)

// needRoot skips a test that needs network namespaces, or fails it when
// GUESTNET_E2E_REQUIRED=1 (CI) says it must run.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			return
		}
	}
	if os.Getenv("GUESTNET_E2E_REQUIRED") == "1" {
		t.Fatal("this test needs root and the nft command (a network namespace to load the table in), and GUESTNET_E2E_REQUIRED=1")
	}
	t.Skip("SKIPPED: needs root and nft to load the table in a network namespace")
}

var nsSeq atomic.Int32

// scratchNS makes a network namespace for the test and removes it after.
func scratchNS(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("gn-nfttest-%d-%d", os.Getpid(), nsSeq.Add(1))
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

// nftIn runs nft in ns with stdin.
func nftIn(t *testing.T, ns, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestKernelListsString (and reads back) loads the text of each rendered ruleset with
// `nft -f` into a fresh namespace, and checks that the kernel takes it
// (every chain a map jumps to exists, every rule is valid in its hook) and
// that `nft list table inet guestnet` prints it back byte for byte: String
// is what nft prints, maps, verdict maps, element layout and order
// included.
func TestKernelListsString(t *testing.T) {
	needRoot(t)
	cases := map[string][]model.Network{"many": manyNetworks(12)}
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, f := range files {
		s, err := spec.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = s.Models()
	}
	for name, nets := range cases {
		t.Run(name, func(t *testing.T) {
			rs, err := Render(nets, model.Host{})
			if err != nil {
				t.Fatal(err)
			}
			ns := scratchNS(t)
			loadEncoded(t, ns, rs)
			got := nftIn(t, ns, "", "list", "table", "inet", "guestnet")
			if got != rs.String() {
				t.Errorf("nft list of the encoded ruleset differs from String():\n%s", lineDiff(rs.String(), got))
			}
			back := readBack(t, ns)
			if !back.Equal(model.Ruleset{Chains: rs.Chains, Vmaps: rs.Vmaps}) {
				t.Errorf("the kernel's rules and verdict maps decode to\n%s\nwant\n%s", back, rs)
			}
		})
	}
}

// manyNetworks is n networks of every mode with DNS, peers, forwards and
// floating addresses, enough of each for nft to wrap its element lists.
func manyNetworks(n int) []model.Network {
	modes := []model.Mode{model.NAT, model.Routed, model.Isolated, model.Bridge, model.Open}
	var nets []model.Network
	for i := range n {
		m := modes[i%len(modes)]
		nw := model.Network{Name: fmt.Sprintf("n%02d", i), Mode: m, Bridge: fmt.Sprintf("gb%d", i),
			IPv4: netipPrefix(fmt.Sprintf("10.%d.0.1/24", 10+i)), DNS: &model.DNS{}}
		if i%7 == 6 {
			nw.GuestToHost = "all"
		}
		if i > 0 {
			nw.Peers = []string{"n00"}
		}
		switch m {
		case model.NAT:
			nw.Floating = []model.Floating{{Public: netipAddr(fmt.Sprintf("198.51.100.%d", 10+i)), Guest: netipAddr(fmt.Sprintf("10.%d.0.10", 10+i))},
				{Public: netipAddr(fmt.Sprintf("198.51.100.%d", 100+i)), Guest: netipAddr(fmt.Sprintf("10.%d.0.11", 10+i))}}
			fallthrough
		case model.Routed:
			to := netipAddr(fmt.Sprintf("10.%d.0.10", 10+i))
			nw.Forwards = []model.PortForward{{Proto: "tcp", PortFrom: 2000 + i, PortTo: 2000 + i, To: to, ToPort: 22},
				{Proto: "udp", PortFrom: 2000 + i, PortTo: 2000 + i, To: to}, {Proto: "tcp", PortFrom: 80 + 256*i, PortTo: 80 + 256*i, To: to},
				{Proto: "udp", PortFrom: 3000 - i, PortTo: 3000 - i, To: to, From: []netip.Prefix{netipPrefix("203.0.113.0/24"), netipPrefix(fmt.Sprintf("198.51.100.%d/32", i))}},
				{Proto: "tcp", PortFrom: 3000 + 256*i, PortTo: 3000 + 256*i, To: to, Listen: []netip.Addr{netipAddr("198.51.100.1")}}}
		case model.Isolated:
			if i%2 == 0 {
				nw.IPv4 = netipPrefix("")
			}
		}
		// Dual-stack (and, for an isolated one above, IPv6-only) networks.
		if m != model.Bridge && i%3 != 1 {
			nw.IPv6 = netipPrefix(fmt.Sprintf("fd42:%x::1/64", i))
		}
		if !nw.IPv4.IsValid() && !nw.IPv6.IsValid() {
			nw.DNS = nil
		}
		nets = append(nets, nw)
	}
	return nets
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out = append(out, fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, a, b))
		}
		if len(out) > 15 {
			break
		}
	}
	return strings.Join(out, "\n")
}

func netipPrefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s)
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// loadEncoded writes rs into ns's kernel the way apply does (one
// transaction through google/nftables, rules from Encode, verdict maps
// from VmapSet and VmapElements), without the command-line nft: so the
// listing shows how nft prints guestnet's own expressions.
func loadEncoded(t *testing.T, ns string, rs model.Ruleset) {
	t.Helper()
	h, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := h.Nft(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: model.Table})
	accept := nftables.ChainPolicyAccept
	hooks := map[string]*nftables.ChainHook{"forward": nftables.ChainHookForward, "input": nftables.ChainHookInput,
		"postrouting": nftables.ChainHookPostrouting, "prerouting": nftables.ChainHookPrerouting, "output": nftables.ChainHookOutput}
	chains := map[string]*nftables.Chain{}
	for _, mc := range rs.Chains { // first: the verdict maps' elements jump to them
		ch := &nftables.Chain{Name: mc.Name, Table: tbl}
		if mc.Hook != "" {
			ch.Type, ch.Hooknum, ch.Policy = nftables.ChainType(mc.Type), hooks[mc.Hook], &accept
			ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(mc.Priority))
		}
		chains[mc.Name] = c.AddChain(ch)
	}
	sets := map[string]*nftables.Set{}
	exact, ranged := model.SplitForwards(rs.Forwards)
	ip := nftables.TypeIPAddr
	for _, m := range []struct {
		set *nftables.Set
		els []nftables.SetElement
	}{
		{&nftables.Set{Name: model.ForwardsMap, IsMap: true, KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			DataType: nftables.MustConcatSetType(ip, nftables.TypeInetService)}, forwardEls(exact)},
		{&nftables.Set{Name: model.ForwardsSrcMap, IsMap: true, Interval: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(ip, ip, nftables.TypeInetProto, nftables.TypeInetService),
			DataType: nftables.MustConcatSetType(ip, nftables.TypeInetService)}, forwardEls(ranged)},
		{&nftables.Set{Name: model.FloatingIn, IsMap: true, KeyType: ip, DataType: ip}, floatingEls(rs.Floating, true)},
		{&nftables.Set{Name: model.FloatingOut, IsMap: true, KeyType: ip, DataType: ip}, floatingEls(rs.Floating, false)},
	} {
		m.set.Table = tbl
		if err := c.AddSet(m.set, m.els); err != nil {
			t.Fatal(err)
		}
		sets[m.set.Name] = m.set
	}
	for _, v := range rs.Vmaps {
		s, err := VmapSet(tbl, v.Name)
		if err != nil {
			t.Fatal(err)
		}
		els, err := VmapElements(v.Name, v.Elements)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddSet(s, els); err != nil {
			t.Fatal(err)
		}
		sets[v.Name] = s
	}
	for _, mc := range rs.Chains {
		for _, r := range mc.Rules {
			exprs, err := Encode(r, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range exprs {
				if l, ok := e.(*expr.Lookup); ok && sets[l.SetName] != nil {
					l.SetID = sets[l.SetName].ID // made in this same transaction
				}
			}
			nr := &nftables.Rule{Table: tbl, Chain: chains[mc.Name], Exprs: exprs}
			if r.Network != "" {
				nr.UserData = Comment(r.Network)
			}
			c.AddRule(nr)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("loading the encoded ruleset: %v", err)
	}
}

func forwardEls(fs []model.Forward) []nftables.SetElement {
	var out []nftables.SetElement
	for _, f := range fs {
		if f.Exact() {
			k, val := EncodeExact(f)
			out = append(out, nftables.SetElement{Key: k, Val: val})
			continue
		}
		k, kEnd, val := EncodeForward(f)
		out = append(out, nftables.SetElement{Key: k, KeyEnd: kEnd, Val: val})
	}
	return out
}

func floatingEls(fl []model.Floating, in bool) []nftables.SetElement {
	var out []nftables.SetElement
	for _, f := range fl {
		pub, g := f.Public.AsSlice(), f.Guest.AsSlice()
		if in {
			out = append(out, nftables.SetElement{Key: pub, Val: g})
		} else {
			out = append(out, nftables.SetElement{Key: g, Val: pub})
		}
	}
	return out
}

// readBack reads guestnet's chains and verdict maps from ns's kernel with
// Decode and DecodeVmapElements, as observe does.
func readBack(t *testing.T, ns string) model.Ruleset {
	t.Helper()
	h, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := h.Nft(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: model.Table, Family: nftables.TableFamilyINet}
	var rs model.Ruleset
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	names := map[nftables.ChainHook]string{*nftables.ChainHookForward: "forward", *nftables.ChainHookInput: "input",
		*nftables.ChainHookPostrouting: "postrouting", *nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookOutput: "output"}
	for _, ch := range chains {
		mc := model.Chain{Name: ch.Name, Type: string(ch.Type)}
		if ch.Hooknum != nil {
			mc.Hook, mc.Priority = names[*ch.Hooknum], int(*ch.Priority)
		}
		rules, err := c.GetRules(tbl, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			mr, ok := Decode(r.Exprs, CommentOf(r.UserData))
			if !ok {
				t.Errorf("chain %s: a rule does not decode: %v", ch.Name, r.Exprs)
			}
			mc.Rules = append(mc.Rules, mr)
		}
		rs.Chains = append(rs.Chains, mc)
	}
	sets, err := c.GetSets(tbl)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range model.Vmaps {
		for _, s := range sets {
			if s.Name != v.Name {
				continue
			}
			els, err := c.GetSetElements(s)
			if err != nil {
				t.Fatal(err)
			}
			es, ok := DecodeVmapElements(v.Name, els)
			if !ok {
				t.Errorf("map %s: the kernel's elements do not decode: %+v", v.Name, els)
			}
			rs.Vmaps = append(rs.Vmaps, model.Vmap{Name: v.Name, Key: v.Key, Elements: es})
		}
	}
	return rs
}
