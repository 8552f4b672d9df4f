// Package cli implements sundown's command line: one file per command, all
// wired under one root by Main. Commands build their work from internal/app
// and print for people; they hold no logic of their own beyond that.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/config"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs the sundown command line and returns the process exit code:
// 0 success, 1 failure, 2 bad usage or config.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "sundown:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return 2
	}
	return 1
}

// NewRoot returns sundown's root command with every subcommand, for tools
// that document the command line (dist/deb's man page generator). The
// daemon and tests use Main.
func NewRoot(stdout, stderr io.Writer) *cobra.Command { return newRoot(stdout, stderr) }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sundown",
		Short: "Shut a virtualized site down in order, in time, when the UPS says so",
		Long: `sundown watches your UPSes (NUT upsd, apcupsd) and, when the power fails,
shuts VMs and hosts down in dependency order within the battery's runtime.

Start with:  sundown demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newDemo(stdout, stderr),
		newWatch(stdout, stderr),
		newCheck(stdout),
		newPlan(stdout, stderr),
		newRun(stderr),
		newDrill(stdout, stderr),
		newRestore(stdout, stderr),
		newStatus(stdout),
		newTrigger(stdout),
		newImport(stdout, stderr),
	)
	return root
}

// loadConfig loads the file named by -c and reports every problem at once.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, &exitError{code: 2, err: errors.New("no config file: give -c FILE (see examples/)")}
	}
	return config.Load(path)
}

// newLogger builds the process logger from the config's log section.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func configFlag(cmd *cobra.Command, p *string) {
	def := os.Getenv("SUNDOWN_CONFIG")
	cmd.Flags().StringVarP(p, "config", "c", def, "config file (default $SUNDOWN_CONFIG)")
}
