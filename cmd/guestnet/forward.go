package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/model"
	"github.com/guestnet/guestnet/internal/spec"
)

func forwardCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "forward add|rm|list",
		Short: "Edit a network's port forwards in its spec file (the file stays the truth; then guestnet apply)",
	}
	var file string
	var f spec.ForwardEdit
	edit := func(add bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			if err := declared(file, data, args[0]); err != nil {
				return err
			}
			out, n, err := spec.EditForwards(file, data, args[0], f, add)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("forward rm: %s has no %s forward of port %s", args[0], f.Proto, f.Port)
			}
			tmp, err := os.CreateTemp(filepath.Dir(file), ".guestnet-edit-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := tmp.Write(out); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), file); err != nil {
				return err
			}
			verb := map[bool]string{true: "added", false: "removed"}[add]
			if g.json() {
				return g.printJSON(struct {
					File     string `json:"file"`
					Network  string `json:"network"`
					Action   string `json:"action"`
					Forwards int    `json:"forwards"`
				}{file, args[0], verb, n})
			}
			fmt.Fprintf(g.out, "%s %s in %s; `guestnet plan %s` shows the change, apply makes it\n", verb, plural(n, "forward"), file, file)
			return nil
		}
	}
	add := &cobra.Command{Use: "add NETWORK --file FILE --port PORT[-PORT] --to IP[:PORT]", Args: cobra.ExactArgs(1), RunE: edit(true),
		Short: "Add a port forward to a network in its spec file"}
	add.Flags().StringVar(&f.Proto, "proto", "tcp", "tcp or udp")
	add.Flags().StringVar(&f.Port, "port", "", "host port or range (8000-8010)")
	add.Flags().StringVar(&f.To, "to", "", "guest address, with :PORT to change the port")
	add.Flags().StringArrayVar(&f.From, "from", nil, "allowed source prefix (repeatable; default any)")
	add.Flags().StringArrayVar(&f.Listen, "listen", nil, "host address to listen on (repeatable; default all)")
	add.MarkFlagRequired("port")
	add.MarkFlagRequired("to")
	rm := &cobra.Command{Use: "rm NETWORK --file FILE --port PORT[-PORT]", Args: cobra.ExactArgs(1), RunE: edit(false),
		Short: "Remove a port forward from a network in its spec file"}
	rm.Flags().StringVar(&f.Proto, "proto", "tcp", "tcp or udp")
	rm.Flags().StringVar(&f.Port, "port", "", "the forward's port, as written in the file")
	rm.MarkFlagRequired("port")
	list := &cobra.Command{
		Use: "list [NETWORK] --file FILE", Args: cobra.MaximumNArgs(1),
		Short: "List the port forwards a spec file declares",
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(file)
			if err != nil {
				return err
			}
			if len(args) == 1 && !slices.ContainsFunc(s.Networks, func(n spec.Network) bool { return n.Name == args[0] }) {
				return unknownNetwork(args[0], specNetworkNames(s.Networks), "declared in "+file)
			}
			if g.json() {
				out := []forwardJSON{}
				for _, n := range s.Networks {
					if len(args) == 1 && n.Name != args[0] {
						continue
					}
					for _, fw := range n.Forwards {
						out = append(out, forwardJSON{Network: n.Name, PortForward: fw})
					}
				}
				return g.printJSON(out)
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NETWORK\tPROTO\tPORT\tTO\tFROM\tLISTEN")
			for _, n := range s.Networks {
				if len(args) == 1 && n.Name != args[0] {
					continue
				}
				for _, fw := range n.Forwards {
					port := fmt.Sprint(fw.PortFrom)
					if fw.PortTo != fw.PortFrom {
						port += fmt.Sprintf("-%d", fw.PortTo)
					}
					to := fw.To.String()
					if fw.ToPort != 0 {
						to += fmt.Sprintf(":%d", fw.ToPort)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, fw.Proto, port, to, join(fw.From, "any"), join(fw.Listen, "all"))
				}
			}
			return tw.Flush()
		},
	}
	for _, sc := range []*cobra.Command{add, rm, list} {
		sc.Flags().StringVar(&file, "file", "/etc/guestnet/guestnet.yaml", "the spec file that declares the network")
		c.AddCommand(sc)
	}
	return c
}

// forwardJSON is one forward of forward list -o json.
type forwardJSON struct {
	Network string `json:"network"`
	model.PortForward
}

// declared refuses a network the spec file does not declare.
func declared(file string, data []byte, name string) error {
	nets, err := spec.Parse(file, data)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(nets, func(n spec.Network) bool { return n.Name == name }) {
		return nil
	}
	return unknownNetwork(name, specNetworkNames(nets), "declared in "+file)
}

func specNetworkNames(nets []spec.Network) []string {
	var out []string
	for _, n := range nets {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

func join[T fmt.Stringer](xs []T, none string) string {
	if len(xs) == 0 {
		return none
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}
