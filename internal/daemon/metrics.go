package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/guestnet/guestnet/internal/bgp"
)

var (
	descLeases  = prometheus.NewDesc("guestnet_dhcp_leases", "DHCP addresses per network and state: in_use (live leases), quarantined (declined or abandoned), free (could be offered to a new client now).", []string{"network", "state"}, nil)
	descPackets = prometheus.NewDesc("guestnet_dhcp_packets_total", "DHCP messages per network and type.", []string{"network", "type"}, nil)
	descProbes  = prometheus.NewDesc("guestnet_dhcp_arp_checks_total", "ARP checks of unrecorded addresses before an offer, per network and result: probed (checks made), in_use (someone answered: abandoned), error (the probe failed; offered unchecked), liar (an answer from a MAC claiming many addresses: not believed).", []string{"network", "result"}, nil)
	descForeign = prometheus.NewDesc("guestnet_dhcp_foreign_interface_total", "DHCP requests that came in on an interface without guestnet DHCP (the uplink, a bridge without dhcp:): ignored.", nil, nil)
	descSendErr = prometheus.NewDesc("guestnet_dhcp_send_errors_total", "DHCP replies the kernel refused to send (the bridge went away, ENOBUFS under a burst): the clients ask again.", nil, nil)
	descRepairs = prometheus.NewDesc("guestnet_repairs_total", "Drift repairs applied.", nil, nil)
	descApply   = prometheus.NewDesc("guestnet_apply_duration_seconds", "Duration of the last apply (reload or repair).", nil, nil)
	descService = prometheus.NewDesc("guestnet_service_up", "1 when the daemon's service runs without a problem, 0 when it is degraded or stopped (guestnet status says why).", []string{"service"}, nil)

	// BGP, only when the config has a bgp section.
	descBGPSession   = prometheus.NewDesc("guestnet_bgp_session_established", "1 when the BGP session with the peer is established, 0 otherwise (guestnet bgp shows its state and last error).", []string{"peer", "asn"}, nil)
	descBGPPrefixes  = prometheus.NewDesc("guestnet_bgp_prefixes", "Prefixes per BGP peer and direction: sent (announced to it), received (accepted from it), installed (of those, in the kernel).", []string{"peer", "direction"}, nil)
	descBGPAnnounced = prometheus.NewDesc("guestnet_bgp_announced", "Prefixes this host announces (its networks' subnets, floating and forward addresses).", nil, nil)
)

// collector reads the daemon's counters at scrape time.
type collector struct{ d *Daemon }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeases, descPackets, descProbes, descForeign, descSendErr, descRepairs, descApply, descService,
		descBGPSession, descBGPPrefixes, descBGPAnnounced} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	now := time.Now()
	for name, s := range d.servers {
		inUse, quarantined := 0, 0
		for _, l := range s.handler.Pool.Leases() {
			switch {
			case !now.Before(l.Expiry):
			case l.Declined:
				quarantined++
			default:
				inUse++
			}
		}
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(inUse), name, "in_use")
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(quarantined), name, "quarantined")
		// Free is what the pool itself would offer: 0 exactly when DISCOVERs
		// from new clients go unanswered (offers held, static and server
		// addresses excluded).
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(s.handler.Pool.Free()), name, "free")
		st := &s.handler.Stats
		for typ, v := range map[string]uint64{
			"discover": st.Discover.Load(), "request": st.Request.Load(), "release": st.Release.Load(),
			"decline": st.Decline.Load(), "inform": st.Inform.Load(), "offer": st.Offer.Load(), "ack": st.Ack.Load(),
			"nak": st.Nak.Load(), "exhausted": st.Exhausted.Load(), "ignored": st.Ignored.Load(), "foreign_port": st.Foreign.Load(),
			"relayed": st.Relayed.Load(), "bad_hostname": st.BadName.Load(), "port_full": st.PortFull.Load(),
		} {
			ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(v), name, typ)
		}
		pr := &s.handler.Probes
		for res, v := range map[string]uint64{"probed": pr.Probes.Load(), "in_use": pr.InUse.Load(), "error": pr.Errors.Load(), "liar": pr.Liar.Load()} {
			ch <- prometheus.MustNewConstMetric(descProbes, prometheus.CounterValue, float64(v), name, res)
		}
	}
	if d.mux != nil {
		ch <- prometheus.MustNewConstMetric(descForeign, prometheus.CounterValue, float64(d.mux.Foreign.Load()))
		ch <- prometheus.MustNewConstMetric(descSendErr, prometheus.CounterValue, float64(d.mux.SendErrors.Load()))
	}
	d.mu.Unlock()
	for _, s := range d.Status() {
		up := 0.0
		if s.State == "running" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descService, prometheus.GaugeValue, up, s.Name)
	}
	if st, ok := d.BGP(); ok {
		collectBGP(ch, st)
	}
	ch <- prometheus.MustNewConstMetric(descRepairs, prometheus.CounterValue, float64(d.repairs.Load()))
	ch <- prometheus.MustNewConstMetric(descApply, prometheus.GaugeValue, time.Duration(d.applyNs.Load()).Seconds())
}

// collectBGP sends the speaker's metrics: per peer its session and
// prefix counts, and the number of prefixes announced.
func collectBGP(ch chan<- prometheus.Metric, st bgp.Status) {
	for _, p := range st.Peers {
		peer := p.Address.String()
		up := 0.0
		if p.State == bgp.StateEstablished {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPSession, prometheus.GaugeValue, up, peer, strconv.FormatUint(uint64(p.ASN), 10))
		for dir, n := range map[string]int{"sent": p.Sent, "received": p.Received, "installed": p.Installed} {
			ch <- prometheus.MustNewConstMetric(descBGPPrefixes, prometheus.GaugeValue, float64(n), peer, dir)
		}
	}
	ch <- prometheus.MustNewConstMetric(descBGPAnnounced, prometheus.GaugeValue, float64(len(st.Announced)))
}

// MetricsListenError is the error of listening on --metrics; an address
// in use says the way out.
func MetricsListenError(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("--metrics: %w (something listens there already, perhaps another guestnet serve: name a free address)", err)
	}
	return fmt.Errorf("--metrics: %w", err)
}

// serveMetrics exposes /metrics over HTTP on addr.
func (d *Daemon) serveMetrics(addr string) (io.Closer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d})
	ln := d.MetricsListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, MetricsListenError(err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
