package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/guestnet/guestnet/internal/libvirt"
)

// importCmd converts other tools' network definitions into a spec, printed
// on stdout: nothing is written and nothing is applied.
func importCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "import libvirt",
		Short: "Print the spec for networks defined in another tool (libvirt)",
	}
	var all string
	lv := &cobra.Command{
		Use:   "libvirt FILE|-|--all DIR",
		Short: "Print the spec for libvirt networks (virsh net-dumpxml NAME, /etc/libvirt/qemu/networks)",
		Args: func(cmd *cobra.Command, args []string) error {
			if all != "" && len(args) > 0 || all == "" && len(args) != 1 {
				return errors.New("want one FILE (- for stdin), or --all DIR")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.json() {
				return errors.New("guestnet import prints a spec, which is YAML: -o json does not apply")
			}
			files := args
			if all != "" {
				var err error
				if files, err = xmlFiles(all); err != nil {
					return err
				}
			}
			var results []*libvirt.Result
			var errs []error
			for _, f := range files {
				r, err := convertFile(f, cmd.InOrStdin())
				if r != nil {
					for _, w := range r.Warnings {
						fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
					}
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				results = append(results, r)
			}
			if err := libvirt.CheckAll(results); err != nil {
				errs = append(errs, err)
			}
			if len(errs) > 0 {
				// Nothing on stdout: a spec without the refused networks
				// would, applied, look like the whole of them.
				failed := map[string]bool{}
				for _, e := range flattenErrs(errors.Join(errs...)) {
					fmt.Fprintln(cmd.ErrOrStderr(), "error:", e)
					var d *libvirt.Diag
					if errors.As(e, &d) {
						failed[d.File] = true
					} else {
						failed[e.Error()] = true
					}
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "guestnet: %d of %d libvirt networks cannot be imported as written; nothing printed\n", len(failed), len(files))
				return exitError{1}
			}
			_, err := io.WriteString(g.out, libvirt.Render(results))
			return err
		},
	}
	lv.Flags().StringVar(&all, "all", "", "convert every *.xml of this directory (libvirt's is /etc/libvirt/qemu/networks) into one spec")
	c.AddCommand(lv)
	return c
}

// convertFile converts one file, or stdin for "-".
func convertFile(f string, stdin io.Reader) (*libvirt.Result, error) {
	var data []byte
	var err error
	name := f
	if f == "-" {
		name = "(stdin)"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(f)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return libvirt.Convert(name, data)
}

// xmlFiles lists a directory's *.xml, sorted.
func xmlFiles(dir string) ([]string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("import --all: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("import --all %s: not a directory (for one file, leave out --all)", dir)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.xml"))
	if len(files) == 0 {
		return nil, fmt.Errorf("import --all %s: no *.xml in it (libvirt keeps its networks in /etc/libvirt/qemu/networks)", dir)
	}
	slices.Sort(files)
	return files, nil
}

// flattenErrs lists the leaves of joined errors, one finding each.
func flattenErrs(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrs(e)...)
		}
		return out
	}
	return []error{err}
}
