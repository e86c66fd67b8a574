package doctor

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/guestnet/guestnet/internal/model"
)

// checkEtcdQuorum reads the lease cluster as the daemon sees it
// (Input.Cluster) for the stretched networks that serve DHCP, whose leases
// live in etcd. Without quorum no write succeeds: the daemon refuses new
// leases, and ACKs the renewals of leases it knows with their remaining
// time (nothing written, so nothing extended). A member down while quorum
// holds is a warning: one more loss stops new leases.
func checkEtcdQuorum(in Input) []Finding {
	var nets []model.Network
	for _, n := range in.stretched() {
		if n.DHCP != nil {
			nets = append(nets, n)
		}
	}
	if len(nets) == 0 {
		return nil
	}
	names := make([]string, len(nets))
	for i, n := range nets {
		names[i] = n.Name
	}
	which := strings.Join(names, ", ")
	network := ""
	if len(nets) == 1 {
		network = nets[0].Name
	}
	out := func(f Finding) []Finding {
		f.Network = network
		return []Finding{f}
	}
	c := in.Cluster
	if c == nil {
		f := Finding{Severity: Warning,
			What:     "doctor could not ask guestnet serve about the lease cluster (etcd) of " + which + ": whether new leases can be given is unknown",
			Evidence: []string{"GET /v1/leases/cluster: " + in.ClusterErr},
			Fix:      "guestnet status shows the daemon's view of etcd; etcdctl endpoint health --cluster asks etcd itself"}
		if !in.Diag.Daemon {
			f.Severity = Info // no daemon is the dhcp check's error
			f.What = "guestnet serve is not running: doctor could not ask it about the lease cluster (etcd) of " + which
			f.Evidence = []string{"no daemon answers on the API socket"}
			f.Fix = "start guestnet serve (it keeps the leases of stretched networks in etcd), then run doctor again; etcdctl endpoint health --cluster asks etcd itself"
		}
		return out(f)
	}
	h := c.Etcd
	ev := []string{"endpoints: " + strings.Join(h.Endpoints, ", "), "answered: " + answered(h)}
	if h.Error != "" {
		ev = append(ev, "error: "+text(h.Error))
	}
	if !h.Checked.IsZero() {
		ev = append(ev, "checked "+h.Checked.UTC().Format(time.RFC3339))
	}
	if !h.Quorum {
		return out(Finding{Severity: Error,
			What: fmt.Sprintf("the lease cluster (etcd) has no quorum (answered: %s): no new leases on %s, a guest without a lease gets no address; "+
				"renewals of leases this host knows are acknowledged with their remaining time, not extended, so guests keep their addresses until those expire",
				answered(h), which),
			Evidence: ev,
			Fix: "bring the etcd members back: a majority of the cluster's members must run and reach each other (etcdctl endpoint status --cluster; journalctl -u etcd on each member); " +
				"check that this host reaches them (" + strings.Join(h.Endpoints, ", ") + "); new leases resume by themselves once quorum is back"})
	}
	if h.Error != "" {
		// Quorum, but the daemon says why it gives no new lease: another
		// running guestnet holds this host's name in etcd.
		return out(Finding{Severity: Error,
			What:     fmt.Sprintf("the lease cluster (etcd) answers, but this host gives no new lease on %s: %s", which, text(h.Error)),
			Evidence: ev,
			Fix:      "give each host its own leases.host (or router ID / vxlan.local); etcdctl get --prefix " + model.LeasePrefix + "host/ lists the names in use"})
	}
	var down []string
	for _, e := range h.Endpoints {
		if !slices.Contains(h.Reachable, e) {
			down = append(down, e)
		}
	}
	if len(h.Reachable) == 0 || len(down) == 0 {
		return nil // quorum, and every endpoint answered (or the daemon does not say which)
	}
	return out(Finding{Severity: Warning,
		What: fmt.Sprintf("etcd endpoint(s) %s do not answer; the lease cluster still has quorum, but losing more members stops new leases on %s",
			strings.Join(down, ", "), which),
		Evidence: ev,
		Fix:      "bring the member(s) back (etcdctl endpoint health --endpoints " + strings.Join(down, ",") + "; journalctl -u etcd on that host)"})
}

// answered lists the endpoints that answered, or says none did.
func answered(h model.EtcdHealth) string {
	if len(h.Reachable) == 0 {
		return fmt.Sprintf("none of %d", len(h.Endpoints))
	}
	return fmt.Sprintf("%s (%d of %d)", strings.Join(h.Reachable, ", "), len(h.Reachable), len(h.Endpoints))
}
