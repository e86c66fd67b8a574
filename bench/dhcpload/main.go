// Command dhcpload offers DHCP clients to a server at a fixed rate (open
// loop) from many bridge ports, and measures each client's full exchange,
// DISCOVER to ACK, as percentiles. perfdhcp's clients all share one source
// MAC on one port; here every client sends from its own MAC on its own
// port, so that a server binding leases to ports (guestnet's
// anti-spoofing) pays for each new binding, as it does for real guests.
//
// It runs in the clients' namespace, on the client ends of veth pairs
// whose other ends are ports of the server's bridge (bench/dhcpload/run.sh
// builds that):
//
//	dhcpload -ports 256 -prefix p -rate 1000 -duration 20s -fsync-dir /var/lib/x -label guestnet
//
// Beside the clients it writes and fsyncs a small file in -fsync-dir (the
// folder of the server's lease store) every -fsync-every, so that the
// physical floor of a synced ACK is measured in the same run, under the
// same load. It prints one markdown table row (see header).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// header is the table the rows of -label belong to.
const header = "| server | offered/s | sent/s | achieved ACK/s | lost | NAK | DORA p50 ms | DORA p99 ms | DORA p99.9 ms | DORA max ms | D-O p99 ms | R-A p99 ms | fsync p99 ms | DORA p99 ÷ fsync p99 |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

type config struct {
	prefix     string
	ports      int
	rate       int
	duration   time.Duration
	grace      time.Duration
	fsyncDir   string
	fsyncEvery time.Duration
	label      string
}

func main() {
	var c config
	flag.StringVar(&c.prefix, "prefix", "p", "client ports are the links PREFIX0 .. PREFIX<ports-1> of this namespace")
	flag.IntVar(&c.ports, "ports", 256, "number of client ports")
	flag.IntVar(&c.rate, "rate", 1000, "new clients per second (each does DISCOVER, OFFER, REQUEST, ACK)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "how long new clients are started")
	flag.DurationVar(&c.grace, "grace", 2*time.Second, "wait for late replies after the last DISCOVER; a client without its ACK by then is lost")
	flag.StringVar(&c.fsyncDir, "fsync-dir", "", "measure write+fsync of a small file in this folder meanwhile (the lease store's)")
	flag.DurationVar(&c.fsyncEvery, "fsync-every", 5*time.Millisecond, "pause between two write+fsync")
	flag.StringVar(&c.label, "label", "server", "first column of the row")
	hdr := flag.Bool("header", false, "print the table header and exit")
	flag.Parse()
	if *hdr {
		fmt.Println(header)
		return
	}
	r, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhcpload:", err)
		os.Exit(1)
	}
	fmt.Println(r.row(c))
	// The split, for finding where the time goes (stderr, not the table).
	fmt.Fprintf(os.Stderr, "%s %d/s: D-O p50 %s p90 %s p99 %s; R-A p50 %s p90 %s p99 %s; fsync p50 %s (ms, %d samples)\n",
		c.label, c.rate, ms(pct(r.do, .5)), ms(pct(r.do, .9)), ms(pct(r.do, .99)),
		ms(pct(r.ra, .5)), ms(pct(r.ra, .9)), ms(pct(r.ra, .99)), ms(pct(r.fsync, .5)), len(r.fsync))
}

// client is one simulated guest; times are nanoseconds since the start,
// 0 for not yet.
type client struct {
	port                  int
	mac                   net.HardwareAddr
	disc, offer, req, ack atomic.Int64
	nak                   atomic.Bool
}

type result struct {
	sent, acked, naks int
	unsent            int // DISCOVERs the kernel refused (ENOBUFS)
	sendSpan          time.Duration
	dora, do, ra      []time.Duration
	fsync             []time.Duration
}

func run(c config) (*result, error) {
	if c.rate <= 0 || c.duration <= 0 || c.ports <= 0 || c.ports > 1<<16 {
		return nil, errors.New("-rate and -duration must be positive, -ports between 1 and 65536")
	}
	n := int(float64(c.rate) * c.duration.Seconds())
	if n >= 1<<24 {
		return nil, fmt.Errorf("%d clients: at most %d fit in the client MACs", n, 1<<24-1)
	}
	conns := make([]*packet.Conn, c.ports)
	for p := range conns {
		name := fmt.Sprintf("%s%d", c.prefix, p)
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("client port %s: %w (run.sh makes PREFIX0..PREFIX<ports-1>)", name, err)
		}
		f, err := portFilter(p)
		if err != nil {
			return nil, fmt.Errorf("assemble filter: %w", err)
		}
		conn, err := packet.Listen(ifi, packet.Raw, 0x0800, &packet.Config{Filter: f})
		if err != nil {
			return nil, fmt.Errorf("open packet socket on %s: %w", name, err)
		}
		defer conn.Close()
		conns[p] = conn
	}
	clients := make([]client, n)
	for i := range clients {
		clients[i].port = i % c.ports
		clients[i].mac = clientMAC(clients[i].port, i)
	}
	start := time.Now()
	since := func() int64 { return int64(time.Since(start)) }
	bcast := &packet.Addr{HardwareAddr: broadcastMAC}

	var wg sync.WaitGroup
	var acked atomic.Int64
	var recvErr atomic.Value
	var closing atomic.Bool // the end: a read error is the socket closed
	for p, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, _, err := conn.ReadFrom(buf)
				if err != nil {
					if !closing.Load() {
						recvErr.Store(err)
					}
					return
				}
				m, err := reply(buf[:k])
				if err != nil {
					continue
				}
				x := m.TransactionID
				i := int(x[0])<<24 | int(x[1])<<16 | int(x[2])<<8 | int(x[3])
				if i >= n || clients[i].port != p || !slices.Equal(m.ClientHWAddr, clients[i].mac) {
					continue
				}
				cl := &clients[i]
				switch m.MessageType() {
				case dhcpv4.MessageTypeOffer:
					if !cl.offer.CompareAndSwap(0, since()) {
						continue // a second offer: one REQUEST is enough
					}
					req, err := dhcpv4.NewRequestFromOffer(m)
					if err != nil {
						recvErr.Store(fmt.Errorf("build REQUEST: %w", err))
						continue
					}
					cl.req.Store(since())
					conn.WriteTo(frame(cl.mac, req.ToBytes()), bcast) // a REQUEST refused (ENOBUFS) is a lost client

				case dhcpv4.MessageTypeAck:
					if cl.req.Load() != 0 && cl.ack.CompareAndSwap(0, since()) {
						acked.Add(1)
					}
				case dhcpv4.MessageTypeNak:
					cl.nak.Store(true)
				}
			}
		}()
	}

	ctx, stop := context.WithCancel(context.Background())
	var fs []time.Duration
	fsDone := make(chan error, 1)
	if c.fsyncDir != "" {
		go func() { var err error; fs, err = fsyncLoop(ctx, c.fsyncDir, c.fsyncEvery); fsDone <- err }()
	} else {
		fsDone <- nil
	}

	// Open loop: client i starts at i/rate whatever the server's answers.
	period := float64(time.Second) / float64(c.rate)
	unsent := 0
	for i := range clients {
		if d := time.Duration(float64(i)*period) - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		cl := &clients[i]
		xid := dhcpv4.TransactionID{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		d, err := dhcpv4.NewDiscovery(cl.mac, dhcpv4.WithTransactionID(xid))
		if err != nil {
			stop()
			return nil, fmt.Errorf("build DISCOVER: %w", err)
		}
		cl.disc.Store(since())
		if _, err := conns[cl.port].WriteTo(frame(cl.mac, d.ToBytes()), bcast); err != nil {
			if !errors.Is(err, unix.ENOBUFS) {
				stop()
				return nil, fmt.Errorf("send DISCOVER on %s%d: %w", c.prefix, cl.port, err)
			}
			// The kernel's backlog was full (every broadcast is copied to
			// each port of the bridge): this client is lost, as a frame
			// dropped on the wire would be.
			unsent++
		}
	}
	span := time.Since(start)
	for deadline := time.Now().Add(c.grace); acked.Load() < int64(n) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	closing.Store(true)
	for _, conn := range conns {
		conn.Close()
	}
	wg.Wait()
	if err := <-fsDone; err != nil {
		return nil, err
	}
	if err, _ := recvErr.Load().(error); err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}

	r := &result{sent: n, unsent: unsent, sendSpan: span, fsync: fs}
	for i := range clients {
		cl := &clients[i]
		if cl.nak.Load() {
			r.naks++
		}
		a := cl.ack.Load()
		if a == 0 {
			continue
		}
		r.acked++
		r.dora = append(r.dora, time.Duration(a-cl.disc.Load()))
		r.do = append(r.do, time.Duration(cl.offer.Load()-cl.disc.Load()))
		r.ra = append(r.ra, time.Duration(a-cl.req.Load()))
	}
	return r, nil
}

// fsyncLoop writes 4 KiB at the start of a file in dir and fsyncs it,
// every pause, until ctx ends, and returns how long each write+fsync took.
func fsyncLoop(ctx context.Context, dir string, pause time.Duration) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var out []time.Duration
	for ctx.Err() == nil {
		buf[0]++
		t := time.Now()
		if _, err := f.WriteAt(buf, 0); err != nil {
			return nil, fmt.Errorf("fsync probe %s: %w", filepath.Base(f.Name()), err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("fsync probe %s: %w", filepath.Base(f.Name()), err)
		}
		out = append(out, time.Since(t))
		time.Sleep(pause)
	}
	return out, nil
}

// pct is the q-quantile of ds (nearest rank), sorting ds.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	k := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(k, len(ds)-1))]
}

func unsentNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d not sent (ENOBUFS)", n)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func (r *result) row(c config) string {
	lost := r.sent - r.acked
	fp99 := pct(r.fsync, 0.99)
	ratio := "-"
	if fp99 > 0 {
		ratio = fmt.Sprintf("%.2f", float64(pct(r.dora, 0.99))/float64(fp99))
	}
	fsync := "-"
	if len(r.fsync) > 0 {
		fsync = ms(fp99)
	}
	cols := []string{c.label, fmt.Sprint(c.rate),
		fmt.Sprintf("%.0f", float64(r.sent)/r.sendSpan.Seconds()),
		fmt.Sprintf("%.0f", float64(r.acked)/max(c.duration, r.sendSpan).Seconds()),
		fmt.Sprintf("%d (%.3f %%)%s", lost, 100*float64(lost)/float64(r.sent), unsentNote(r.unsent)),
		fmt.Sprint(r.naks),
		ms(pct(r.dora, 0.50)), ms(pct(r.dora, 0.99)), ms(pct(r.dora, 0.999)), ms(pct(r.dora, 1)),
		ms(pct(r.do, 0.99)), ms(pct(r.ra, 0.99)), fsync, ratio}
	return "| " + strings.Join(cols, " | ") + " |"
}
