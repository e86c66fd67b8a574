package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/bgp"
	"github.com/guestnet/guestnet/internal/daemon"
)

func bgpCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "bgp",
		Short: "Show the BGP speaker of guestnet serve: peers, announced prefixes, learned routes not installed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.bgpStatus()
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(bgpJSON(st))
			}
			printBGP(g.out, st, time.Now())
			return nil
		},
	}
}

// bgpStatus asks the daemon for its speaker's status; the errors say how
// to get one (start the daemon, give its config a bgp section).
func (g *globals) bgpStatus() (bgp.Status, error) {
	st, err := daemon.BGP(g.dir())
	if errors.Is(err, daemon.ErrNoDaemon) {
		where, flag := "this host", ""
		if g.netns != "" {
			where, flag = "namespace "+g.netns, " --netns "+g.netns
		}
		return st, fmt.Errorf("no guestnet serve runs for %s (nothing answers on %s): BGP is a service of the daemon; "+
			"start it (systemctl start guestnet-serve, or guestnet serve --config DIR%s)", where, daemon.SocketPath(g.dir()), flag)
	}
	return st, err
}

// bgpJSON is st with empty lists as [] rather than null: a script reads
// the same shape from a speaker with no peer yet.
func bgpJSON(st bgp.Status) bgp.Status {
	if st.Peers == nil {
		st.Peers = []bgp.PeerStatus{}
	}
	if st.Announced == nil {
		st.Announced = []netip.Prefix{}
	}
	if st.Learned == nil {
		st.Learned = []bgp.Learned{}
	}
	return st
}

// printBGP writes `guestnet bgp`'s text: the speaker, one line per peer
// (state spelled out, uptime while established, prefixes sent, received
// and installed, the last error), the announced prefixes, then the
// learned routes not installed with the reason, and those kept stale
// across a peer's restart. now is the clock the uptimes are read against.
func printBGP(w io.Writer, st bgp.Status, now time.Time) {
	id := "-"
	if st.RouterID.IsValid() {
		id = st.RouterID.String()
	}
	fmt.Fprintf(w, "AS %d, router id %s, port %d\n", st.ASN, id, st.Port)
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "No peers.")
	} else {
		var table strings.Builder
		tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER\tAS\tSTATE\tUPTIME\tSENT\tRECEIVED\tINSTALLED\tLAST ERROR")
		for _, p := range st.Peers {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Address, p.ASN, clean(p.State), uptime(p, now),
				p.Sent, p.Received, p.Installed, clean(p.LastError))
		}
		tw.Flush()
		for line := range strings.Lines(table.String()) { // no padding after a peer without error
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
	}
	fmt.Fprintf(w, "\nAnnounced (%d):\n", len(st.Announced))
	for _, a := range st.Announced {
		fmt.Fprintf(w, "  %s\n", a)
	}
	var installed, refused, stale []bgp.Learned
	for _, l := range st.Learned {
		if !l.Installed {
			refused = append(refused, l)
			continue
		}
		installed = append(installed, l)
		if l.Stale {
			stale = append(stale, l)
		}
	}
	fmt.Fprintf(w, "\nLearned and installed (%d):\n", len(installed))
	for _, l := range installed {
		fmt.Fprintf(w, "  %s via %s from %s\n", l.Prefix, l.NextHop, l.Peer)
	}
	fmt.Fprintf(w, "\nLearned, not installed (%d):\n", len(refused))
	for _, l := range refused {
		why := clean(l.Why)
		if why == "" {
			why = "the speaker gave no reason"
		}
		fmt.Fprintf(w, "  %s via %s from %s: %s\n", l.Prefix, l.NextHop, l.Peer, why)
	}
	if len(stale) > 0 {
		fmt.Fprintf(w, "\nKept while their peer restarts (%d):\n", len(stale))
		for _, l := range stale {
			fmt.Fprintf(w, "  %s via %s from %s\n", l.Prefix, l.NextHop, l.Peer)
		}
	}
	if st.EVPN != nil {
		printEVPN(w, *st.EVPN)
	}
}

// printEVPN writes the EVPN part of `guestnet bgp`: per VNI, this host's
// VTEP and the remote VTEPs that want its flood traffic (type-3 routes),
// then every remote MAC (type-2 routes) with its IP, VTEP and mobility
// sequence. Every remote route is listed, also a MAC two VTEPs name
// (a guest moving: the higher sequence wins).
func printEVPN(w io.Writer, e bgp.EVPNStatus) {
	ready := ""
	if !e.Ready {
		ready = ", remote routes incomplete: waiting for the peers' End-of-RIB"
	}
	fmt.Fprintf(w, "\nEVPN VNIs (%d%s):\n", len(e.VNIs), ready)
	for _, v := range e.VNIs {
		local := "-"
		if v.LocalVTEP.IsValid() {
			local = v.LocalVTEP.String()
		}
		remote := "none"
		if len(v.RemoteVTEPs) > 0 {
			var vs []string
			for _, a := range v.RemoteVTEPs {
				vs = append(vs, a.String())
			}
			remote = strings.Join(vs, ", ")
		}
		fmt.Fprintf(w, "  VNI %d: local VTEP %s, remote VTEPs %s; MACs %d local, %d remote\n", v.VNI, local, remote, v.LocalMACs, v.RemoteMACs)
	}
	fmt.Fprintf(w, "\nRemote MACs (%d):\n", len(e.Remote.MACs))
	if len(e.Remote.MACs) == 0 {
		return
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VNI\tMAC\tIP\tVTEP\tSEQ")
	for _, m := range e.Remote.MACs {
		ip := "-"
		if m.IP.IsValid() {
			ip = m.IP.String()
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\n", m.VNI, clean(m.MAC), ip, m.VTEP, m.Seq)
	}
	tw.Flush()
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

// uptime is how long an established session has been up, in whole
// seconds (3m12s); "-" for a session that is not.
func uptime(p bgp.PeerStatus, now time.Time) string {
	if p.State != bgp.StateEstablished || p.Since.IsZero() {
		return "-"
	}
	return max(now.Sub(p.Since), 0).Round(time.Second).String()
}

// bgpSummary is the "bgp:" line of `guestnet status`: what this host
// announces (the first few) and each peer's state.
func bgpSummary(st bgp.Status) string {
	const shown = 4
	var ann []string
	for i, a := range st.Announced {
		if i == shown {
			ann = append(ann, fmt.Sprintf("and %d more", len(st.Announced)-shown))
			break
		}
		ann = append(ann, a.String())
	}
	announces := "nothing"
	if len(ann) > 0 {
		announces = strings.Join(ann, ", ")
	}
	var peers []string
	for _, p := range st.Peers {
		peers = append(peers, fmt.Sprintf("%s %s", p.Address, clean(p.State)))
	}
	if len(peers) == 0 {
		peers = []string{"none"}
	}
	return fmt.Sprintf("bgp: AS %d announces %s; peers: %s", st.ASN, announces, strings.Join(peers, ", "))
}

// clean escapes what a terminal would act on in a text that may come from
// a peer (a BGP notification's shutdown message is free text): control
// characters, invalid UTF-8 and anything unprintable, so that no row is
// forged and nothing is coloured. Spaces are kept.
func clean(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}
