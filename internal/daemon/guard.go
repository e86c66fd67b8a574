package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/state"
)

// Anti-spoofing of leased ports: when guestnet's DHCP server hands a lease
// to a MAC, the bridge's forwarding database says which port that MAC
// sent from, and the daemon binds the port to the MAC and the address (set
// "learned" of table bridge guestnet). The port is in the lease on disk,
// so a restart rebuilds the same bindings; a lease that ends, expires or
// whose port left the bridge loses its binding at the next sync.
//
// A bound MAC belongs to its port: the kernel drops frames from it, and
// DHCP messages naming it, from any other port (sets learned_macs and
// learned_port_macs), and the DHCP handler asks Holders before it lets a
// REQUEST, RELEASE or DECLINE through. A VM that really moved (its old
// port deleted or detached) is told apart by that alone: the port's link
// event makes a sync that drops the old binding, and the VM's next REQUEST
// from its new port binds that one. A port that is still in the bridge
// keeps the MAC even while down (a VM that is off is not a VM that moved);
// a persistent TAP (attach --create) lets its MAC go on detach.

// learnEvery is how often bindings of expired leases are swept.
const learnEvery = 15 * time.Second

// learnView is what the DHCP goroutines need to decide on a binding,
// refreshed at each sync: guarded networks and the ports bound by attach.
type learnView struct {
	guarded  map[string]bool
	infra    map[string]func(port string) bool    // network -> model.Network.Infra
	explicit map[string]map[string]model.PortBind // network -> port -> binding
	owners   map[string][]string                  // MAC -> ports attach bound it to, in guarded networks
	masters  map[string]portLink                  // port name -> its link, as the learned sets were synced
}

// portLink is a link with a master, by its name: its master's name and
// the link's identity, which a lease's port must match to bind it.
type portLink struct {
	bridge string
	id     dhcp.PortID
}

// may reports whether a lease may bind its port: not when attach bound the
// port to addresses, nor to another MAC, nor the lease's MAC to another
// port (the kernel lets a MAC bound by attach out of its ports only).
func (v *learnView) may(network string, l dhcp.Lease) bool {
	if v == nil || !v.guarded[network] || l.Port == "" || (v.infra[network] != nil && v.infra[network](l.Port)) {
		return false // an uplink or VXLAN port carries no guest of this host: never bound
	}
	if ps := v.owners[l.MAC]; len(ps) > 0 && !slices.Contains(ps, l.Port) {
		return false
	}
	b, ok := v.explicit[network][l.Port]
	return !ok || (!slices.ContainsFunc(b.IPs, func(a netip.Addr) bool { return model.FamilyOf(a) == model.IPv4 }) && (b.MAC == "" || b.MAC == l.MAC))
}

// newLearnView gathers what may() needs from the state of the networks.
func newLearnView(nets []model.Network, st map[string]state.Net) *learnView {
	v := &learnView{guarded: map[string]bool{}, explicit: map[string]map[string]model.PortBind{}, owners: map[string][]string{},
		infra: map[string]func(string) bool{}}
	for _, n := range nets {
		v.guarded[n.Name] = n.Guarded()
		v.infra[n.Name] = n.Infra
		v.explicit[n.Name] = st[n.Name].Binds
		if !n.Guarded() {
			continue
		}
		for port, b := range st[n.Name].Binds {
			if b.MAC != "" && slices.Contains(st[n.Name].Ports, port) {
				v.owners[b.MAC] = append(v.owners[b.MAC], port)
			}
		}
	}
	for _, ps := range v.owners {
		slices.Sort(ps)
	}
	return v
}

// holds reports whether a lease still binds its port: not declined nor
// expired, its port still in its network's bridge (master gives the link
// of that name now), and not overruled by attach. The link must be the
// one the lease was bound on (same ifindex and address): libvirt reuses
// vnetN names, and a new VM on a TAP with a dead VM's port name must not
// inherit its binding. A lease that did not record them (older stores)
// binds nothing until its client renews.
func (v *learnView) holds(network, bridge string, l dhcp.Lease, master func(port string) portLink, now time.Time) bool {
	if l.Declined || !l.Expiry.After(now) || !v.may(network, l) || l.PortIndex == 0 {
		return false
	}
	p := master(l.Port)
	return p.bridge == bridge && p.id == l.PortID()
}

// holders are the ports holding mac's binding in a network: the ports
// attach bound it to, or else its lease's port while the lease holds it.
func (v *learnView) holders(network, bridge, mac string, l dhcp.Lease, master func(port string) portLink, now time.Time) []string {
	if v == nil || !v.guarded[network] {
		return nil
	}
	if ps := v.owners[mac]; len(ps) > 0 {
		return ps
	}
	if l.MAC != mac || !v.holds(network, bridge, l, master, now) {
		return nil
	}
	return []string{l.Port}
}

// leaseBinds are the elements of a lease: its address, and 0.0.0.0 for
// DHCP and ARP probes from the same MAC.
func leaseBinds(l dhcp.Lease) []model.Bind {
	return []model.Bind{{Port: l.Port, MAC: l.MAC, IP: l.IP}, {Port: l.Port, MAC: l.MAC, IP: netip.IPv4Unspecified()}}
}

// learner is one network's dhcp.PortBinder.
type learner struct {
	d       *Daemon
	network string
	bridge  string
}

func (l learner) Locate(mac string) dhcp.PortID { return l.d.fdb.port(l.bridge, mac) }

// Holders judges the lease's port by the bridges' ports of the last sync,
// as the kernel's learned sets do: a port's link event makes a sync, so a
// port deleted a moment ago lets its MAC go in both at once, and a
// REQUEST costs no netlink call here.
func (l learner) Holders(mac string, ls dhcp.Lease) []string {
	v := l.d.view.Load()
	if v == nil {
		return nil
	}
	return v.holders(l.network, l.bridge, mac, ls, func(p string) portLink { return v.masters[p] }, time.Now())
}

// Bound binds the lease's port at once, before the ACK leaves, so the
// guest's first packets from its new address pass. The leases granted
// meanwhile are bound in the same transaction (learnBatch). A binding the
// lease replaces (another client's, or this client's on another port or
// address) is the handler's to report with Unbound, which syncs the sets:
// a new guest costs one element write, not a read of every binding.
func (l learner) Bound(ls dhcp.Lease) {
	l.d.evpn.wake() // a guest's address: EVPN announces it with its MAC
	if !l.d.view.Load().may(l.network, ls) {
		return
	}
	if have := l.d.inKernel.Load(); have != nil && (*have)[leaseBinds(ls)[0]] {
		return // a renewal: the binding is there already
	}
	err := l.d.learnQ.add(leaseBinds(ls), func(add model.Elems) error {
		return l.d.Engine.Learn(l.d.ctx, add, model.Elems{})
	})
	if err != nil {
		l.d.Log.Error("anti-spoofing: bind leased port", "network", l.network, "port", ls.Port, "ip", ls.IP, "err", err)
		l.d.kickLearn() // the next sync tries again
	}
}

func (l learner) Unbound(dhcp.Lease) { l.d.kickLearn(); l.d.evpn.wake() }

func (d *Daemon) kickLearn() {
	select {
	case d.learnKick <- struct{}{}:
	default:
	}
}

// learnLoop syncs the learned bindings when a lease ends and every
// learnEvery, for leases that expired.
func (d *Daemon) learnLoop(ctx context.Context) {
	t := time.NewTicker(learnEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.learnKick:
		case <-t.C:
		}
		d.mu.Lock()
		d.syncLearned()
		d.mu.Unlock()
	}
}

// syncLearned makes the learned sets hold exactly the bindings of the
// current leases, and the first-come ports guestnet did not attach
// (guests6.go), in one transaction. The caller holds d.mu.
func (d *Daemon) syncLearned() {
	st, err := d.Engine.State()
	if err != nil {
		d.Log.Error("anti-spoofing", "err", err)
		d.learnErr.set(err)
		return
	}
	d.noteState(st)
	v := newLearnView(d.spec.Models(), st.Networks)
	bridges := map[string]string{}
	for _, n := range d.spec.Networks {
		bridges[n.Name] = n.Bridge
	}
	masters, err := d.fdb.masters()
	if err != nil {
		d.Log.Error("anti-spoofing", "err", err)
		d.learnErr.set(err)
		return
	}
	v.masters = masters
	d.view.Store(v)
	g, err := d.Engine.Kernel.Guard()
	if err != nil || !g.On || g.Broken {
		return // no table (yet): the next repair makes it and syncs again
	}
	leases := map[string][]dhcp.Lease{}
	for name, s := range d.servers {
		leases[name] = s.handler.Pool.Leases()
	}
	want := learnedWant(leases, bridges, masters, v, time.Now())
	add, del := model.DiffElems(g.LearnedElems(), learnedElems(want, d.spec.Models(), masters, g.Guests6))
	if err := d.Engine.Learn(d.ctx, add, del); err != nil {
		d.Log.Error("anti-spoofing: sync leased ports", "err", err)
		d.learnErr.set(fmt.Errorf("sync leased ports: %w", err))
		return
	}
	d.forgetClaims6(g.Claims6, masters)
	have := map[model.Bind]bool{}
	for _, b := range want {
		have[b] = true
	}
	d.inKernel.Store(&have)
	d.learnErr.set(nil)
	if len(add.Binds)+len(del.Binds) > 0 {
		d.Log.Info("anti-spoofing: leased ports", "bindings", len(want), "added", len(add.Binds), "removed", len(del.Binds))
	}
	if len(add.Guests6)+len(del.Guests6) > 0 {
		d.Log.Info("anti-spoofing: IPv6 checks of ports guestnet did not attach", "added", add.Guests6, "removed", del.Guests6)
	}
}

// learnedWant are the bindings of the leases that still hold: not declined
// nor expired, their port's link still in their network's bridge, and not
// overruled by attach.
func learnedWant(leases map[string][]dhcp.Lease, bridges map[string]string, masters map[string]portLink, v *learnView, now time.Time) []model.Bind {
	var want []model.Bind
	for name, ls := range leases {
		for _, l := range ls {
			if v.holds(name, bridges[name], l, func(p string) portLink { return masters[p] }, now) {
				want = append(want, leaseBinds(l)...)
			}
		}
	}
	return model.SortBinds(want)
}

// forgetClaims6 removes the IPv6 claims of ports that left their bridge
// (a VM stopped, its TAP gone), so that a new VM on a reused port name
// (libvirt's vnetN) inherits none, and a neighbour may take the addresses
// at once instead of model.ClaimMemory later. A claim about to lapse is
// left to the kernel: deleting an element that is gone would fail the
// transaction. A failure is only logged: the claims lapse anyway.
func (d *Daemon) forgetClaims6(claims []model.Claim6, masters map[string]portLink) {
	var gone []model.Claim6
	for _, c := range claims {
		if masters[c.Port].bridge == "" && c.Left > 2*time.Second {
			gone = append(gone, c)
		}
	}
	if len(gone) == 0 {
		return
	}
	if err := d.Engine.Learn(d.ctx, model.Elems{}, model.Elems{Claims6: gone}); err != nil {
		d.Log.Warn("anti-spoofing: forget IPv6 claims of departed ports (they lapse by themselves)", "claims", len(gone), "err", err)
		return
	}
	d.Log.Info("anti-spoofing: forgot IPv6 claims of departed ports", "claims", len(gone))
}

// claims6 is the daemon's Binder6 (Daemon.Guard6, unless the caller set
// one): a DHCPv6 lease is a first-come claim of its address by the port
// the client asked from, for the lease's valid lifetime (sets claims6 and
// claimed6; each packet then refreshes it as any claim). A lease of an
// address another port holds claims nothing (the holder keeps it, and the
// newcomer's frames from it are dropped). Failures are logged: the
// guest's first packet claims the address anyway when nobody holds it.
type claims6 struct{ d *Daemon }

func (c claims6) Bound6(network string, l dhcp.Lease6) {
	d := c.d
	left := time.Until(l.Expiry)
	if v := d.view.Load(); v == nil || !v.guarded[network] || l.Port == "" || l.Declined || left <= 0 {
		return
	}
	g, err := d.Engine.Kernel.Guard()
	if err != nil || !g.On || g.Broken {
		return // no table (yet): the repair makes it, and the guest's packets claim
	}
	if holder, by := g.HolderOf(l.IP, l.Port); holder != "" {
		d.Log.Warn("anti-spoofing: DHCPv6 lease of an address another port holds", "network", network, "port", l.Port, "ip", l.IP, "holder", holder, "by", by)
		return
	}
	add := model.Elems{Claims6: []model.Claim6{{Port: l.Port, IP: l.IP, Left: left}}}
	if err := d.Engine.Learn(d.ctx, add, model.Elems{}); err != nil {
		d.Log.Error("anti-spoofing: claim a DHCPv6 lease's address", "network", network, "port", l.Port, "ip", l.IP, "err", err)
	}
}

func (c claims6) Unbound6(network string, l dhcp.Lease6) {
	d := c.d
	if l.Port == "" {
		return
	}
	del := model.Elems{Claims6: []model.Claim6{{Port: l.Port, IP: l.IP}}}
	if err := d.Engine.Learn(d.ctx, model.Elems{}, del); err != nil {
		// The claim may have lapsed already, or never been made.
		d.Log.Debug("anti-spoofing: release a DHCPv6 lease's claim", "network", network, "port", l.Port, "ip", l.IP, "err", err)
	}
}
