package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/power"
)

// ReadOnce reads every UPS once (no LOGIN) and returns their states, for
// commands that need the live battery without running the daemon.
func ReadOnce(ctx context.Context, c *config.Config) []power.State {
	out := make([]power.State, 0, len(c.UPS))
	for _, u := range c.UPS {
		tr := power.NewTracker(u.Name, power.TrackerOptions{})
		var src source
		switch {
		case u.NUT != nil:
			nu := *u.NUT
			nu.Username = "" // a one-off read takes no login
			uu := u
			uu.NUT = &nu
			src = newNUTSource(uu, time.Second, discard)
		case u.Apcupsd != nil:
			src = newApcupsdSource(u, time.Second)
		default:
			// A trigger UPS has no battery to read: it is whatever the
			// last trigger said, on line until told otherwise.
			src = newTriggerSource(u, time.Second)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got := false
		src.run(rctx, func(up update) {
			if got {
				return
			}
			got = true
			if up.err != nil {
				tr.Fail(up.at, up.stale, up.err)
			} else {
				r, _ := power.ReadingFromVars(up.at, up.vars)
				tr.Observe(r)
			}
			cancel()
		})
		cancel()
		out = append(out, tr.State())
	}
	return out
}

// MinRuntime is the shortest known battery runtime among supplying UPSes.
func MinRuntime(states []power.State) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for _, s := range states {
		if s.Comm != power.CommOK || s.Runtime < 0 {
			continue
		}
		if !ok || s.Runtime < best {
			best, ok = s.Runtime, true
		}
	}
	return best, ok
}

var discard = slog.New(slog.DiscardHandler)
