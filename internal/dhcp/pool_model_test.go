package dhcp

// A model-based test of the pool and its handler: long random sequences of
// real DHCP messages from many clients, with the clock jumping, each step
// checked against a plain reference model and against the pool's
// invariants. FuzzPool runs the same engine on fuzzer-made sequences.

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/guestnet/guestnet/internal/model"
)

// modelConfig has two ranges (the server's address inside the first), a
// static host inside a range and one outside: six dynamic addresses for
// twelve clients.
func modelConfig() Config {
	return Config{Network: "model", Server: netip.MustParsePrefix("10.96.0.1/24"), DHCP: model.DHCP{
		Ranges: []model.Range{{From: addr("10.96.0.1"), To: addr("10.96.0.5")}, {From: addr("10.96.0.20"), To: addr("10.96.0.22")}},
		Lease:  90 * time.Second,
		Hosts: []model.StaticHost{
			{MAC: mac(0xf1).String(), IP: addr("10.96.0.3"), Name: "static1"},
			{MAC: mac(0xf2).String(), IP: addr("10.96.0.50"), Name: "Fixed"},
		},
	}}
}

// rec is the reference model's record of an address.
type rec struct {
	mac, host string
	exp       time.Time
	declined  bool
	writer    string // the host that wrote it (Lease.Host)
}

type refOffer struct {
	ip    netip.Addr
	until time.Time
}

// ref is the reference model: what the leases must be, decided by plain
// rules written apart from the pool's code.
type ref struct {
	cfg    Config
	recs   map[netip.Addr]rec
	offers map[string]refOffer // by MAC
}

func (r *ref) static(mac string) (model.StaticHost, bool) {
	for _, h := range r.cfg.Hosts {
		if h.MAC == mac {
			return h, true
		}
	}
	return model.StaticHost{}, false
}

// dynamic: an address of a range that is neither the server's nor static.
func (r *ref) dynamic(a netip.Addr) bool {
	in := false
	for _, rg := range r.cfg.Ranges {
		in = in || rg.Contains(a)
	}
	for _, h := range r.cfg.Hosts {
		in = in && h.IP != a
	}
	return in && a != r.cfg.Server.Addr()
}

// allowed decides whether mac may have a now: the address is its to take
// (its static one, or a dynamic one for a client without a static one),
// no one else's live lease or quarantine is on it, no one else's live
// offer holds it.
func (r *ref) allowed(a netip.Addr, mac string, now time.Time) bool {
	if h, ok := r.static(mac); ok {
		if a != h.IP {
			return false
		}
	} else if !r.dynamic(a) {
		return false
	}
	x, ok := r.recs[a]
	if ok && now.Before(x.exp) && (x.declined || x.mac != mac) {
		return false
	}
	if _, static := r.static(mac); !static && !(ok && !x.declined && x.mac == mac) && !r.granted(a) {
		return false // outside the granted blocks, and not the client's own record
	}
	for m, o := range r.offers {
		if m != mac && o.ip == a && now.Before(o.until) {
			return false
		}
	}
	return true
}

// granted: no allocator, or a is in a block it granted.
func (r *ref) granted(a netip.Addr) bool {
	return r.cfg.Blocks == nil || slices.ContainsFunc(r.cfg.Blocks.Blocks(), func(b model.Range) bool { return b.Contains(a) })
}

// candidates is every address a client could ever be given.
func (r *ref) candidates() []netip.Addr {
	var out []netip.Addr
	for _, rg := range r.cfg.Ranges {
		for a := rg.From; rg.Contains(a); a = a.Next() {
			out = append(out, a)
		}
	}
	for _, h := range r.cfg.Hosts {
		out = append(out, h.IP)
	}
	return out
}

// reclaimable reports whether a new offer of a to mac may be a reclaim
// (Pool.Reclaim): no address is allowed for mac, and a is the abandoned
// address abandoned longest ago, at least ReclaimAfter ago.
func (r *ref) reclaimable(a netip.Addr, mac string, now time.Time) bool {
	if _, ok := r.static(mac); ok {
		return false
	}
	for _, b := range r.candidates() {
		if r.allowed(b, mac, now) {
			return false
		}
	}
	ok := func(b netip.Addr) bool {
		x, has := r.recs[b]
		if !has || !x.declined || x.mac != "" || !now.Before(x.exp) || !r.dynamic(b) || !r.granted(b) || now.Sub(x.exp.Add(-Quarantine)) < ReclaimAfter {
			return false
		}
		for _, o := range r.offers {
			if o.ip == b && now.Before(o.until) {
				return false
			}
		}
		return true
	}
	if !ok(a) {
		return false
	}
	for b := range r.recs {
		if ok(b) && (r.recs[b].exp.Before(r.recs[a].exp) || r.recs[b].exp.Equal(r.recs[a].exp) && b.Less(a)) {
			return false
		}
	}
	return true
}

func (r *ref) dropOffersAt(a netip.Addr) {
	for m, o := range r.offers {
		if o.ip == a {
			delete(r.offers, m)
		}
	}
}

// nameTaken: another client's live lease or a static host of another MAC
// holds the name.
func (r *ref) nameTaken(name, mac string, now time.Time) bool {
	for _, h := range r.cfg.Hosts {
		if h.MAC != mac && strings.EqualFold(h.Name, name) {
			return true
		}
	}
	for _, x := range r.recs {
		if !x.declined && x.mac != mac && now.Before(x.exp) && strings.EqualFold(x.host, name) {
			return true
		}
	}
	return false
}

// bind is an ACKed REQUEST.
func (r *ref) bind(mac string, a netip.Addr, host string, now time.Time) {
	if x, ok := r.recs[a]; host == "" && ok && x.mac == mac && !x.declined {
		host = x.host // a renewal without a name keeps its name
	}
	if host != "" && r.nameTaken(host, mac, now) {
		host = ""
	}
	for b, x := range r.recs {
		if b != a && x.mac == mac && !x.declined {
			delete(r.recs, b) // one address per client: the old one ends
		}
	}
	r.recs[a] = rec{mac: mac, host: host, exp: now.Add(r.cfg.Lease), writer: r.cfg.Host}
	delete(r.offers, mac)
	r.dropOffersAt(a)
}

// sim drives a Handler (and its Pool) with real DHCP messages and checks
// each step.
type sim struct {
	t       testing.TB
	cfg     Config
	clk     *clock
	st      *memStore
	h       *Handler
	ref     *ref
	clients []net.HardwareAddr
	acked   map[string]netip.Addr // what each client believes it holds
	offered map[string]netip.Addr // the last offer each client saw
	steps   int
	acks    int
	naks    int
	restart int
	// storeFails counts REQUESTs the model would ACK but the store refused.
	storeFails int
	remotes    int // remote updates (pool_blocks_test.go)
}

func newSim(t testing.TB) *sim { return newSimWith(t, modelConfig()) }

func newSimWith(t testing.TB, cfg Config) *sim {
	s := &sim{t: t, cfg: cfg, clk: &clock{time.Unix(1e9, 0)}, st: &memStore{leases: map[netip.Addr]Lease{}},
		acked: map[string]netip.Addr{}, offered: map[string]netip.Addr{}}
	s.ref = &ref{cfg: cfg, recs: map[netip.Addr]rec{}, offers: map[string]refOffer{}}
	s.h = &Handler{Pool: NewPool(cfg, s.clk.now, nil), Store: s.st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for i := byte(1); i <= 12; i++ {
		s.clients = append(s.clients, mac(i))
	}
	s.clients = append(s.clients, mac(0xf1), mac(0xf2))
	return s
}

var hostnames = []string{"", "", "alpha", "Alpha", "bravo", "static1", "FIXED", "charlie"}

// step runs one operation chosen by the numbers next returns.
func (s *sim) step(next func(n int) int) {
	s.steps++
	hw := s.clients[next(len(s.clients))]
	m := hw.String()
	now := s.clk.t
	cands := append(s.ref.candidates(), addr("10.96.0.200"), addr("10.97.0.2"))
	anyAddr := func() netip.Addr { return cands[next(len(cands))] }
	var what string
	ops := 16
	if s.cfg.Blocks != nil {
		ops = 18 // and what other hosts write (remote.go)
	}
	switch op := next(ops); op {
	case 0, 1, 2: // DISCOVER, sometimes asking for an address
		var mods []dhcpv4.Modifier
		if next(3) == 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(anyAddr()))))
		}
		what = "DISCOVER " + m
		s.discover(hw, mods)
	case 3, 4, 5: // REQUEST after its offer (SELECTING)
		a, ok := s.offered[m]
		if !ok {
			a = anyAddr()
		}
		what = fmt.Sprintf("REQUEST(selecting) %s %s", m, a)
		s.request(hw, a, hostnames[next(len(hostnames))], false)
	case 6, 7: // renewal of what it believes it holds
		a, ok := s.acked[m]
		if !ok {
			a = anyAddr()
		}
		what = fmt.Sprintf("REQUEST(renew) %s %s", m, a)
		s.request(hw, a, hostnames[next(len(hostnames))], true)
	case 8: // INIT-REBOOT for any address, perhaps another client's
		a := anyAddr()
		what = fmt.Sprintf("REQUEST(other) %s %s", m, a)
		s.request(hw, a, hostnames[next(len(hostnames))], false)
	case 9: // RELEASE of its own address or any
		a, ok := s.acked[m]
		if !ok || next(3) == 0 {
			a = anyAddr()
		}
		what = fmt.Sprintf("RELEASE %s %s", m, a)
		s.release(hw, a)
	case 10: // DECLINE of its own address or offer, or a stranger's
		a, ok := s.acked[m]
		if o, has := s.offered[m]; has && (!ok || next(2) == 0) {
			a, ok = o, true
		}
		if !ok || next(2) == 0 {
			a = anyAddr()
		}
		what = fmt.Sprintf("DECLINE %s %s", m, a)
		s.decline(hw, a)
	case 11: // INFORM: answered when ciaddr is on the subnet, nothing changes
		ci := anyAddr()
		what = "INFORM " + m + " " + ci.String()
		inf, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(ip4(ci)))
		r := s.h.Handle(inf)
		if onLink := s.h.Pool.cfg.Server.Masked().Contains(ci); onLink != (r != nil && r.MessageType() == dhcpv4.MessageTypeAck) {
			s.t.Fatalf("step %d: INFORM from %s (on the subnet: %v) answered %v", s.steps, ci, onLink, r)
		}
	case 12: // an ARP probe found an unknown host on an address
		a := anyAddr()
		what = "ABANDON " + a.String()
		l, ok := s.h.Pool.Abandon(a)
		x, held := s.ref.recs[a]
		want := s.ref.dynamic(a) && !(held && !x.declined && now.Before(x.exp))
		if ok != want {
			s.t.Fatalf("step %d: Abandon(%s) = %v, model says %v", s.steps, a, ok, want)
		}
		if ok {
			s.st.Put("model", l) // as the prober does
			s.ref.recs[a] = rec{exp: now.Add(Quarantine), declined: true, writer: s.ref.cfg.Host}
			s.ref.dropOffersAt(a)
		}
	case 13: // time passes: a little, or past offer hold, lease or quarantine
		d := []time.Duration{time.Second, 7 * time.Second, 20 * time.Second, OfferHold + time.Second,
			s.ref.cfg.Lease + time.Second, Quarantine + time.Second}[next(6)]
		what = "clock +" + d.String()
		s.clk.t = s.clk.t.Add(d)
	case 14: // the clock creeps across an expiry boundary exactly
		d := []time.Duration{0, time.Nanosecond, 30 * time.Second}[next(3)]
		what = "clock +" + d.String()
		s.clk.t = s.clk.t.Add(d)
	case 15: // restart: a new pool from the stored leases, offers forgotten
		if next(4) != 0 { // a REQUEST whose lease the store refuses: no reply, no change
			a, ok := s.offered[m]
			if !ok {
				a = anyAddr()
			}
			what = fmt.Sprintf("REQUEST(store fails) %s %s", m, a)
			s.st.fail = true
			s.request(hw, a, hostnames[next(len(hostnames))], false)
			s.st.fail = false
			break
		}
		what = "restart"
		s.restart++
		leases, _ := s.st.Load("model")
		s.h = &Handler{Pool: NewPool(s.cfg, s.clk.now, leases), Store: s.st, Log: s.h.Log}
		s.ref.offers = map[string]refOffer{}
	case 16: // another host wrote a lease (the cluster's watch)
		what = s.remotePut(next)
	case 17: // another host removed a record
		a := anyAddr()
		what = "remote forget " + a.String()
		s.remotes++
		s.h.Pool.Forget(a)
		s.st.Delete("model", a)
		delete(s.ref.recs, a)
	}
	s.check(what)
}

func (s *sim) discover(hw net.HardwareAddr, mods []dhcpv4.Modifier) {
	m, now := hw.String(), s.clk.t
	r := s.h.Handle(discover(s.t, hw, mods...))
	if r == nil {
		for _, a := range s.ref.candidates() {
			if s.ref.allowed(a, m, now) {
				s.t.Fatalf("step %d: DISCOVER from %s unanswered, but %s is free for it", s.steps, m, a)
			}
		}
		return
	}
	a := addrOf(r.YourIPAddr)
	if r.MessageType() == dhcpv4.MessageTypeOffer && !s.ref.allowed(a, m, now) && s.ref.reclaimable(a, m, now) {
		delete(s.ref.recs, a) // the pool ran dry: the oldest abandoned address is reclaimed
	}
	if r.MessageType() != dhcpv4.MessageTypeOffer || !s.ref.allowed(a, m, now) {
		s.t.Fatalf("step %d: %s offered %s (%s), which the model forbids", s.steps, m, a, r.MessageType())
	}
	for b, x := range s.ref.recs {
		if x.mac == m && !x.declined && b != a && s.ref.allowed(b, m, now) {
			s.t.Fatalf("step %d: %s offered %s, not its own address %s", s.steps, m, a, b)
		}
	}
	delete(s.ref.offers, m)
	s.ref.dropOffersAt(a)
	s.ref.offers[m] = refOffer{a, now.Add(OfferHold)}
	s.offered[m] = a
}

func (s *sim) request(hw net.HardwareAddr, a netip.Addr, host string, renew bool) {
	m, now := hw.String(), s.clk.t
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}
	if renew {
		mods = append(mods, dhcpv4.WithClientIP(ip4(a)))
	} else {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a))))
	}
	if host != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(host)))
	}
	req := discover(s.t, hw, mods...)
	if renew {
		req.Options.Del(dhcpv4.OptionRequestedIPAddress)
	}
	r := s.h.Handle(req)
	want := s.ref.allowed(a, m, now) && s.ref.cfg.Server.Masked().Contains(a)
	if want && s.st.fail {
		if r != nil {
			s.t.Fatalf("step %d: REQUEST %s by %s answered %v while the store fails", s.steps, a, m, r)
		}
		s.storeFails++
		return
	}
	got := r != nil && r.MessageType() == dhcpv4.MessageTypeAck
	if r == nil || got != want || !got && r.MessageType() != dhcpv4.MessageTypeNak {
		s.t.Fatalf("step %d: REQUEST %s by %s answered %v, model wants ACK=%v", s.steps, a, m, r, want)
	}
	if got {
		s.acks++
		s.ref.bind(m, a, host, now)
		s.acked[m] = a
		delete(s.offered, m)
	} else {
		s.naks++
	}
}

func (s *sim) release(hw net.HardwareAddr, a netip.Addr) {
	m := hw.String()
	rel := discover(s.t, hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip4(a)))
	if r := s.h.Handle(rel); r != nil {
		s.t.Fatalf("step %d: RELEASE answered", s.steps)
	}
	if x, ok := s.ref.recs[a]; ok && x.mac == m && !x.declined {
		delete(s.ref.recs, a)
	}
}

func (s *sim) decline(hw net.HardwareAddr, a netip.Addr) {
	m, now := hw.String(), s.clk.t
	dec := discover(s.t, hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(a))))
	if r := s.h.Handle(dec); r != nil {
		s.t.Fatalf("step %d: DECLINE answered", s.steps)
	}
	x, leased := s.ref.recs[a]
	o, offered := s.ref.offers[m]
	if leased && !x.declined && x.mac == m && now.Before(x.exp) || offered && o.ip == a && now.Before(o.until) {
		s.ref.recs[a] = rec{mac: m, exp: now.Add(Quarantine), declined: true, writer: s.ref.cfg.Host}
		s.ref.dropOffersAt(a)
	}
}

// check compares the pool, the store and the model, and the invariants.
func (s *sim) check(what string) {
	s.t.Helper()
	p := s.h.Pool
	now := s.clk.t
	if err := p.check(); err != nil {
		s.t.Fatalf("step %d (%s): invariant broken: %v\n%s", s.steps, what, err, s.dump())
	}
	got := p.Leases()
	stored, _ := s.st.Load("model")
	slices.SortFunc(stored, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	if !slices.Equal(got, stored) {
		s.t.Fatalf("step %d (%s): store and pool differ\npool:  %v\nstore: %v", s.steps, what, got, stored)
	}
	var want []Lease
	for a, x := range s.ref.recs {
		want = append(want, Lease{MAC: x.mac, IP: a, Hostname: x.host, Expiry: x.exp, Declined: x.declined, Host: x.writer})
	}
	slices.SortFunc(want, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	if !slices.Equal(got, want) {
		s.t.Fatalf("step %d (%s): pool and model differ\npool:  %v\nmodel: %v", s.steps, what, got, want)
	}
	free := 0
	for _, rg := range s.ref.cfg.Ranges {
		for a := rg.From; rg.Contains(a); a = a.Next() {
			if s.ref.allowed(a, "new", now) {
				free++
			}
		}
	}
	if p.Free() != free {
		s.t.Fatalf("step %d (%s): Free() = %d, model counts %d", s.steps, what, p.Free(), free)
	}
}

func (s *sim) dump() string {
	var b bytes.Buffer
	for _, l := range s.h.Pool.Leases() {
		fmt.Fprintf(&b, "  %v\n", l)
	}
	return b.String()
}

// check verifies the pool's invariants (see Pool).
func (p *Pool) check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	names := map[string]string{}
	for a, l := range p.byIP {
		if l.IP != a {
			return fmt.Errorf("record of %s says %s", a, l.IP)
		}
		if l.Declined {
			continue
		}
		if p.byMAC[l.MAC] != a {
			return fmt.Errorf("%s holds %s but byMAC says %s", l.MAC, a, p.byMAC[l.MAC])
		}
		if h, ok := p.static[l.MAC]; ok && a != h.IP || !ok && !p.dynamic(a) {
			return fmt.Errorf("%s holds %s, not an address of its", l.MAC, a)
		}
		if !l.live(now) || l.Hostname == "" {
			continue
		}
		k := strings.ToLower(l.Hostname)
		if other, dup := names[k]; dup {
			return fmt.Errorf("name %q on two live leases: %s and %s", l.Hostname, other, l.MAC)
		}
		if p.staticName(l.Hostname, l.MAC) {
			return fmt.Errorf("%s holds static host name %q", l.MAC, l.Hostname)
		}
		names[k] = l.MAC
	}
	indexed := 0
	for k, as := range p.byName {
		for _, a := range as {
			if l, ok := p.byIP[a]; !ok || strings.ToLower(l.Hostname) != k {
				return fmt.Errorf("byName %q -> %s, but the record there is %+v", k, a, l)
			}
			indexed++
		}
	}
	for _, l := range p.byIP {
		if l.Hostname != "" {
			indexed--
		}
	}
	if indexed != 0 {
		return fmt.Errorf("byName indexes %d records more than carry a name", indexed)
	}
	for m, a := range p.byMAC {
		if l, ok := p.byIP[a]; !ok || l.MAC != m || l.Declined {
			return fmt.Errorf("byMAC %s -> %s, but the record there is %+v", m, a, l)
		}
	}
	for m, o := range p.offers {
		if p.held[o.ip] != m {
			return fmt.Errorf("offer of %s to %s not in held (%q)", o.ip, m, p.held[o.ip])
		}
		if l, ok := p.byIP[o.ip]; ok && now.Before(o.until) && l.live(now) && (l.Declined || l.MAC != m) {
			return fmt.Errorf("%s is offered to %s and held by %+v", o.ip, m, l)
		}
	}
	for a, m := range p.held {
		if p.offers[m].ip != a {
			return fmt.Errorf("held %s -> %s, but its offer is %s", a, m, p.offers[m].ip)
		}
	}
	return p.checkPortIndex()
}

// checkPortIndex verifies that portRecs and portOffers index exactly the
// records and offers, by their port (the per-port cap reads only them).
func (p *Pool) checkPortIndex() error {
	recs, offers := 0, 0
	for port, as := range p.portRecs {
		if len(as) == 0 {
			return fmt.Errorf("portRecs keeps an empty entry for port %q", port)
		}
		for a := range as {
			if l, ok := p.byIP[a]; !ok || l.Port != port {
				return fmt.Errorf("portRecs %q -> %s, but the record there is %+v", port, a, l)
			}
			recs++
		}
	}
	for port, ms := range p.portOffers {
		if len(ms) == 0 {
			return fmt.Errorf("portOffers keeps an empty entry for port %q", port)
		}
		for m := range ms {
			if o, ok := p.offers[m]; !ok || o.port != port {
				return fmt.Errorf("portOffers %q -> %s, but its offer is %+v", port, m, o)
			}
			offers++
		}
	}
	if recs != len(p.byIP) || offers != len(p.offers) {
		return fmt.Errorf("port index holds %d records and %d offers, the pool %d and %d", recs, offers, len(p.byIP), len(p.offers))
	}
	return nil
}

func TestPoolModel(t *testing.T) {
	steps, seeds := 5000, 8
	if testing.Short() {
		steps, seeds = 1500, 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
			s := newSim(t)
			for range steps {
				s.step(rng.IntN)
			}
			t.Logf("%d steps: %d ACK, %d NAK, %d refused by the store, %d restarts, %d records at the end",
				s.steps, s.acks, s.naks, s.storeFails, s.restart, len(s.h.Pool.Leases()))
			if s.acks < steps/50 || s.naks == 0 || s.restart == 0 || s.storeFails == 0 {
				t.Errorf("the sequence did not exercise the pool: %d ACK, %d NAK, %d restarts", s.acks, s.naks, s.restart)
			}
		})
	}
}

// FuzzPool runs fuzzer-made sequences (one byte per choice) through the
// same engine: the model and the invariants must hold.
func FuzzPool(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 4, 0, 1, 6, 5, 1, 3, 13, 4, 0, 0, 12, 2, 4, 10})
	f.Add(bytes.Repeat([]byte{7, 0, 0, 7, 3, 2, 1, 13, 4}, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		// At most ~300 steps an input: a long input is slow (every step
		// checks the whole pool), and one still running when -fuzztime ends
		// fails the run with "context deadline exceeded". Long histories are
		// TestPoolModel's job.
		if len(b) > 1024 {
			b = b[:1024]
		}
		s := newSim(t)
		i := 0
		next := func(n int) int {
			if i >= len(b) {
				return 0
			}
			v := int(b[i]) % n
			i++
			return v
		}
		for i < len(b) {
			s.step(next)
		}
	})
}
