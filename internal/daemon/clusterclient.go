package daemon

import (
	"net/http"

	"github.com/guestnet/guestnet/internal/model"
)

// LeaseCluster asks the running daemon of a state folder for the lease
// cluster of its stretched networks as it sees it (GET
// /v1/leases/cluster): etcd's health and the blocks each host holds.
// ErrNoDaemon when none runs, ErrOldDaemon when it is too old to say.
//
// (doctor's; helper etcdlease's branch adds daemon.Cluster, the same
// request with its own ErrNoCluster: once both are merged, doctor calls
// that one and this file goes.)
func LeaseCluster(dir string) (model.ClusterLeases, error) {
	var out model.ClusterLeases
	err := call(dir, http.MethodGet, "/v1/leases/cluster", &out)
	if refused(err, http.StatusNotFound) {
		return model.ClusterLeases{}, ErrOldDaemon
	}
	return out, err
}
