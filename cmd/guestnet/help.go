package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// help is each command's long description, example and exit codes, kept
// together so that every command says what it does, how it is called and
// what its exit code means (the golden test in help_test.go holds them).
var help = map[string]struct{ long, example, exits string }{
	"plan": {
		long:    "Show what apply would change, each change as its command-line equivalent (ip link add ...,\nsysctl -w ..., the rules added and removed). Nothing is changed.",
		example: "  guestnet plan /etc/guestnet\n  guestnet plan -o json lab.yaml",
		exits:   "0 nothing would change, 2 something would, 1 error (bad spec, cannot read the host)",
	},
	"apply": {
		long: "Make the host carry exactly the networks of the given files (a directory means its *.yaml and\n" +
			"*.yml). Networks guestnet applied before that are no longer declared are removed. All or\n" +
			"nothing: a failed step undoes the earlier ones. A spec that declares no networks (an empty\n" +
			"file, comments only, `networks:` alone, an empty directory) is refused and nothing changes:\n" +
			"say --allow-empty, or run guestnet destroy --all, to remove every network. While guestnet\n" +
			"serve runs here, apply of its config asks it to reload; other files are refused.",
		example: "  guestnet apply /etc/guestnet\n  guestnet apply --netns lab -o json lab.yaml",
		exits:   "0 applied (or nothing to do), 1 error: nothing was changed, or what was is undone",
	},
	"destroy": {
		example: "  guestnet destroy lab\n  guestnet destroy /etc/guestnet/lab.yaml\n  guestnet destroy --all",
		exits:   "0 destroyed, 1 error (an unknown network, a kernel error)",
	},
	"attach": {
		example: "  guestnet attach lab tap0\n  guestnet attach lab tap-vm1 --create --owner alice --ip 10.99.0.10 --mac 52:54:00:12:34:56",
		exits:   "0 attached, 1 error (no such network or interface, a binding the network cannot enforce)",
	},
	"detach": {
		long:    "Take an interface out of a network's bridge, and drop its anti-spoofing binding. A TAP that\nis already gone is not an error.",
		example: "  guestnet detach lab tap0",
		exits:   "0 detached (or nothing to do), 1 error (a network guestnet did not apply here)",
	},
	"ifup": {
		long:    "What a qemu-ifup script made by guestnet qemu-script runs: attach IFNAME, which QEMU made,\nto NETWORK (with --ip/--mac: bound).",
		example: "  guestnet ifup lab tap0",
		exits:   "0 attached, 1 error",
	},
	"ifdown": {
		long:    "What a qemu-ifdown script made by guestnet qemu-script runs: detach IFNAME from NETWORK.",
		example: "  guestnet ifdown lab tap0",
		exits:   "0 detached, 1 error",
	},
	"qemu-script": {
		example: "  guestnet qemu-script lab > /etc/guestnet/qemu-ifup-lab && chmod +x /etc/guestnet/qemu-ifup-lab\n" +
			"  guestnet qemu-script lab --down > /etc/guestnet/qemu-ifdown-lab",
		exits: "0 printed, 1 error (a network guestnet did not apply here)",
	},
	"routes": {
		long:    "Print the return route other hosts need to reach a routed network, through the host address\non the interface that faces them. For a nat network with routed_from, the routes for the hosts\nin each routed_from prefix (the only ones its firewall lets in), each after a comment naming them.",
		example: "  guestnet routes lab\n  guestnet routes lab --for windows --peer 10.10.0.5",
		exits:   "0 printed, 1 error (a network guestnet did not apply here, no address to route through)",
	},
	"status": {
		long:    "Show guestnet's networks: bridges, ports and their anti-spoofing bindings, addresses, rules per\nnetwork, ip_forward, br_netfilter, foreign chains that drop by policy, and the services of\nguestnet serve when it runs (with a bgp: line, the prefixes it announces and its peers' states,\nwhen its config has a bgp section).",
		example: "  guestnet status\n  guestnet status -o json",
		exits:   "0 shown, 1 error",
	},
	"serve": {
		long: "Run the daemon: apply the config, serve DHCP and DNS, repair drift, answer the CLI. SIGHUP (or\n" +
			"guestnet apply of its config) reloads the config. A config that declares no networks is\n" +
			"refused, at start and on reload: it would remove every network.",
		example: "  guestnet serve --config /etc/guestnet --metrics 127.0.0.1:9468",
		exits:   "0 stopped by SIGTERM or SIGINT, 1 error, 3 the lease store cannot be read (see --recover-leases)",
	},
	"leases": {
		example: "  guestnet leases\n  guestnet leases lab -o json",
		exits:   "0 listed, 1 error (a network guestnet did not apply here)",
	},
	"bgp": {
		long: "Show the BGP speaker of guestnet serve: one line per peer (its address, AS, state spelled out,\n" +
			"uptime while established, prefixes sent, received and installed, the last error), the prefixes\n" +
			"this host announces, and the routes learned from peers that are not installed, with the reason.\n" +
			"-o json prints the speaker's status as the daemon reports it.",
		example: "  guestnet bgp\n  guestnet bgp --netns lab -o json",
		exits:   "0 shown, 1 error (no guestnet serve runs here, its config has no bgp section)",
	},
	"doctor": {
		example: "  guestnet doctor\n  guestnet doctor lab --config /etc/guestnet",
		exits:   "0 no findings, or info only; 1 warnings or errors found, or the check failed",
	},
	"trace": {
		example: "  guestnet trace 10.99.0.10 198.51.100.7 tcp/443\n  guestnet trace fd42:99::10 2001:db8:ff::2 icmp\n  guestnet trace tap0 10.99.1.5 --port tap0 --live",
		exits:   "0 delivered, 1 dropped (or an error), 3 cannot tell (the last hop names what the walk cannot simulate)",
	},
	"forward": {
		long:    "Edit a network's port forwards in its spec file (the file stays the truth; then guestnet apply).",
		example: "  guestnet forward add web --file /etc/guestnet/web.yaml --port 8080 --to 10.99.3.10:80\n  guestnet forward list --file /etc/guestnet/web.yaml",
		exits:   "0 done, 1 error (a network the file does not declare, no such forward)",
	},
	"add": {
		long:    "Add a port forward to a network in its spec file. The file is rewritten in place;\nguestnet plan shows the change, guestnet apply makes it.",
		example: "  guestnet forward add web --file /etc/guestnet/web.yaml --port 8080 --to 10.99.3.10:80 --from 203.0.113.0/24",
		exits:   "0 added, 1 error (a network the file does not declare, a bad port or address)",
	},
	"rm": {
		long:    "Remove a port forward (by protocol and port, as written) from a network in its spec file.",
		example: "  guestnet forward rm web --file /etc/guestnet/web.yaml --port 8080",
		exits:   "0 removed, 1 error (a network the file does not declare, no such forward)",
	},
	"list": {
		long:    "List the port forwards a spec file declares, of one network or all.",
		example: "  guestnet forward list --file /etc/guestnet/web.yaml\n  guestnet forward list web --file /etc/guestnet/web.yaml -o json",
		exits:   "0 listed, 1 error (a network the file does not declare, a bad file)",
	},
	"import": {
		long:    "Print the spec for networks defined in another tool. Nothing is written or applied: read it,\nsave it, then guestnet plan and apply.",
		example: "  virsh net-dumpxml default | guestnet import libvirt - > /etc/guestnet/default.yaml",
		exits:   "0 printed, 1 error (see the subcommand)",
	},
	"libvirt": {
		long: "Print the spec for a libvirt network (a file, - for stdin) or for every *.xml of a directory\n" +
			"(--all; libvirt keeps them in /etc/libvirt/qemu/networks), as one networks: mapping. Forward\n" +
			"modes nat, route, open, bridge and none (isolated) convert, with the bridge, MTU, addresses,\n" +
			"DHCP ranges and hosts, and the DNS domain and forwarders. What guestnet leaves out is a\n" +
			"warning on stderr, naming the element and line; what it cannot do (macvtap, hostdev,\n" +
			"virtualport, QoS, VLANs, TFTP, ...) is an error, and then nothing is printed.",
		example: "  guestnet import libvirt /etc/libvirt/qemu/networks/default.xml\n" +
			"  virsh net-dumpxml default | guestnet import libvirt -\n" +
			"  guestnet import libvirt --all /etc/libvirt/qemu/networks > /etc/guestnet/libvirt.yaml",
		exits: "0 printed (warnings, if any, on stderr), 1 a network cannot be imported (each error names file and line)",
	},
}

// document fills each command's Long (with its exit codes) and Example
// from help, and fails loudly when a command has none: every command must
// say how it is called.
func document(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sc := range c.Commands() {
			walk(sc)
		}
		if c == root || c.Name() == "help" || c.Name() == "completion" || c.Parent() != nil && c.Parent().Name() == "completion" {
			return
		}
		h, ok := help[c.Name()]
		if !ok {
			panic("guestnet: command " + c.CommandPath() + " has no help text")
		}
		long := h.long
		if long == "" {
			long = c.Long
		}
		if long == "" {
			long = c.Short
		}
		c.Long = long + "\n\nExit codes: " + h.exits + "."
		c.Example = h.example
	}
	walk(root)
}

// version is the module version and the VCS commit the binary was built
// from, as the Go toolchain recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		case "vcs.time":
			when = ", " + s.Value
		}
	}
	if rev == "" {
		return v + " (commit unknown)"
	}
	return fmt.Sprintf("%s (commit %s%s%s)", v, rev, when, modified)
}
