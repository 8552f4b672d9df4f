package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/api"
	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
)

// apiURL is the daemon's API base URL from the config (or --url).
func apiURL(c *config.Config, override string) (string, error) {
	if override != "" {
		return strings.TrimRight(override, "/"), nil
	}
	if c.API.Listen == "off" {
		return "", &exitError{code: 2, err: errors.New("the API is off in this config (api.listen: off)")}
	}
	return "http://" + c.API.Listen, nil
}

func newStatus(stdout io.Writer) *cobra.Command {
	var path, url string
	cmd := &cobra.Command{
		Use:   "status -c FILE",
		Short: "The green light: each UPS and target, from the running daemon",
		Long: `status asks the running daemon (its local API, api.listen) how things are:
each UPS (reached, on line or battery, charge, runtime), each target
(reached by the last discovery), the decision, notification channels, and
the run in progress. Exit 0 when all is well, 1 when something needs
attention, 2 when the daemon cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c config.Config
			if url == "" {
				cc, err := loadConfig(path)
				if err != nil {
					return err
				}
				c = *cc
			}
			base, err := apiURL(&c, url)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := api.FetchStatus(ctx, base)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("daemon at %s: %w", base, err)}
			}
			if bad := printStatus(stdout, st); bad > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d thing(s) need attention", bad)}
			}
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVar(&url, "url", "", "the daemon's API base URL (default from the config's api.listen)")
	return cmd
}

// printStatus prints the status for people and returns how many things
// are not OK.
func printStatus(w io.Writer, st api.Status) int {
	bad := 0
	mark := func(ok bool) string {
		if ok {
			return "ok  "
		}
		bad++
		return "FAIL"
	}
	fmt.Fprintf(w, "decision: %s\n", st.Decision.Summary)
	for _, u := range st.UPS {
		line := fmt.Sprintf("%s ups %-12s %s", mark(u.Reached && u.Comm == "ok" && !u.Critical && !u.OnBattery), u.Name, u.Summary)
		if u.ChargePercent != nil {
			line += fmt.Sprintf(", charge %.0f %%", *u.ChargePercent)
		}
		if u.RuntimeSeconds != nil {
			line += fmt.Sprintf(", runtime %.0f s", *u.RuntimeSeconds)
		}
		fmt.Fprintln(w, line)
	}
	if p := st.Plan; p != nil {
		for _, t := range p.Targets {
			if t.Reachable {
				fmt.Fprintf(w, "%s target %-9s reachable: %d guests, %d hosts planned\n", mark(true), t.Name, t.Guests, t.Hosts)
			} else {
				fmt.Fprintf(w, "%s target %-9s unreachable: %s\n", mark(false), t.Name, t.Error)
			}
		}
		fmt.Fprintf(w, "plan: %d steps, estimated %.0f s\n", p.Steps, p.MakespanSeconds)
	}
	for _, ch := range st.Channels {
		if ch.Down {
			fmt.Fprintf(w, "%s notify %-9s down: %s\n", mark(false), ch.Name, ch.LastError)
		} else {
			fmt.Fprintf(w, "%s notify %-9s up\n", mark(true), ch.Name)
		}
	}
	if r := st.Restore; r != nil {
		what := "starting"
		switch {
		case r.Waiting != "":
			what = "waiting — " + r.Waiting
		case !r.Auto:
			what = "run sundown restore"
		}
		fmt.Fprintf(w, "%s restore due: %s\n", mark(false), what)
	}
	if sh := st.Shutdown; sh != nil {
		fmt.Fprintf(w, "last run: %s %s (%d done, %d failed, %d running)\n", sh.Kind, sh.State,
			sh.Counts["done"], sh.Counts["failed"], sh.Counts["running"])
		if sh.Counts["failed"] > 0 {
			bad++
		}
	}
	return bad
}

func newTrigger(stdout io.Writer) *cobra.Command {
	var path, url, kind, reason string
	cmd := &cobra.Command{
		Use:   "trigger -c FILE --kind onbattery|shutdown|clear --reason TEXT",
		Short: "Feed an external power signal (PowerChute, a UPS card) into the running daemon",
		Long: `trigger is for power sources that can only run a script or call a URL. It
sets the config's trigger UPS (ups: - name: …, trigger: {}) through the
daemon's API, with the token from api.token_file:

  onbattery   mains failed: the policy's delays, runtime budget and
              min_supplies apply as for a NUT UPS
  shutdown    shut down now (the UPS reads on battery, low battery)
  clear       mains is back (a started shutdown still runs to its end)

The same call as HTTP: POST /api/v1/trigger with {"kind": …, "reason": …}
and the header Authorization: Bearer TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			base, err := apiURL(c, url)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := api.PostTrigger(ctx, base, c.API.Token.Reveal(), api.TriggerRequest{Kind: kind, Reason: reason, Source: "sundown trigger"}); err != nil {
				return fmt.Errorf("trigger: %w", err)
			}
			fmt.Fprintf(stdout, "trigger %s accepted\n", kind)
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVar(&url, "url", "", "the daemon's API base URL (default from the config's api.listen)")
	cmd.Flags().StringVar(&kind, "kind", "", "onbattery, shutdown or clear")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the logs and notifications")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}

func newRestore(stdout, stderr io.Writer) *cobra.Command {
	var path string
	var only []string
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "restore -c FILE (--dry-run | --yes) [--only GROUP]",
		Short: "Bring back what the last shutdown, shed stage or drill turned off, in reverse order",
		Long: `restore reads the journal: every shutdown, shed stage and drill since the
last restore. It wakes the hosts that were shut down (Wake-on-LAN or IPMI
from targets[].wake, or waits for them to boot on AC power), waits until
their hypervisors answer, takes them out of maintenance mode, then powers
the guests on in the reverse order of their shutdown, each group waiting
for its dependencies to be ready (groups[].ready). Guests that were off
before the shutdown stay off. The daemon does the same by itself once the
power has been back for restore.after with restore.min_charge.

  --dry-run      print the restore plan and what each step would do
  --only GROUP   restore only these groups' guests (and the hosts they need)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun && !yes {
				return &exitError{code: 2, err: errors.New("restore powers hosts and guests on: add --yes, or --dry-run to see the plan")}
			}
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			return restore(cmd.Context(), stdout, newLogger(stderr, c.Log), c, only, dryRun)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringSliceVar(&only, "only", nil, "restore only this group's guests (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be done; change nothing")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the restore")
	return cmd
}

func restore(ctx context.Context, out io.Writer, log *slog.Logger, c *config.Config, only []string, dryRun bool) error {
	journal := app.JournalPath(c)
	p, of, err := app.PlanRestore(c, journal, only)
	if errors.Is(err, app.ErrNothingToRestore) {
		fmt.Fprintln(out, err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "restore of run %s: %d steps\n", of, len(p.Steps))
	fleet := app.NewFleet(c, log)
	defer fleet.Close()
	opts := plan.ExecOptions{DryRun: dryRun, Log: log}
	pv := newProgress(out)
	opts.OnEvent = pv.event
	if !dryRun {
		j, err := plan.OpenJournal(journal)
		if err != nil {
			return err
		}
		defer j.Close()
		opts.Journal = j
	}
	rep, err := plan.Restore(ctx, p, fleet.Targets(), app.NewRestoreHooks(c, fleet, log, of), opts)
	pv.close()
	if err != nil {
		return err
	}
	failed := rep.Failed()
	fmt.Fprintf(out, "\nrestore%s: %d steps, %d did not come back, %s\n", map[bool]string{true: " (dry run)", false: ""}[dryRun],
		len(rep.Steps), len(failed), rep.Ended.Sub(rep.Started).Round(100e6))
	for _, s := range rep.Steps {
		if s.Outcome == plan.OutcomeSkipped && s.Note != "" && s.Kind == plan.StepGuestStart {
			fmt.Fprintf(out, "  left off   %s: %s\n", s.Name, s.Note)
		}
	}
	for _, f := range failed {
		fmt.Fprintf(out, "  NOT BACK   %s: %s\n", f.Name, f.Err)
	}
	if len(failed) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d step(s) of the restore failed", len(failed))}
	}
	return nil
}
