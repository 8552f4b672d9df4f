package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
)

func newRun(stderr io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Run the daemon: watch the power and shut the site down when the policy says so",
		Long: `run is the daemon. It watches every UPS, keeps the shutdown plan and its
estimate current (so the runtime budget uses the real plan duration), and when
the policy decides, runs the plan to its end: guests in dependency order, then
hosts, the host carrying sundown last. It holds its NUT logins until the last
host step; as primary it sets FSD at once and sends ups_command at the end.

Once started, a shutdown always finishes. SIGTERM during a shutdown does not
abandon it: sundown finishes the plan first, then exits. After a SIGKILL or a
crash, the next start reads the journal and resumes the same run at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			log := newLogger(stderr, c.Log)
			var surface *operatorSurface
			a, err := app.New(c, log, app.Options{Act: true, OnStep: func(e plan.Event) {
				if surface != nil {
					surface.obs.OnStep(e)
				}
			}})
			if err != nil {
				return err
			}
			problems, errs := a.PlanOnce(cmd.Context())
			for _, e := range errs {
				log.Warn("target unreachable at startup; retrying while watching the power", "err", e)
			}
			for _, p := range problems {
				fmt.Fprintf(stderr, "plan: %s\n", p)
			}
			if id, pending := app.PendingRun(app.JournalPath(c)); pending {
				log.Warn("an unfinished shutdown is in the journal: resuming it whatever the plan's problems", "run", id)
			} else if plan.HasErrors(problems) {
				return &exitError{code: 2, err: errors.New("the shutdown plan has errors (all listed above); fix the config")}
			}
			if surface, err = newOperatorSurface(a, log); err != nil {
				return err
			}
			// The API serves until the daemon returns, so the status page
			// shows a shutdown that SIGTERM did not stop.
			apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(cmd.Context()))
			var apiDone chan error
			if surface != nil {
				apiDone = make(chan error, 1)
				go func() { apiDone <- surface.serve(apiCtx) }()
				log.Info("status page and API", "url", "http://"+surface.ln.Addr().String()+"/")
			}
			log.Info("sundown running", "ups", len(c.UPS), "targets", len(c.Targets), "journal", app.JournalPath(c))
			sdNotify("READY=1")
			err = a.Run(cmd.Context())
			sdNotify("STOPPING=1")
			stopAPI()
			if apiDone != nil {
				<-apiDone
			}
			return err
		},
	}
	configFlag(cmd, &path)
	return cmd
}
