// Package netns gives guestnet explicit handles on one network namespace:
// a netlink handle, an nftables connection, sysctls, and Do for the few
// kernel calls (TAP creation, /proc/sys) that act on the calling thread's
// namespace. Nothing here uses a process-wide default.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/nftables"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a target namespace. The zero name is the namespace guestnet runs in.
type NS struct {
	Name   string
	handle netns.NsHandle
}

// Open opens the named namespace (as made by `ip netns add`), or the
// current one for "".
func Open(name string) (*NS, error) {
	var h netns.NsHandle
	var err error
	if name == "" {
		h, err = netns.Get()
	} else {
		h, err = netns.GetFromName(name)
	}
	if err != nil {
		return nil, OpenError(name, err)
	}
	return &NS{Name: name, handle: h}, nil
}

// OpenError is the error of opening the namespace name; a name that does
// not exist says how to make one.
func OpenError(name string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open netns %q: %w (no namespace of that name: make it with `ip netns add %s`, or name one `ip netns list` shows)", name, err, name)
	}
	return fmt.Errorf("open netns %q: %w", name, err)
}

// Close releases the namespace handle.
func (n *NS) Close() error { return n.handle.Close() }

// Netlink returns a netlink handle bound to the namespace.
func (n *NS) Netlink() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		return nil, fmt.Errorf("netlink in netns %q: %w", n.Name, err)
	}
	return h, nil
}

// Nft returns an nftables connection bound to the namespace. bufBytes
// sizes its socket buffers for a large batch, as nft itself does
// (SO_SNDBUFFORCE needs CAP_NET_ADMIN, which every writer here has); 0
// keeps the defaults. more adds options (nftables.AsLasting for a reader
// that makes many requests: one socket for all of them; it must then
// CloseLasting it).
func (n *NS) Nft(bufBytes int, more ...nftables.ConnOption) (*nftables.Conn, error) {
	opts := append([]nftables.ConnOption{nftables.WithNetNSFd(int(n.handle))}, more...)
	if bufBytes > 0 {
		opts = append(opts, nftables.WithSockOptions(func(c *mnl.Conn) error {
			rc, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			err = rc.Control(func(fd uintptr) {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufBytes); serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufBytes)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables in netns %q: %w", n.Name, err)
	}
	return c, nil
}

// Do runs fn on an OS thread switched into the namespace. If switching back
// fails the thread stays locked, so Go retires it rather than reuse a thread
// in the wrong namespace.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: current: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %q: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("leave netns %q: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// sysctlPath is the /proc/sys file of a key in sysctl(8)'s notation: dots
// separate the levels, and a slash stands for a dot inside one (an
// interface named eth0.100 is net.ipv6.conf.eth0/100.accept_ra).
func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.NewReplacer(".", "/", "/", ".").Replace(key))
}

// ReadSysctl reads a sysctl of the namespace ("net.ipv4.ip_forward").
// A missing key (e.g. br_netfilter not loaded) reads as "".
func (n *NS) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(sysctlPath(key))
		if os.IsNotExist(err) {
			return nil
		}
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// WriteSysctl sets a sysctl of the namespace.
// Equivalent to: ip netns exec NAME sysctl -w KEY=VALUE
func (n *NS) WriteSysctl(key, value string) error {
	return n.Do(func() error {
		return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
	})
}

// UDPListeners returns the local ports of the namespace's IPv4 UDP sockets
// (read from /proc/thread-self/net/udp inside it).
// Equivalent to: ip netns exec NAME ss -Hlun
func (n *NS) UDPListeners() (map[int]int, error) {
	ports := map[int]int{}
	err := n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/udp")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			_, port, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			var p int
			if _, err := fmt.Sscanf(port, "%X", &p); err == nil {
				ports[p]++
			}
		}
		return nil
	})
	return ports, err
}
