package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
)

func newPlan(stdout, stderr io.Writer) *cobra.Command {
	var path, journal string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plan -c FILE",
		Short: "Show the ordered shutdown timeline, its critical path, makespan and battery margin",
		Long: `plan connects to every target, discovers guests and hosts, builds the
shutdown plan from the config and prints it as a timeline: groups in order,
parallel lanes under the caps, each step's expected duration (learned from
past runs in the journal, else its timeout), the critical path, the makespan
and its lower bound, and the margin against the live battery runtime.
It changes nothing. Exit 2 when the plan has errors (all are listed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			log := newLogger(stderr, c.Log)
			return showPlan(cmd.Context(), stdout, stderr, log, c, journal, asJSON)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	cmd.Flags().StringVar(&journal, "journal", app.DefaultJournal, "journal whose past runs give learned durations")
	return cmd
}

func showPlan(ctx context.Context, stdout, stderr io.Writer, log *slog.Logger, c *config.Config, journal string, asJSON bool) error {
	fleet := app.NewFleet(c, log)
	defer fleet.Close()
	p, problems, errs := app.BuildPlan(ctx, c, fleet, app.LearnedDurations(journal))
	for _, e := range errs {
		fmt.Fprintf(stderr, "unreachable: %v\n", e)
	}
	for _, pr := range problems {
		fmt.Fprintf(stderr, "%s\n", pr)
	}
	states := app.ReadOnce(ctx, c)
	runtime, _ := app.MinRuntime(states)
	s := p.Estimate(p.Caps)
	opts := plan.TextOptions{Runtime: runtime, Margin: c.Power.RuntimeMargin.D()}
	if asJSON {
		err := p.JSON(stdout, s, opts)
		if err != nil {
			return err
		}
	} else if err := p.Text(stdout, s, opts); err != nil {
		return err
	}
	if plan.HasErrors(problems) {
		return &exitError{code: 2, err: fmt.Errorf("the plan has errors (listed above)")}
	}
	if len(errs) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d target(s) unreachable: their guests are missing from this plan", len(errs))}
	}
	return nil
}
