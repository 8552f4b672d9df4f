// Command sundown shuts a virtualized site down in order and in time when
// the UPS reports a power failure, and brings it back when mains returns.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sundown-ups/sundown/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
