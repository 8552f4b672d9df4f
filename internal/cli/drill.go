package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
)

func newDrill(stdout, stderr io.Writer) *cobra.Command {
	var path string
	var only []string
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "drill -c FILE (--dry-run | --only GROUP --yes)",
		Short: "Rehearse the shutdown: simulate all of it, or run it for real on some groups",
		Long: `drill proves the plan before an outage.

  --dry-run        walks the whole plan against the live targets without
                   changing anything: each guest's state is read and the
                   step reports what it would do.
  --only GROUP     runs the plan for real, but only for the guests of GROUP
                   (repeatable) and the hooks before them; hosts are left
                   alone. Guests really shut down: --yes is required.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun && len(only) == 0 {
				return &exitError{code: 2, err: errors.New("say --dry-run, or --only GROUP to rehearse for real")}
			}
			if !dryRun && !yes {
				return &exitError{code: 2, err: fmt.Errorf("drill --only %s shuts those guests down for real: add --yes", strings.Join(only, ","))}
			}
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			return drill(cmd.Context(), stdout, newLogger(stderr, c.Log), c, only, dryRun)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringSliceVar(&only, "only", nil, "run only this group's guests, for real (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "simulate the whole plan; change nothing")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm a real drill")
	return cmd
}

func drill(ctx context.Context, out io.Writer, log *slog.Logger, c *config.Config, only []string, dryRun bool) error {
	fleet := app.NewFleet(c, log)
	defer fleet.Close()
	p, problems, errs := app.BuildPlan(ctx, c, fleet, nil)
	for _, e := range errs {
		fmt.Fprintf(out, "unreachable: %v\n", e)
	}
	for _, pr := range problems {
		fmt.Fprintf(out, "%s\n", pr)
	}
	if plan.HasErrors(problems) {
		return &exitError{code: 2, err: errors.New("the plan has errors (listed above)")}
	}
	for _, g := range only {
		if !p.HasGroup(g) {
			return &exitError{code: 2, err: fmt.Errorf("--only %s: no such group in the plan", g)}
		}
	}
	pv := newProgress(out)
	var hooks plan.HookFunc
	if !dryRun {
		hooks = app.RunHook(c) // a real drill runs the hooks before its groups
	}
	opts := plan.ExecOptions{DryRun: dryRun, Only: only, Log: log, OnEvent: pv.event, Hooks: hooks}
	if !dryRun {
		// Journaled, so that `sundown restore` brings the groups back.
		j, err := plan.OpenJournal(app.JournalPath(c))
		if err != nil {
			return err
		}
		defer j.Close()
		opts.Journal = j
	}
	rep, err := plan.Execute(ctx, p, fleet.Targets(), opts)
	pv.close()
	if err != nil {
		return err
	}
	failed := rep.Failed()
	fmt.Fprintf(out, "\ndrill %s: %d steps, %d failed, %s\n", map[bool]string{true: "(dry run)", false: "(real)"}[dryRun],
		len(rep.Steps), len(failed), rep.Ended.Sub(rep.Started).Round(100e6))
	for _, f := range failed {
		fmt.Fprintf(out, "  FAILED %s: %s\n", f.Name, f.Err)
	}
	if len(failed) > 0 || len(errs) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("the drill found %d failed step(s) and %d unreachable target(s)", len(failed), len(errs))}
	}
	return nil
}
