package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The proof of issue 16, on the stretch lab (stretchlab_test.go): three
// hosts, one shared spec, one network stretched over VXLAN with BGP EVPN,
// leases in a three-member etcd cluster.

// TestStretchGuests: guests on three hosts get leases from their own host,
// resolve names on the anycast gateway (each other's too), ping each other,
// a broadcast ARP crosses hosts, each reaches the far host through its own
// host (masqueraded to that host's LAN address), and the VXLAN devices
// learned nothing: every remote MAC in their FDB is an EVPN route.
func TestStretchGuests(t *testing.T) {
	s := newStretchLab(t, stretchOpts{})
	t.Logf("overlay up (every host floods to the other two VTEPs) %v after serve started", s.WaitOverlay().Round(time.Millisecond))
	names := []string{"alpha", "bravo", "charlie"}
	var gs []*stretchGuest
	addrs := map[string]string{}
	for i, h := range s.Hosts {
		g := s.Guest(h, names[i])
		a := g.MustDHCP()
		gs = append(gs, g)
		addrs[g.Name] = a
		t.Logf("%s on h%d (%s) leased %s", g.Name, h.N, g.MAC, a)
	}
	if len(distinct(values(addrs))) != 3 {
		t.Fatalf("three guests, addresses %v: not distinct", addrs)
	}

	// DHCP does not cross: each guest's lease was granted by its own host.
	for _, g := range gs {
		for _, h := range s.Hosts {
			granted := grantedBy(h, g.MAC)
			if (h == g.Host) != granted {
				t.Errorf("%s (on h%d): lease granted by h%d = %v, want %v", g.Name, g.Host.N, h.N, granted, h == g.Host)
			}
		}
	}
	// Every host lists every lease, whichever host wrote it.
	for _, h := range s.Hosts {
		for _, g := range gs {
			if r := waitLease(h, g.MAC, 10*time.Second); r == nil || r.str("ip") != addrs[g.Name] {
				t.Errorf("h%d lists %s's lease as %v, want %s", h.N, g.Name, r, addrs[g.Name])
			}
		}
	}

	var rows []check
	for _, a := range gs {
		for _, b := range gs {
			if a != b {
				rows = append(rows, check{fmt.Sprintf("%s (h%d) -> %s (h%d) ping", a.Name, a.Host.N, b.Name, b.Host.N),
					true, func() bool { return s.Ping(a.NS, addrs[b.Name]) }})
			}
		}
	}
	// Names on the gateway: a guest's own, another host's guest (its
	// lease came from etcd), and the upstream's.
	for _, q := range []struct{ from, name, want string }{
		{"alpha", "alpha." + stretchDomain, addrs["alpha"]},
		{"alpha", "charlie." + stretchDomain, addrs["charlie"]},
		{"charlie", "bravo." + stretchDomain, addrs["bravo"]},
		{"bravo", farName, farNameAddr},
	} {
		g := gs[slices.Index(names, q.from)]
		rows = append(rows, check{fmt.Sprintf("%s: nslookup %s @%s = %s", q.from, q.name, stretchGW, q.want), true, func() bool {
			out, _ := s.tryIn(g.NS, "busybox", "nslookup", q.name, stretchGW)
			return strings.Contains(out, "Address: "+q.want) || strings.Contains(out, "Address 1: "+q.want)
		}})
	}
	// A guest reaches the far host through its own host: the far host sees
	// that host's LAN address.
	for _, g := range gs {
		rows = append(rows, check{fmt.Sprintf("%s -> far %s:8080 seen from %s", g.Name, farAddr, g.Host.Addr), true, func() bool {
			src, err := s.Dial(g.NS, farAddr+":8080")
			if err != nil || src != g.Host.Addr {
				t.Logf("%s -> far: source %q, err %v", g.Name, src, err)
			}
			return err == nil && src == g.Host.Addr
		}})
	}
	// Broadcast crosses hosts, DHCP does not: bravo (h2) and charlie (h3)
	// listen while alpha (h1) asks ARP for an address no one holds (no
	// host can answer it from its neighbour table: ARP suppression
	// knows nothing of it, so the request is flooded to every VTEP) and
	// sends a DHCP DISCOVER again (its own host answers; the VXLAN port
	// drops DHCP).
	rows = append(rows, check{"alpha (h1) ARP who-has 10.60.0.77 heard by bravo (h2) and charlie (h3); alpha's DHCP by neither", true, func() bool {
		ears := []*heard{s.Hear(gs[1].NS, gs[0].MAC), s.Hear(gs[2].NS, gs[0].MAC)}
		s.tryIn(gs[0].NS, "busybox", "arping", "-c", "2", "-w", "2", "-I", "eth0", "10.60.0.77")
		if a, out := gs[0].DHCP(); a != addrs["alpha"] {
			t.Errorf("alpha's second DHCP exchange: got %q, want %s\n%s", a, addrs["alpha"], out)
		}
		ok := true
		for i, e := range ears {
			got := e.Stop()
			arp := slices.Contains(got, "arp who-has 10.60.0.77 tell "+addrs["alpha"])
			dhcp := slices.ContainsFunc(got, func(f string) bool { return strings.HasSuffix(f, ":67") || strings.HasSuffix(f, ":68") })
			t.Logf("%s heard from alpha: %v", gs[i+1].Name, got)
			ok = ok && arp && !dhcp
		}
		return ok
	}})
	s.matrix("check | want | got", rows)

	for _, h := range s.Hosts {
		s.checkFDBFromEVPN(h, gs)
	}
}

// checkFDBFromEVPN checks that h's VXLAN device learned nothing: every
// remote MAC in its FDB is an ext-learned bridge entry plus a static
// device entry whose VTEP is an EVPN route's (`guestnet bgp -o json`), the
// flood list is the other hosts, and each guest of another host is there.
func (s *stretchLab) checkFDBFromEVPN(h *stretchHost, gs []*stretchGuest) {
	t := s.t
	t.Helper()
	routes := h.EVPNRoutes()
	var table []string
	for _, e := range h.FDB(stretchVX) {
		switch {
		case e.MAC == "00:00:00:00:00:00":
			if !slices.Contains([]string{"10.10.0.1", "10.10.0.2", "10.10.0.3"}, e.Dst) || e.Dst == h.Addr {
				t.Errorf("h%d floods to %s: not another host", h.N, e.Dst)
			}
		case e.Master != "" && e.State == "permanent":
			// the device's own address in its bridge
		case e.Master != "":
			if !e.has("extern_learn") {
				t.Errorf("h%d: bridge entry %s on %s is not extern_learn: learned from traffic", h.N, e, stretchVX)
			}
			if !routes.hasMAC(e.MAC) {
				t.Errorf("h%d: bridge entry %s on %s: no EVPN route names that MAC", h.N, e, stretchVX)
			}
		default:
			if e.State == "" {
				t.Errorf("h%d: %s has a learned (dynamic) entry %s", h.N, stretchVX, e)
			}
			if !routes.has(e.MAC, e.Dst) {
				t.Errorf("h%d: %s entry %s: no EVPN route for that MAC from VTEP %s\nroutes: %v", h.N, stretchVX, e, e.Dst, routes)
			}
		}
		table = append(table, "| "+e.String()+" |")
	}
	for _, g := range gs {
		if g.Host == h {
			continue
		}
		found := false
		for _, e := range h.FDB(stretchVX) {
			found = found || (strings.EqualFold(e.MAC, g.MAC) && e.Dst == g.Host.Addr)
		}
		if !found {
			t.Errorf("h%d: no %s entry for %s (%s) dst %s", h.N, stretchVX, g.Name, g.MAC, g.Host.Addr)
		}
	}
	t.Logf("h%d: bridge fdb show dev %s (every entry checked against `guestnet bgp -o json`: %d EVPN MAC routes)\n%s",
		h.N, stretchVX, len(routes), strings.Join(table, "\n"))
}

// evpnRoute is a type-2 route as `guestnet bgp -o json` shows it.
type evpnRoute struct {
	MAC, VTEP, IP string
	Seq           int
}

type evpnRoutes []evpnRoute

func (rs evpnRoutes) hasMAC(mac string) bool {
	return slices.ContainsFunc(rs, func(r evpnRoute) bool { return strings.EqualFold(r.MAC, mac) })
}

func (rs evpnRoutes) has(mac, vtep string) bool {
	return slices.ContainsFunc(rs, func(r evpnRoute) bool { return strings.EqualFold(r.MAC, mac) && r.VTEP == vtep })
}

// best is the winning route for mac (highest Seq, then lowest VTEP).
func (rs evpnRoutes) best(mac string) (evpnRoute, bool) {
	var b evpnRoute
	found := false
	for _, r := range rs {
		if !strings.EqualFold(r.MAC, mac) {
			continue
		}
		if !found || r.Seq > b.Seq || (r.Seq == b.Seq && netip.MustParseAddr(r.VTEP).Less(netip.MustParseAddr(b.VTEP))) {
			b, found = r, true
		}
	}
	return b, found
}

// EVPNRoutes is every type-2 route of another VTEP in `guestnet bgp -o
// json` on h: each object of the document with a mac and a vtep, wherever
// the view puts it (remote received and local announced; local ones,
// vtep = h, are left out).
func (h *stretchHost) EVPNRoutes() evpnRoutes {
	h.s.t.Helper()
	out := h.Guestnet("-o", "json", "bgp")
	var doc any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		h.s.t.Fatalf("h%d bgp -o json: %v\n%s", h.N, err, out)
	}
	var rs evpnRoutes
	walkJSON(doc, func(m map[string]any) {
		mac, ok1 := m["mac"].(string)
		vtep, ok2 := m["vtep"].(string)
		if !ok1 || !ok2 || vtep == h.Addr {
			return
		}
		r := evpnRoute{MAC: strings.ToLower(mac), VTEP: vtep}
		r.IP, _ = m["ip"].(string)
		if f, ok := m["seq"].(float64); ok {
			r.Seq = int(f)
		}
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	})
	return rs
}

// walkJSON calls f on every object in v, depth first.
func walkJSON(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, c := range x {
			walkJSON(c, f)
		}
	case []any:
		for _, c := range x {
			walkJSON(c, f)
		}
	}
}

// grantedBy reports whether h's serve log says it granted (or renewed) a
// lease to mac.
func grantedBy(h *stretchHost, mac string) bool {
	for _, line := range strings.Split(h.Log(), "\n") {
		if strings.Contains(line, "dhcp lease") && strings.Contains(strings.ToLower(line), mac) &&
			(strings.Contains(line, "granted") || strings.Contains(line, "renewed")) {
			return true
		}
	}
	return false
}

// countGrants is how many grant or renew lines h's log has for mac.
func countGrants(h *stretchHost, mac string) int {
	n := 0
	for _, line := range strings.Split(h.Log(), "\n") {
		if strings.Contains(line, "dhcp lease") && strings.Contains(strings.ToLower(line), mac) &&
			(strings.Contains(line, "granted") || strings.Contains(line, "renewed")) {
			n++
		}
	}
	return n
}

// waitLease waits until h lists a bound lease of mac, and returns it.
func waitLease(h *stretchHost, mac string, timeout time.Duration) leaseRow {
	var r leaseRow
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r = h.LeaseOf(mac); r != nil {
			return r
		}
	}
	return nil
}

// routesFor is the routes of rs for mac.
func routesFor(rs evpnRoutes, mac string) evpnRoutes {
	var out evpnRoutes
	for _, r := range rs {
		if strings.EqualFold(r.MAC, mac) {
			out = append(out, r)
		}
	}
	return out
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func distinct(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	return slices.Compact(out)
}

// TestStretch60Clients: 60 DHCP clients (busybox udhcpc, 20 behind each
// host, each on its own bridge port with its own MAC) started at once get
// 60 distinct addresses, and every host lists all 60 leases.
func TestStretch60Clients(t *testing.T) {
	s := newStretchLab(t, stretchOpts{})
	var batches []*clientBatch
	for _, h := range s.Hosts {
		batches = append(batches, s.Clients(h, 20))
	}
	start := time.Now()
	done := make(chan map[string]string, 3)
	for _, b := range batches {
		go func() { done <- b.Run() }()
	}
	all := map[string]string{} // MAC -> address
	for range batches {
		<-done
	}
	took := time.Since(start)
	var rows []string
	for _, b := range batches {
		got := b.Bound()
		for i, mac := range b.MACs {
			if a, ok := got[fmt.Sprintf("e%d", i)]; ok {
				all[mac] = a
			}
		}
		rows = append(rows, fmt.Sprintf("| h%d | 20 | %d |", b.Host.N, len(got)))
	}
	t.Logf("60 udhcpc at once, all done in %v:\n| host | clients | bound |\n|---|---|---|\n%s", took.Round(time.Millisecond), strings.Join(rows, "\n"))
	if len(all) != 60 {
		st, _, _ := s.Run(s.Hosts[0].NS, "status")
		if i := strings.Index(st, "leases in etcd"); i >= 0 {
			st = st[i:] // the blocks each host holds
		}
		t.Errorf("%d of 60 clients got a lease; h1's status:\n%s", len(all), st)
	}
	if d := distinct(values(all)); len(d) != len(all) {
		t.Errorf("%d leases, %d distinct addresses: an address was given twice", len(all), len(d))
	}
	// Visible from every host: each lists each client's lease with the
	// address the client got.
	for _, h := range s.Hosts {
		var missing []string
		waitUntil(t, fmt.Sprintf("h%d lists the 60 leases", h.N), 15*time.Second, func() bool {
			missing = missing[:0]
			listed := map[string]string{}
			for _, r := range h.Leases() {
				if r.str("state") == "bound" {
					listed[strings.ToLower(r.str("mac"))] = r.str("ip")
				}
			}
			for mac, a := range all {
				if listed[mac] != a {
					missing = append(missing, mac+"="+a)
				}
			}
			return len(missing) == 0
		})
		t.Logf("h%d lists all %d leases", h.N, len(all))
	}
}

// TestStretchMove: a guest moves from h3 to h2 as in a live migration (a
// new port on h2 with the same MAC and address, the old port still up on
// h3, one gratuitous ARP): the others reach it within 5 s, h1 sends its
// frames to h2, whose route has a higher mobility sequence number than
// h3's had; the old port's removal and h3's late withdraw change nothing;
// its running DHCP client renews the lease on h2.
func TestStretchMove(t *testing.T) {
	s := newStretchLab(t, stretchOpts{})
	s.WaitOverlay()
	h1, h2, h3 := s.Hosts[0], s.Hosts[1], s.Hosts[2]
	g1, g2, g3 := s.Guest(h1, "alpha"), s.Guest(h2, "bravo"), s.Guest(h3, "mover")
	g1.MustDHCP()
	g2.MustDHCP()
	a3 := g3.RunClient()
	if !s.Ping(g1.NS, a3) {
		t.Fatalf("before the move: alpha cannot ping mover %s", a3)
	}
	var before evpnRoute
	waitUntil(t, "h1 has mover's EVPN route from h3", 10*time.Second, func() bool {
		r, ok := h1.EVPNRoutes().best(g3.MAC)
		before = r
		return ok && r.VTEP == h3.Addr
	})
	grantsH3 := countGrants(h3, g3.MAC)

	done := g3.Migrate(h2, a3)
	s.In(g3.NS, "busybox", "arping", "-U", "-c", "1", "-I", "eth1", a3)
	took := waitUntil(t, "alpha (h1) pings mover on h2", 5*time.Second, func() bool { return s.Ping(g1.NS, a3) })
	t.Logf("migrated h3 -> h2: alpha (h1) reaches mover %v after its gratuitous ARP (the old port still up on h3)", took.Round(time.Millisecond))
	if !s.Ping(g2.NS, a3) {
		t.Errorf("bravo (h2, now the same host) cannot ping mover")
	}
	var after evpnRoute
	waitUntil(t, "h1's best route for mover is h2's with a higher Seq", 5*time.Second, func() bool {
		r, ok := h1.EVPNRoutes().best(g3.MAC)
		after = r
		return ok && r.VTEP == h2.Addr && r.Seq > before.Seq
	})
	t.Logf("h1's best route for mover: VTEP %s seq %d (was %s seq %d); h1's routes for it: %v",
		after.VTEP, after.Seq, before.VTEP, before.Seq, routesFor(h1.EVPNRoutes(), g3.MAC))
	// The source QEMU quits: the old port goes, and with it h3's entry;
	// its withdraw (if h3 still announced it) arrives whenever it does.
	// h1's entries keep pointing to h2 and traffic keeps flowing.
	done()
	time.Sleep(3 * time.Second)
	for _, e := range h1.FDB(stretchVX) {
		if strings.EqualFold(e.MAC, g3.MAC) && e.Dst != "" && e.Dst != h2.Addr {
			t.Errorf("h1 after the old port is gone: %s", e)
		}
	}
	if !s.Ping(g1.NS, a3) {
		t.Errorf("3 s after the old port went, alpha no longer reaches mover")
	}
	if rs := routesFor(h1.EVPNRoutes(), g3.MAC); len(rs) == 0 || slices.ContainsFunc(rs, func(r evpnRoute) bool { return r.VTEP != h2.Addr }) {
		t.Errorf("h1's routes for mover once h3's port is gone: %v, want h2's only", rs)
	}
	s.checkFDBFromEVPN(h1, []*stretchGuest{g2, g3})

	// The lease renews on the new host, with the same address.
	ev := g3.Renew(10 * time.Second)
	if f := strings.Fields(ev); len(f) < 2 || f[1] != a3 {
		t.Errorf("mover's renewal on h2: hook saw %q, want renew %s\nevents: %v", ev, a3, g3.Events())
	} else {
		t.Logf("mover renewed on h2: %s", ev)
	}
	if !grantedBy(h2, g3.MAC) {
		t.Errorf("h2's log shows no lease granted or renewed for mover (%s)", g3.MAC)
	}
	if n := countGrants(h3, g3.MAC); n != grantsH3 {
		t.Errorf("h3 (the old host) answered mover's renewal")
	}
	for _, h := range s.Hosts {
		if r := waitLease(h, g3.MAC, 5*time.Second); r == nil || r.str("ip") != a3 {
			t.Errorf("h%d lists mover's lease as %v, want %s", h.N, r, a3)
		}
	}
}

// TestStretchHostKilled: h3's serve killed (SIGKILL): h1 and h2 keep
// serving new guests, still list h3's guests' leases, and give none of
// their addresses away while they run: a new client asking for one of them
// gets another address.
func TestStretchHostKilled(t *testing.T) {
	s := newStretchLab(t, stretchOpts{})
	h1, h2, h3 := s.Hosts[0], s.Hosts[1], s.Hosts[2]
	dead := s.Clients(h3, 4)
	deadAddrs := values(dead.Run())
	if len(deadAddrs) != 4 {
		t.Fatalf("4 clients on h3: %d bound", len(deadAddrs))
	}
	g3 := s.Guest(h3, "victim")
	a3 := g3.MustDHCP()
	deadAddrs = append(deadAddrs, a3)
	h3.Kill()
	t.Logf("h3 killed; its guests hold %v", deadAddrs)

	for _, h := range []*stretchHost{h1, h2} {
		for _, mac := range append(slices.Clone(dead.MACs), g3.MAC) {
			if r := h.LeaseOf(mac); r == nil {
				t.Errorf("h%d no longer lists the lease of %s (a guest of the dead h3)", h.N, mac)
			}
		}
	}
	// A new client asks h1 for the victim's address: it gets another one.
	thief := s.Guest(h1, "thief")
	got, out := thief.DHCP("-r", a3)
	switch {
	case got == "":
		t.Errorf("h1 gave the client asking for %s no lease at all:\n%s", a3, out)
	case got == a3:
		t.Errorf("h1 gave %s, the address of the dead host's live lease, to another client", a3)
	default:
		t.Logf("a client on h1 asked for %s (h3's guest, lease running): got %s", a3, got)
	}
	// More new clients on both survivors: all served, none with an
	// address of h3's guests.
	var fresh []string
	for _, h := range []*stretchHost{h1, h2} {
		b := s.Clients(h, 8)
		bound := b.Run()
		if len(bound) != 8 {
			t.Errorf("h%d: %d of 8 new clients bound after h3 died", h.N, len(bound))
		}
		fresh = append(fresh, values(bound)...)
	}
	for _, a := range fresh {
		if slices.Contains(deadAddrs, a) {
			t.Errorf("address %s of a dead host's live lease was given to a new client", a)
		}
	}
	if d := distinct(append(slices.Clone(fresh), got)); len(d) != len(fresh)+1 {
		t.Errorf("new clients' addresses are not distinct: %v", fresh)
	}
	t.Logf("after h3 died: %d new clients on h1 and h2 got %v, none of h3's %v", len(fresh), fresh, deadAddrs)
}

// TestStretchEtcdQuorum: one etcd member of three killed, DHCP goes on;
// two killed, a new client gets no lease (status says why) while a known
// guest's renewal is ACKed with what is left of its lease (not extended:
// nothing can be written); one member back, new leases again.
func TestStretchEtcdQuorum(t *testing.T) {
	s := newStretchLab(t, stretchOpts{Lease: "10m"})
	h1 := s.Hosts[0]
	known := s.Guest(h1, "known")
	ak := known.RunClient()

	s.Etcd[2].Kill()
	g := s.Guest(h1, "one-down")
	start := time.Now()
	if a, out := g.DHCP(); a == "" {
		t.Errorf("one etcd member down: no lease:\n%s", out)
	} else {
		t.Logf("one etcd member of 3 killed: a new client got %s in %v", a, time.Since(start).Round(time.Millisecond))
	}

	s.Etcd[1].Kill()
	time.Sleep(2 * time.Second) // let the daemon's health notice
	refused := s.Guest(h1, "refused")
	if a, _ := refused.DHCP(); a != "" {
		t.Errorf("two etcd members of 3 down: a new client still got %s", a)
	} else {
		t.Logf("two etcd members of 3 killed: a new client got no lease")
	}
	st, _, _ := s.Run(h1.NS, "status")
	stj, _, _ := s.Run(h1.NS, "-o", "json", "status")
	if !strings.Contains(strings.ToLower(st), "quorum") {
		t.Errorf("status does not say etcd lost its quorum:\n%s", st)
	}
	quorum := "absent"
	var doc any
	if json.Unmarshal([]byte(stj), &doc) == nil {
		walkJSON(doc, func(m map[string]any) {
			if q, ok := m["quorum"].(bool); ok {
				quorum = strconv.FormatBool(q)
			}
		})
	}
	if quorum != "false" {
		t.Errorf("status -o json: quorum %s, want false", quorum)
	}
	t.Logf("status with 2 of 3 etcd members down:\n%s", lastLines(st, 12))

	ev := known.Renew(10 * time.Second)
	f := strings.Fields(ev)
	if len(f) < 3 || f[1] != ak {
		t.Errorf("known guest's renewal without quorum: hook saw %q, want renew %s\nevents: %v", ev, ak, known.Events())
	} else if left, _ := strconv.Atoi(f[2]); left <= 0 || left >= 600 {
		t.Errorf("known guest's renewal without quorum: lease time %d s, want the remaining time (0 < t < 600)", left)
	} else {
		t.Logf("known guest renewed %s without quorum: lease time %d s (remaining, not extended to 600)", ak, left)
	}

	s.Etcd[1].Start()
	s.WaitEtcd(2)
	var a string
	waitUntil(t, "a new client leased once a second member is back", 20*time.Second, func() bool {
		a, _ = refused.DHCP()
		return a != ""
	})
	t.Logf("second member back: the refused client got %s", a)
}
