package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
)

func newCheck(stdout io.Writer) *cobra.Command {
	var path, journal string
	var configOnly bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Verify a site: the config, every UPS and target, and the plan",
		Long: `check verifies a site without the daemon and says what to fix:

  - the config file (every problem listed at once);
  - every UPS: NUT (connection, STARTTLS, the login and for a primary the
    PRIMARY right; ups.status, battery.charge, battery.runtime; the
    ups_command among the UPS's commands), apcupsd (one status read);
  - every target: connection, credentials, inventory and, for vSphere, the
    privileges the plan needs on its VMs and hosts;
  - the plan: its problems, and whether its estimate fits the battery.

It changes nothing: no FSD, no instant command, no power operation; every
NUT login it takes is released before it ends. Checks run concurrently,
each bounded by --timeout.
Exit 0 when everything is ok (warnings allowed), 1 when a check failed,
2 when the config file has errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			if configOnly {
				fmt.Fprintf(stdout, "%s: ok (%d UPS", path, len(c.UPS))
				if len(c.UPS) != 1 {
					fmt.Fprint(stdout, "es")
				}
				fmt.Fprintln(stdout, ")")
				return nil
			}
			log := newLogger(cmd.ErrOrStderr(), c.Log)
			res := app.Check(cmd.Context(), c, log, app.CheckOptions{Timeout: timeout, History: app.LearnedDurations(journal)})
			return printCheck(stdout, path, c, res)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().BoolVar(&configOnly, "config-only", false, "only load and validate the config file; contact nothing")
	cmd.Flags().DurationVar(&timeout, "timeout", app.DefaultCheckTimeout, "bound of each check")
	cmd.Flags().StringVar(&journal, "journal", app.DefaultJournal, "journal whose past runs give learned durations for the estimate")
	return cmd
}

// printCheck prints one line per result and a summary, and returns an
// exit error when a check failed.
func printCheck(w io.Writer, path string, c *config.Config, res []app.CheckResult) error {
	fmt.Fprintf(w, "ok   config %s: %d UPS, %d %s\n", path, len(c.UPS), len(c.Targets), plural(len(c.Targets), "target", "targets"))
	failed, warned := 0, 0
	for _, r := range res {
		status := "ok"
		switch {
		case !r.OK:
			status = "FAIL"
			failed++
		case r.Warn:
			status = "warn"
			warned++
		}
		name := r.Kind
		if r.Name != "" {
			name += " " + r.Name
		}
		fmt.Fprintf(w, "%-4s %s: %s", status, name, r.What)
		if r.Fix != "" && (!r.OK || r.Warn) {
			fmt.Fprintf(w, " → fix: %s", r.Fix)
		}
		fmt.Fprintln(w)
	}
	ok := len(res) - failed - warned
	fmt.Fprintf(w, "%d %s: %d ok, %d %s, %d failed\n", len(res), plural(len(res), "check", "checks"),
		ok, warned, plural(warned, "warning", "warnings"), failed)
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d %s failed (see the fixes above)", failed, plural(failed, "check", "checks"))}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
