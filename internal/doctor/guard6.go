package doctor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/guestnet/guestnet/internal/model"
)

// checkPorts6: ports of a first-come network's bridge (model.FirstCome)
// that no IPv6 rule checks: not attached by guestnet (set guests6) and,
// with guestnet serve not running, not in the daemon's guests6_learned
// either. A port libvirt or `ip link set master` added gets no IPv6
// anti-spoofing then: its guest may send router advertisements and any
// source address to its neighbours. A Warning: nothing the guests need is
// broken, but the guard is not what the config promises.
func checkPorts6(in Input) []Finding {
	g := in.Host.Guard
	if !in.Declared || !g.On || in.Diag.Daemon {
		return nil
	}
	var out []Finding
	for _, n := range in.Networks {
		if !n.FirstCome() {
			continue
		}
		var bare []string
		for _, l := range in.Host.Links {
			if l.Master == n.Bridge && !n.Infra(l.Name) && !slices.Contains(g.Guests6, l.Name) && !slices.Contains(g.LearnedGuests6, l.Name) {
				bare = append(bare, l.Name)
			}
		}
		if len(bare) == 0 {
			continue
		}
		out = append(out, Finding{Severity: Warning, Network: n.Name,
			What: fmt.Sprintf("%s: port(s) %s of %s get no IPv6 anti-spoofing (no RA guard, no source check): guestnet attach did not add them, and guestnet serve, which guards the bridge's other ports, is not running",
				n.Name, strings.Join(bare, ", "), n.Bridge),
			Evidence: []string{fmt.Sprintf("ports of %s not in set %s nor %s: %s", n.Bridge, model.GuardGuests6, model.GuardLearnedGuests6, strings.Join(bare, " ")),
				"no daemon answers on the API socket"},
			Fix: fmt.Sprintf("systemctl start guestnet-serve (or guestnet serve --config ...), or attach each port: guestnet attach %s %s", n.Name, bare[0])})
	}
	return out
}
