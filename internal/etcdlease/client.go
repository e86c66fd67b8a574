package etcdlease

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/guestnet/guestnet/internal/dhcp"
	"github.com/guestnet/guestnet/internal/model"
)

// Defaults of a Client.
const (
	// TTL is the life of a host's liveness key without a keep-alive.
	TTL = 10 * time.Second
	// Timeout bounds every read and write: a cluster that does not answer
	// within it counts as out of quorum for that request.
	Timeout = 1500 * time.Millisecond
	// HealthEvery is how often the cluster's health is read.
	HealthEvery = 3 * time.Second
)

// Config is what a Client needs.
type Config struct {
	model.Leases
	// TTL of the liveness key (TTL unless set); Timeout of each request
	// (Timeout unless set).
	TTL, Timeout time.Duration
	// Now is the clock of lease expiry (time.Now unless set): it decides
	// which leases are live, as the pools' clock does.
	Now func() time.Time
	Log *slog.Logger
	// Instance names this host's runs apart from another host's under the
	// same name: the daemon keeps it in its state folder, so that a run
	// after a crash takes its own liveness key over at once (random
	// unless set: the key is then taken once it lapses).
	Instance string
}

// Client is one host's view of the lease cluster: its liveness, the
// networks it serves and the cluster's health. It is dhcp.Store for the
// stretched networks (Put and Delete go to etcd, Load reads what the
// watch keeps).
type Client struct {
	cfg  Config
	keys keys
	cli  *clientv3.Client
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	// instance tells this process's liveness key from another's under the
	// same host name; named is set once this process holds the key.
	instance string
	named    atomic.Bool

	mu     sync.Mutex
	nets   map[string]*Network
	health model.EtcdHealth
	clash  string // why the host name is not this process's, "" when it is
}

var _ dhcp.Store = (*Client)(nil)

// Open connects to the cluster (it does not wait for it: a cluster out of
// reach shows in Health, and leases are refused until it answers) and
// starts keeping this host's liveness key.
func Open(cfg Config) (*Client, error) {
	if len(cfg.Etcd) == 0 {
		return nil, errors.New("leases: no etcd endpoints: a stretched network keeps its leases in etcd (leases.etcd)")
	}
	if cfg.Host == "" {
		return nil, errors.New("leases: no host name: set leases.host, or vxlan.local or bgp.router_id")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = model.LeasePrefix
	}
	if cfg.Block <= 0 {
		cfg.Block = model.LeaseBlockSize
	}
	if cfg.TTL <= 0 {
		cfg.TTL = TTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = Timeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Instance == "" {
		cfg.Instance = rand.Text()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd, DialTimeout: cfg.Timeout,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: cfg.Timeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("leases: connect to etcd %v: %w", cfg.Etcd, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, keys: keys{cfg.Prefix}, cli: cli, ctx: ctx, stop: stop, nets: map[string]*Network{}, instance: cfg.Instance,
		health: model.EtcdHealth{Endpoints: slices.Clone(cfg.Etcd), Error: "not checked yet"}}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.keepAlive() }()
	go func() { defer c.wg.Done(); c.watchHealth() }()
	return c, nil
}

// Host is this host's name in the cluster.
func (c *Client) Host() string { return c.cfg.Host }

// Close stops the client. The liveness key is not revoked: it lapses
// after its TTL, as a crashed host's does, and a host that comes back
// under the same name keeps its blocks.
func (c *Client) Close() error {
	c.stop()
	c.wg.Wait()
	return c.cli.Close()
}

// op is the context of one request: the client's, bounded by Timeout.
func (c *Client) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(c.ctx), c.cfg.Timeout)
}

// unreachable wraps an error of a request that did not complete as
// dhcp.ErrNoQuorum, and records it in the health.
func (c *Client) unreachable(what string, err error) error {
	err = fmt.Errorf("%s: etcd %v did not answer within %v (quorum lost?): %w: %w", what, c.cfg.Etcd, c.cfg.Timeout, dhcp.ErrNoQuorum, err)
	c.mu.Lock()
	c.health.Quorum, c.health.Error = false, err.Error()
	c.mu.Unlock()
	return err
}

// Network starts serving a stretched network with these DHCP ranges: its
// blocks, leases and watch. Attach its pool next.
func (c *Client) Network(name string, ranges []model.Range) *Network {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nets[name]; ok && slices.Equal(n.ranges, ranges) {
		return n
	} else if ok {
		n.close()
	}
	n := newNetwork(c, name, ranges)
	c.nets[name] = n
	return n
}

// Drop stops serving a network (its watch ends; its blocks stay claimed).
func (c *Client) Drop(name string) {
	c.mu.Lock()
	n, ok := c.nets[name]
	delete(c.nets, name)
	c.mu.Unlock()
	if ok {
		n.close()
	}
}

func (c *Client) network(name string) (*Network, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nets[name]
	if !ok {
		return nil, fmt.Errorf("leases: network %s is not served from etcd", name)
	}
	return n, nil
}

// Load returns the leases of a network as the watch last saw them.
func (c *Client) Load(network string) ([]dhcp.Lease, error) {
	n, err := c.network(network)
	if err != nil {
		return nil, err
	}
	return n.Leases(), nil
}

// Put writes a lease before its ACK (Network.Put).
func (c *Client) Put(network string, l dhcp.Lease) error {
	n, err := c.network(network)
	if err != nil {
		return err
	}
	return n.Put(l)
}

// Delete removes a lease (Network.Delete).
func (c *Client) Delete(network string, a netip.Addr) error {
	n, err := c.network(network)
	if err != nil {
		return err
	}
	return n.Delete(a)
}

// Health is what the client last saw of the cluster.
func (c *Client) Health() model.EtcdHealth {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health
	h.Endpoints, h.Reachable = slices.Clone(h.Endpoints), slices.Clone(h.Reachable)
	if c.clash != "" && h.Error != "" {
		h.Error = c.clash + "; " + h.Error
	} else if c.clash != "" {
		h.Error = c.clash
	}
	return h
}

// Cluster is the lease cluster as this host sees it: health, and every
// block of its networks with its owner and live leases.
func (c *Client) Cluster() model.ClusterLeases {
	c.mu.Lock()
	nets := make([]*Network, 0, len(c.nets))
	for _, n := range c.nets {
		nets = append(nets, n)
	}
	c.mu.Unlock()
	out := model.ClusterLeases{Host: c.cfg.Host, Etcd: c.Health(), Blocks: []model.LeaseBlock{}}
	for _, n := range nets {
		out.Blocks = append(out.Blocks, n.Held()...)
	}
	slices.SortFunc(out.Blocks, func(a, b model.LeaseBlock) int {
		if a.Network != b.Network {
			if a.Network < b.Network {
				return -1
			}
			return 1
		}
		return a.First.Compare(b.First)
	})
	return out
}
