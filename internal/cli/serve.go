package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sundown-ups/sundown/internal/api"
	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/metrics"
)

// operatorSurface is what `sundown run` serves beside the daemon: the
// API, the status page and /metrics, on cfg.api.listen.
type operatorSurface struct {
	srv *api.Server
	ln  net.Listener
	obs *metrics.Observer
}

// newOperatorSurface builds the API and metrics of a; nil when the API is
// off. The listener is opened here, so that a port in use fails startup.
func newOperatorSurface(a *app.App, log *slog.Logger) (*operatorSurface, error) {
	c := a.Config()
	if c.API.Listen == "off" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	obs, err := metrics.Register(reg, metrics.Sources{
		Snapshot: a.Snapshot,
		Channels: func() []metrics.ChannelStat {
			var out []metrics.ChannelStat
			for _, s := range a.NotifyStats() {
				out = append(out, metrics.ChannelStat{Name: s.Name, Sent: s.Sent, Failed: s.Failed, Down: s.Down})
			}
			return out
		},
		Version: Version, Runtime: true,
	})
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.API.AuditLog), 0o700); err != nil {
		return nil, fmt.Errorf("api audit log: %w", err)
	}
	audit, err := os.OpenFile(c.API.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api audit log: %w", err)
	}
	srv := api.New(a, api.Actions{
		Trigger: func(_ context.Context, r api.TriggerRequest) error {
			err := a.Trigger(r.Kind, r.Reason, "")
			if errors.Is(err, app.ErrNoTrigger) {
				return fmt.Errorf("%w: %v", api.ErrInvalid, err)
			}
			return err
		},
		Drill: func(ctx context.Context, r api.DrillRequest) (string, error) {
			err := a.Drill(ctx, r.Only, r.DryRun)
			switch {
			case errors.Is(err, app.ErrBusy):
				return "", fmt.Errorf("%w: %v", api.ErrConflict, err)
			case err != nil:
				return "", fmt.Errorf("%w: %v", api.ErrInvalid, err)
			}
			return "started", nil
		},
		Ack: func(_ context.Context, r api.AckRequest) error {
			a.Ack(r.ID, r.Note, r.By)
			return nil
		},
	}, api.Options{
		Token: c.API.Token, AuditLog: audit, RatePerMin: c.API.RatePerMin, Burst: c.API.Burst,
		Metrics: metrics.Handler(reg), Log: log.With("part", "api"),
		Channels: func() []api.ChannelHealth {
			var out []api.ChannelHealth
			for _, s := range a.NotifyStats() {
				out = append(out, api.ChannelHealth{Name: s.Name, Down: s.Down, LastError: s.LastError,
					LastErrorAt: s.LastErrorAt, Failed: int(s.GaveUp), Pending: s.Pending})
			}
			return out
		},
	})
	ln, err := net.Listen("tcp", c.API.Listen)
	if err != nil {
		audit.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	return &operatorSurface{srv: srv, ln: ln, obs: obs}, nil
}

// serve serves until ctx ends.
func (o *operatorSurface) serve(ctx context.Context) error { return o.srv.Serve(ctx, o.ln) }

// sdNotify tells systemd (Type=notify) that sundown is ready; without
// NOTIFY_SOCKET it does nothing.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" || runtime.GOOS != "linux" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
