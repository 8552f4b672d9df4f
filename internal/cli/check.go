package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newCheck(stdout io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Check a config file and list every problem in it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: ok (%d UPS", path, len(c.UPS))
			if len(c.UPS) != 1 {
				fmt.Fprint(stdout, "es")
			}
			fmt.Fprintln(stdout, ")")
			return nil
		},
	}
	configFlag(cmd, &path)
	return cmd
}
