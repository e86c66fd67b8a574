package etcdlease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// hostRec is the value of a host's liveness key.
type hostRec struct {
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
	// Instance tells this process from another that uses the same host
	// name (the same leases.host or router ID on two machines).
	Instance string `json:"instance"`
}

// keepAlive keeps this host's liveness key: bound to an etcd lease of the
// TTL, kept alive; when the lease is lost (the cluster was out of reach
// longer than the TTL) a new one is granted and the key written again.
func (c *Client) keepAlive() {
	v, _ := json.Marshal(hostRec{Host: c.cfg.Host, Since: time.Now(), Instance: c.instance})
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

// live grants a lease and writes the liveness key under it, if no one
// holds the key: a key of another process means another running host
// with this name, or this host's previous run that crashed (its key
// lapses within the TTL). Until the key is this process's, the host
// allocates no new address (Network.Blocks), and the health says why.
func (c *Client) live(v string) (clientv3.LeaseID, error) {
	ctx, cancel := c.op()
	defer cancel()
	g, err := c.cli.Grant(ctx, int64((c.cfg.TTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, err
	}
	k := c.keys.host(c.cfg.Host)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, v, clientv3.WithLease(g.ID))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return 0, err
	}
	var other hostRec
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) > 0 {
			json.Unmarshal(kvs[0].Value, &other)
		}
		if len(kvs) > 0 && other.Instance == c.instance {
			// This host's previous run (a crash, a restart): take its key
			// over now, unless it changed meanwhile.
			resp, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", kvs[0].ModRevision)).
				Then(clientv3.OpPut(k, v, clientv3.WithLease(g.ID))).Commit()
			if err != nil {
				return 0, err
			}
		}
	}
	if !resp.Succeeded {
		c.cli.Revoke(ctx, g.ID)
		err := fmt.Errorf("the host name %q is held in etcd by another guestnet (started %s): two hosts with the same leases.host or router ID, or this host's previous run, whose key lapses within %v; no new address is given until this host holds its name (set leases.host apart on each host)",
			c.cfg.Host, other.Since.Format(time.RFC3339), c.cfg.TTL)
		c.mu.Lock()
		was := c.clash
		c.clash = err.Error()
		c.mu.Unlock()
		if was == "" {
			c.cfg.Log.Error("leases: " + err.Error())
		}
		return 0, err
	}
	c.mu.Lock()
	if c.clash != "" {
		c.cfg.Log.Info("leases: this host now holds its name in etcd", "host", c.cfg.Host)
	}
	c.clash = ""
	c.mu.Unlock()
	c.named.Store(true)
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

// waitNamed waits up to the request timeout for this process to hold its
// host name in etcd (its liveness key is written as it starts); else it
// says why not.
func (c *Client) waitNamed() error {
	for deadline := time.Now().Add(c.cfg.Timeout); !c.named.Load(); {
		if time.Now().After(deadline) {
			c.mu.Lock()
			why := c.clash
			c.mu.Unlock()
			if why == "" {
				return c.unreachable("hold this host's name "+c.cfg.Host, errors.New("the liveness key is not written yet"))
			}
			return errors.New("leases: " + why)
		}
		if !sleep(c.ctx, 20*time.Millisecond) {
			return c.ctx.Err()
		}
	}
	return nil
}
