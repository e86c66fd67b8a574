package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/plan"
)

func (g *globals) printActions(acts []plan.Action, what string) error {
	if g.json() {
		return g.printJSON(newPlanJSON(plan.Plan{Actions: acts}, nil))
	}
	if len(acts) == 0 {
		fmt.Fprintf(g.out, "%s: nothing to do\n", what)
		return nil
	}
	for _, a := range acts {
		fmt.Fprintf(g.out, "%s\n", a)
	}
	return nil
}

func attachCmd(g *globals) *cobra.Command {
	var o plan.AttachOptions
	var owner, group, mac string
	var ips []string
	c := &cobra.Command{
		Use:   "attach NETWORK IFACE",
		Short: "Put a guest's TAP (or veth end) into a network's bridge, up, with the bridge's MTU",
		Long: "Put a guest's TAP (or veth end) into a network's bridge, up, with the bridge's MTU.\n" +
			"--ip and --mac bind the port: it may then send only ARP and IPv4 from that MAC and those\n" +
			"addresses (anti-spoofing), and, when an --ip is IPv6, IPv6 only from those and its link-local\n" +
			"address. Without an IPv6 --ip, a guest port claims its IPv6 addresses first-come (RFC 6620).\n" +
			"--mac alone takes the addresses of the MAC's DHCP static hosts,\n" +
			"or the lease guestnet serve gives it. A port with no binding (and no lease from guestnet\n" +
			"serve) is unrestricted; guestnet status says which ports are.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkApplied(args[0]); err != nil {
				return err
			}
			var err error
			if o.Bind, err = parseBind(ips, mac); err != nil {
				return err
			}
			if o.Owner, err = lookupID(owner, true); err != nil {
				return err
			}
			if o.Group, err = lookupID(group, false); err != nil {
				return err
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			acts, err := e.Attach(cmd.Context(), args[0], args[1], o)
			if err != nil {
				return err
			}
			return g.printActions(acts, "attach")
		},
	}
	c.Flags().BoolVar(&o.Create, "create", false, "create a persistent TAP if IFACE does not exist")
	c.Flags().StringVar(&owner, "owner", "", "user (name or uid) allowed to open the created TAP, for unprivileged QEMU")
	c.Flags().StringVar(&group, "group", "", "group (name or gid) allowed to open the created TAP")
	bindFlags(c, &ips, &mac)
	return c
}

// parseBind reads --ip and --mac; nil when neither is given.
func parseBind(ips []string, mac string) (*model.PortBind, error) {
	if len(ips) == 0 && mac == "" {
		return nil, nil
	}
	b := &model.PortBind{}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return nil, fmt.Errorf("--ip %q: want a unicast IPv4 or IPv6 address, like 10.99.0.10 or fd42:99::10", s)
		}
		b.IPs = append(b.IPs, a)
	}
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 || hw[0]&1 == 1 {
			return nil, fmt.Errorf("--mac %q: want a unicast Ethernet address, like 52:54:00:12:34:56", mac)
		}
		b.MAC = hw.String()
	}
	return b, nil
}

// lookupID resolves a user or group name or number; "" is -1 (none).
func lookupID(s string, isUser bool) (int, error) {
	if s == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	if isUser {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(u.Uid)
	}
	gr, err := user.LookupGroup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(gr.Gid)
}

func detachCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "detach NETWORK IFACE",
		Short: "Take an interface out of a network's bridge",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkApplied(args[0]); err != nil {
				return err
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			acts, err := e.Detach(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return g.printActions(acts, "detach")
		},
	}
}

// ifupCmd is what QEMU's script=/downscript= end up running: the TAP exists
// (QEMU made it) and its name is the last argument.
func ifupCmd(g *globals, verb string) *cobra.Command {
	var ips []string
	var mac string
	c := &cobra.Command{
		Use:   verb + " NETWORK IFNAME",
		Short: "QEMU " + verb + " helper: see `guestnet qemu-script`",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			bind, err := parseBind(ips, mac)
			if err != nil {
				return err
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			defer e.Close()
			if verb == "ifup" {
				_, err = e.Attach(cmd.Context(), args[0], args[1], plan.AttachOptions{Owner: -1, Group: -1, Bind: bind})
			} else {
				_, err = e.Detach(cmd.Context(), args[0], args[1])
			}
			return err
		},
	}
	bindFlags(c, &ips, &mac)
	return c
}

func bindFlags(c *cobra.Command, ips *[]string, mac *string) {
	c.Flags().StringArrayVar(ips, "ip", nil, "bind the port to this IPv4 or IPv6 address (repeat for several)")
	c.Flags().StringVar(mac, "mac", "", "bind the port to this guest MAC address")
}

func qemuScriptCmd(g *globals) *cobra.Command {
	var down bool
	var ips []string
	var mac string
	c := &cobra.Command{
		Use:   "qemu-script NETWORK",
		Short: "Print a qemu-ifup (or --down: qemu-ifdown) script for -netdev tap,script=PATH",
		Long: "QEMU runs `PATH IFNAME` after it creates the TAP. Save the output, make it executable, and start QEMU with\n" +
			"  -netdev tap,id=n0,script=/etc/guestnet/qemu-ifup-NETWORK,downscript=/etc/guestnet/qemu-ifdown-NETWORK\n" +
			"With --ip/--mac the ifup script binds the TAP to the guest's addresses (anti-spoofing): one script per VM.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bind, err := parseBind(ips, mac)
			if err != nil {
				return err
			}
			if err := g.checkApplied(args[0]); err != nil {
				return fmt.Errorf("%w; apply the network before writing its QEMU script", err)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			verb := "ifup"
			if down {
				verb = "ifdown"
			}
			flags := fmt.Sprintf("--state-dir %q", g.stateDir)
			if g.netns != "" {
				flags += fmt.Sprintf(" --netns %q", g.netns)
			}
			sub := verb
			if bind != nil && !down {
				for _, a := range bind.IPs {
					sub += " --ip " + a.String()
				}
				if bind.MAC != "" {
					sub += " --mac " + bind.MAC
				}
			}
			script := fmt.Sprintf("#!/bin/sh\n# guestnet %s helper for network %s: QEMU calls it as `script IFNAME`.\nexec %q %s %s %q \"$1\"\n",
				verb, args[0], self, flags, sub, args[0])
			if g.json() {
				return g.printJSON(struct {
					Network string `json:"network"`
					Kind    string `json:"kind"` // ifup or ifdown
					Script  string `json:"script"`
				}{args[0], verb, script})
			}
			fmt.Fprint(g.out, script)
			return nil
		},
	}
	c.Flags().BoolVar(&down, "down", false, "print the downscript instead")
	bindFlags(c, &ips, &mac)
	return c
}
