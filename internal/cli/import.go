package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/importer"
)

func newImport(stdout, stderr io.Writer) *cobra.Command {
	var from, pwDir string
	cmd := &cobra.Command{
		Use:   "import [FILE]",
		Short: "Turn an upsmon.conf or NutClient-ESXi settings into a sundown config",
		Long: `import reads NUT's upsmon.conf, or the UserVars of NutClient-ESXi as printed by
'esxcli system settings advanced list -d' or 'esxcfg-advcfg -g /UserVars/Nut...',
and prints the equivalent sundown config on stdout. FILE "-" or none reads stdin.

Passwords are never copied: the config names a password file per UPS for you to
fill in. Everything sundown cannot express is listed on stderr with its line.

  sundown import /etc/nut/upsmon.conf > /etc/sundown/sundown.yaml
  ssh root@esxi esxcli system settings advanced list -d | sundown import > sundown.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			source := "stdin"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("import: %w", err)}
				}
				defer f.Close()
				in, source = f, args[0]
			}
			res, err := importer.Import(in, importer.Options{
				Format:      importer.Format(from),
				PasswordDir: pwDir,
				Source:      source,
			})
			if res != nil {
				for _, w := range res.Warnings {
					fmt.Fprintf(stderr, "sundown import: %s: %s\n", source, w)
				}
			}
			if err != nil {
				if errors.Is(err, importer.ErrNoUPS) {
					err = fmt.Errorf("%w in %s (no usable MONITOR line or NutUpsName)", err, source)
				}
				return &exitError{code: 2, err: err}
			}
			if _, err := stdout.Write(res.YAML); err != nil {
				return fmt.Errorf("import: write: %w", err)
			}
			if len(res.PasswordFiles) > 0 {
				fmt.Fprintln(stderr, "sundown import: the passwords were not copied; create these files (mode 600), one password each:")
				for _, p := range res.PasswordFiles {
					fmt.Fprintf(stderr, "  %s   (UPS %s)\n", p.Path, p.UPS)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", string(importer.Auto), "input format: auto, upsmon or esxi")
	cmd.Flags().StringVar(&pwDir, "password-dir", importer.DefaultPasswordDir, "folder of the password files the config names")
	return cmd
}
