package etcdlease

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// hostRec is the value of a host's liveness key.
type hostRec struct {
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
}

// keepAlive keeps this host's liveness key: bound to an etcd lease of the
// TTL, kept alive; when the lease is lost (the cluster was out of reach
// longer than the TTL) a new one is granted and the key written again.
func (c *Client) keepAlive() {
	v, _ := json.Marshal(hostRec{Host: c.cfg.Host, Since: time.Now()})
	for c.ctx.Err() == nil {
		id, err := c.live(string(v))
		if err != nil {
			c.cfg.Log.Debug("leases: liveness key not written yet", "err", err)
			sleep(c.ctx, time.Second)
			continue
		}
		ch, err := c.cli.KeepAlive(c.ctx, id)
		if err != nil {
			sleep(c.ctx, time.Second)
			continue
		}
		for range ch {
		}
		if c.ctx.Err() == nil {
			c.cfg.Log.Warn("leases: this host's liveness lease in etcd lapsed (the cluster was out of reach); writing it again",
				"host", c.cfg.Host, "ttl", c.cfg.TTL)
		}
	}
}

// live grants a lease and writes the liveness key under it.
func (c *Client) live(v string) (clientv3.LeaseID, error) {
	ctx, cancel := c.op()
	defer cancel()
	g, err := c.cli.Grant(ctx, int64((c.cfg.TTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, err
	}
	if _, err := c.cli.Put(ctx, c.keys.host(c.cfg.Host), v, clientv3.WithLease(g.ID)); err != nil {
		return 0, err
	}
	return g.ID, nil
}

// watchHealth reads the cluster's health every HealthEvery: which
// endpoints answer, and whether a linearizable read (one that needs a
// quorum) succeeds.
func (c *Client) watchHealth() {
	for {
		c.checkHealth()
		if !sleep(c.ctx, HealthEvery) {
			return
		}
	}
}

func (c *Client) checkHealth() {
	var reach []string
	for _, ep := range c.cfg.Etcd {
		// Not c.op(): a member answers its status without a leader.
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
		if _, err := c.cli.Status(ctx, ep); err == nil {
			reach = append(reach, ep)
		}
		cancel()
	}
	ctx, cancel := c.op()
	_, err := c.cli.Get(ctx, c.keys.host(c.cfg.Host))
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.health.Quorum
	c.health.Reachable, c.health.Checked = reach, time.Now()
	c.health.Quorum, c.health.Error = err == nil, ""
	if err != nil {
		c.health.Error = "a linearizable read failed: " + err.Error()
		if was {
			c.cfg.Log.Warn("leases: etcd has no quorum: new leases of stretched networks are refused; renewals get their remaining time",
				"endpoints", c.cfg.Etcd, "reachable", reach, "err", err)
		}
	} else if !was {
		c.cfg.Log.Info("leases: etcd answers with a quorum", "endpoints", c.cfg.Etcd, "reachable", reach)
	}
}

// sleep waits d or until ctx ends; false when it ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
