// Package state keeps what guestnet must remember between runs about what it
// owns: the networks it applied, the uplink settings a bridge-mode network
// moved (to put them back on destroy), and whether it turned forwarding of
// either family on (and raised accept_ra of uplinks for IPv6).
// One JSON file per network namespace, replaced atomically.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/guestnet/guestnet/internal/model"
)

// DefaultDir is where state lives unless --state-dir says otherwise.
const DefaultDir = "/var/lib/guestnet"

// State is what guestnet applied to one namespace.
type State struct {
	Networks map[string]Net `json:"networks,omitempty"`
	// ForwardingWas is "0" when guestnet turned net.ipv4.ip_forward on, so
	// that it turns it off again when its last forwarding network goes.
	ForwardingWas string `json:"forwarding_was,omitempty"`
	// Forwarding6Was is "0" when guestnet turned
	// net.ipv6.conf.all.forwarding on, for the same reason.
	Forwarding6Was string `json:"forwarding6_was,omitempty"`
	// AcceptRAWas holds, per interface guestnet raised to accept_ra 2
	// (so that IPv6 forwarding does not cost it its RA-learned default
	// route), the value it had: put back when forwarding goes off again.
	AcceptRAWas map[string]string `json:"accept_ra_was,omitempty"`
	// Nft marks the ruleset guestnet last committed: the kernel's ruleset
	// generation right after that commit, and the ruleset's digest. While
	// the generation has not moved, observe need not read the rules back.
	Nft *NftMark `json:"nft,omitempty"`
}

// NftMark is a ruleset generation and the digest of guestnet's ruleset then.
type NftMark struct {
	Gen uint32 `json:"gen"`
	Sum string `json:"sum"`
}

// Net is one applied network.
type Net struct {
	Network model.Network `json:"network"`
	Uplink  *Uplink       `json:"uplink,omitempty"`
	// Ports are the guest interfaces attached with guestnet attach (or
	// QEMU's ifup helper): a bridge made again after drift gets them back.
	Ports []string `json:"ports,omitempty"`
	// Binds are the addresses `guestnet attach --ip --mac` bound ports to.
	Binds map[string]model.PortBind `json:"binds,omitempty"`
	// Floats are the floating /32 addresses guestnet put on uplinks.
	Floats []Float `json:"floats,omitempty"`
}

// Float is one public address guestnet added to a link.
type Float struct {
	Link string       `json:"link"`
	Addr netip.Prefix `json:"addr"`
}

// Uplink is what a bridge-mode network took from its NIC.
type Uplink struct {
	Name   string                      `json:"name"`
	Addrs  []netip.Prefix              `json:"addrs,omitempty"`
	Brd    map[netip.Prefix]netip.Addr `json:"brd,omitempty"`
	Routes []model.Route               `json:"routes,omitempty"`
}

// Sorted returns the applied networks as model values, sorted by name.
func (s State) Sorted() []model.Network {
	var out []model.Network
	for _, n := range s.Networks {
		out = append(out, n.Network)
	}
	sortNetworks(out)
	return out
}

// Path is the state file of a namespace ("" is the namespace guestnet runs in).
func Path(dir, netns string) string {
	if netns == "" {
		return filepath.Join(dir, "state.json")
	}
	return filepath.Join(dir, "netns", netns, "state.json")
}

// Load reads a state file; a missing file is an empty state.
func Load(path string) (State, error) {
	var s State
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("read state %s: %w (the record of what guestnet owns here is damaged: "+
			"a running guestnet serve writes it back from memory at its next repair; else move it aside "+
			"and run guestnet apply with your spec, which finds its bridges by their guestnet: alias)", path, err)
	}
	return s, nil
}

// Save writes the state durably: temp file, fsync, rename, fsync the folder.
// The JSON is compact, one line (`jq . FILE` shows it indented): at 1,000
// networks with 10,000 forwards indenting made it 1.9 MB instead of 0.7,
// and took longer to encode, to write and to read back than the rest.
func Save(path string, s State) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := WriteFile(path, append(data, '\n')); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// WriteFile replaces path with data durably: temp file, fsync, rename,
// fsync the folder. A crash leaves the old file or the new one, whole.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func sortNetworks(ns []model.Network) {
	slices.SortFunc(ns, func(a, b model.Network) int { return strings.Compare(a.Name, b.Name) })
}

// Lock takes an exclusive lock on the state of path (a file beside it), so
// that the CLI and the daemon never interleave a read-plan-write of it:
// an attach that lands while the daemon repairs drift is kept, not
// overwritten. It waits for the holder; unlock releases it.
func Lock(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock state: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state %s: %w", path, err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}
