package main

import (
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/spec"
	"github.com/guestnet/guestnet/internal/state"
)

// complete gives the commands that take a network name its completion:
// the networks guestnet applied (from the state file: no namespace is
// entered, no root needed when the state is readable), or, for forward,
// those its --file declares; and the attached ports for detach/ifdown.
func complete(g *globals, root *cobra.Command) {
	networks := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, _ := g.applied()
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	ports := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return networks(cmd, args, "")
		case 1:
			st, err := state.Load(state.Path(g.stateDir, g.netns))
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return slices.Clone(st.Networks[args[0]].Ports), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	// attach's IFACE is any interface of the host: the shell's default.
	attachArgs := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return networks(cmd, args, "")
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	// destroy takes network names or spec files.
	destroyArgs := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		names, _ := g.applied()
		return names, cobra.ShellCompDirectiveDefault
	}
	declared := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		file, _ := cmd.Flags().GetString("file")
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		nets, err := spec.Parse(file, data)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return specNetworkNames(nets), cobra.ShellCompDirectiveNoFileComp
	}
	for _, c := range root.Commands() {
		switch c.Name() {
		case "qemu-script", "routes", "leases", "doctor":
			c.ValidArgsFunction = networks
		case "detach", "ifdown":
			c.ValidArgsFunction = ports
		case "attach", "ifup":
			c.ValidArgsFunction = attachArgs
		case "destroy":
			c.ValidArgsFunction = destroyArgs
		case "bgp":
			c.ValidArgsFunction = cobra.NoFileCompletions
		case "forward":
			for _, sc := range c.Commands() {
				sc.ValidArgsFunction = declared
			}
		}
	}
}
