package cli

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
)

func newWatch(stdout, stderr io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "watch -c FILE",
		Short: "Watch every UPS live and show what the policy would decide, and why",
		Long: `watch reads every configured UPS and shows its state and the decision the
policy would take right now, with its reasons ("shutdown in 95 s if power stays
out: runtime 515 s, budget plan 300 s + margin 120 s"). It never acts: it sets
no FSD and shuts nothing down. It does hold a NUT LOGIN when credentials are
configured, like the daemon would.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(path)
			if err != nil {
				return err
			}
			a, err := app.New(c, newLogger(stderr, c.Log), app.Options{})
			if err != nil {
				return err
			}
			title := fmt.Sprintf("sundown watch — %s", path)
			return watchApp(cmd.Context(), a, newView(stdout, title))
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// watchApp runs a until ctx ends, showing every snapshot.
func watchApp(ctx context.Context, a *app.App, v *view) error {
	snaps, cancel := a.Subscribe()
	defer cancel()
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = a.Run(ctx)
		stop()
	}()
	for {
		select {
		case s := <-snaps:
			v.show(s)
		case <-ctx.Done():
			wg.Wait()
			return runErr
		}
	}
}
