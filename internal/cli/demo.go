package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/policy"
)

func newDemo(stdout, stderr io.Writer) *cobra.Command {
	var speed float64
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch a whole simulated power outage, in about half a minute",
		Long: `demo starts an in-process NUT server with a simulated UPS, points sundown at
it over the real NUT protocol, and plays an outage: mains fails, the battery
drains (time compressed: the battery drains SPEED times faster than real), the
runtime budget is reached and sundown decides to shut down, sets FSD as the
UPS's primary, and holds that decision when mains returns. Nothing on this
machine is touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.DiscardHandler)
			if verbose {
				log = newLogger(stderr, config.Log{Level: "debug"})
			}
			return runDemo(cmd.Context(), stdout, log, speed)
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 60, "how many times faster than real the battery drains")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log sundown's internals to stderr")
	return cmd
}

const demoPassword = "demo-secret"

// runDemo plays the scripted outage against an in-process NUT server.
func runDemo(ctx context.Context, w io.Writer, log *slog.Logger, speed float64) error {
	out := &lockedWriter{w: w} // the script and the view both print
	srv := nuttest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("demo: start simulated NUT server: %w", err)
	}
	defer srv.Close()
	srv.AddUser("sundown", demoPassword, nuttest.Perms{Upsmon: "primary"})
	ups := map[string]string{
		"ups.status": "OL CHRG", "battery.charge": "100", "battery.runtime": "1500",
		"ups.load": "38", "device.mfr": "Simulated", "device.model": "Smart-UPS 1500 (demo)",
	}
	srv.AddUPS("rack", "demo UPS", ups)

	c := demoConfig(srv.Addr())
	a, err := app.New(c, log, app.Options{Act: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "sundown demo: a simulated UPS on an in-process NUT server at %s.\n", srv.Addr())
	fmt.Fprintf(out, "Policy: shut down when battery runtime < shutdown %s + margin %s. The battery drains %gx faster than real.\n\n",
		c.Power.ShutdownDuration, c.Power.RuntimeMargin, speed)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Line mode (out is not a terminal): the story scrolls with its narration.
	v := newView(out, "sundown demo")
	var wg sync.WaitGroup
	var scriptErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		scriptErr = demoScript(ctx, out, srv, a, speed)
	}()
	err = watchApp(ctx, a, v)
	wg.Wait()
	if scriptErr != nil {
		return scriptErr
	}
	return err
}

// lockedWriter serializes writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func demoConfig(addr string) *config.Config {
	one := 1
	yes := true
	c := &config.Config{
		Log: config.Log{Level: "info", Format: "text"},
		Power: config.Power{
			MinSupplies:      &one,
			PollInterval:     config.Duration(250 * time.Millisecond),
			Deadtime:         config.Duration(15 * time.Second),
			NoCommWarn:       config.Duration(5 * time.Minute),
			Debounce:         config.Duration(2 * time.Second),
			RuntimeMargin:    config.Duration(2 * time.Minute),
			ShutdownDuration: config.Duration(5 * time.Minute),
		},
		UPS: []config.UPS{{
			Name: "rack",
			NUT: &config.NUT{Address: addr, UPS: "rack", Username: "sundown",
				Password: config.NewSecret(demoPassword), Mode: "primary"},
			PowerValue: &one, Deadtime: config.Duration(15 * time.Second),
			OffGrace: config.Duration(30 * time.Second), AlarmCritical: &yes,
		}},
	}
	return c
}

// demoScript drives the simulated UPS: mains fails, the battery drains
// until sundown decides, then mains returns and the decision holds.
func demoScript(ctx context.Context, out io.Writer, srv *nuttest.Server, a *app.App, speed float64) error {
	step := func(d time.Duration) bool { return sleep(ctx, d) }
	if !step(2 * time.Second) {
		return nil
	}
	fmt.Fprintln(out, "\n>>> The mains power fails.")
	srv.SetVars("rack", map[string]string{"ups.status": "OB DISCHRG"})
	runtime, charge := 1500.0, 100.0
	const tick = 250 * time.Millisecond
	deadline := time.Now().Add(2 * time.Minute)
	for a.Snapshot().Decision.Kind != policy.Shutdown {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: no shutdown decision within 2 minutes: %s", a.Snapshot().Decision)
		}
		if !step(tick) {
			return nil
		}
		runtime = max(0, runtime-speed*tick.Seconds())
		charge = max(0, charge-speed*tick.Seconds()*100/1500)
		srv.SetVars("rack", map[string]string{
			"battery.runtime": strconv.Itoa(int(runtime)),
			"battery.charge":  strconv.Itoa(int(charge)),
		})
	}
	fmt.Fprintln(out, "\n>>> sundown decided to shut the site down and set FSD on the UPS as its primary.")
	fmt.Fprintln(out, "    (The ordered VM and host shutdown plan comes next in sundown's roadmap.)")
	if !step(2 * time.Second) {
		return nil
	}
	fmt.Fprintln(out, "\n>>> Mains power returns. The decision is latched: a started shutdown always finishes.")
	srv.SetVars("rack", map[string]string{"ups.status": "OL CHRG"})
	if !step(2 * time.Second) {
		return nil
	}
	d := a.Snapshot().Decision
	if d.Kind != policy.Shutdown {
		return fmt.Errorf("demo: the latch did not hold: %s", d)
	}
	fmt.Fprintf(out, "\nDemo finished: shutdown decided at %s and held after mains returned.\n", d.At.Format("15:04:05.0"))
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
