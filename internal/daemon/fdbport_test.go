package daemon

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// TestFDBPortReadsLinksOnce: naming a DHCP client's port reads the links
// from the kernel only when the port is not among the links last read (a
// read of every link per request costs O(networks) at 1,000 networks);
// a port on another bridge is refused.
func TestFDBPortReadsLinksOnce(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:00:00:03")
	links := []model.Link{{Name: "gnat0", Index: 5}, {Name: "vm0", Index: 9, Master: "gnat0"}, {Name: "gother0", Index: 6}}
	reads := 0
	f := &fdb{where: map[string]fdbEntry{}, links: func() ([]model.Link, error) { reads++; return links, nil }}
	f.update(netlink.NeighUpdate{Type: unix.RTM_NEWNEIGH, Neigh: netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_REACHABLE, MasterIndex: 5, LinkIndex: 9, HardwareAddr: hw}})
	for i := 0; i < 3; i++ {
		if id := f.port("gnat0", hw.String()); id.Name != "vm0" || id.Index != 9 {
			t.Fatalf("request %d: port %+v, want vm0 (9)", i, id)
		}
	}
	if reads != 1 {
		t.Errorf("3 requests read the links %d times, want 1", reads)
	}
	if _, err := f.masters(); err != nil || reads != 2 {
		t.Fatalf("masters: %v, %d reads", err, reads)
	}
	if id := f.port("gnat0", hw.String()); id.Name != "vm0" || reads != 2 {
		t.Errorf("after a sync: port %+v with %d reads, want vm0 with none more", id, reads)
	}
	// vm0 moved to gother0, and the links say so: refused.
	links[1].Master = "gother0"
	f.remember(links)
	if id := f.port("gnat0", hw.String()); id.Name != "" {
		t.Errorf("a port now on gother0 named as gnat0's: %+v", id)
	}
}
