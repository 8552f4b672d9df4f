package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/apcupsd"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut"
)

// update is one reading (vars) or one failure (err) from a source.
type update struct {
	idx   int
	at    time.Time
	vars  map[string]string
	err   error
	stale bool // the server answered but has no fresh data
}

// source reads one UPS until ctx ends, reporting through emit.
type source interface {
	run(ctx context.Context, emit func(update))
}

// primary is a source that can raise FSD as the UPS's primary.
type primary interface {
	isPrimary() bool
	fsd(ctx context.Context) error
}

// pollVars are the variables read on every poll (one pipelined round trip;
// the device names are for the status page).
var pollVars = []string{"ups.status", "battery.charge", "battery.runtime", "ups.load", "ups.alarm", "device.mfr", "device.model"}

// nutSource polls one UPS on upsd. With credentials it LOGINs and holds the
// login for as long as it runs (the primary then waits for this site before
// cutting the UPS); it logs in again after every reconnect.
type nutSource struct {
	cfg  config.UPS
	poll time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	client *nut.Client // the live connection, for FSD

	lastVars  map[string]string // the last real reading (owned by run)
	waitSince time.Time         // when upsd started answering WAIT
}

// waitGrace is how long a "WAIT" status (upsd is back but its driver has
// not sent data yet: about 2 s after an upsd restart) keeps the last real
// reading, as upsmon keeps the last status on COMMOK. Past it, WAIT is
// silence.
const waitGrace = 5 * time.Second

// reconnectMax bounds the reconnect backoff: after a blip sundown must be
// back within a fraction of the deadtime, and a connection attempt to one
// upsd a second costs nothing.
const reconnectMax = time.Second

func newNUTSource(u config.UPS, poll time.Duration, log *slog.Logger) *nutSource {
	return &nutSource{cfg: u, poll: poll, log: log}
}

func (s *nutSource) isPrimary() bool { return s.cfg.NUT.Mode == "primary" }

func (s *nutSource) fsd(ctx context.Context) error {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("FSD %s@%s: not connected", s.cfg.NUT.UPS, s.cfg.NUT.Address)
	}
	return c.FSD(ctx, s.cfg.NUT.UPS)
}

func (s *nutSource) run(ctx context.Context, emit func(update)) {
	b := nut.Backoff{Min: 250 * time.Millisecond, Max: reconnectMax}
	var lastErr string
	for ctx.Err() == nil {
		c, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			emit(update{at: time.Now(), err: err})
			if msg := err.Error(); msg != lastErr {
				s.log.Warn("cannot reach UPS; retrying", "err", err)
				lastErr = msg
			}
			if !sleep(ctx, b.Next()) {
				return
			}
			continue
		}
		if lastErr != "" {
			s.log.Info("UPS reachable again")
			lastErr = ""
		}
		b.Reset()
		err = s.pollLoop(ctx, c, emit)
		s.mu.Lock()
		s.client = nil
		s.mu.Unlock()
		if ctx.Err() != nil {
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.Logout(lctx)
			cancel()
			_ = c.Close()
			return
		}
		_ = c.Close()
		emit(update{at: time.Now(), err: err})
		s.log.Warn("connection to UPS lost; reconnecting", "err", err)
		lastErr = err.Error()
		if !sleep(ctx, b.Next()) {
			return
		}
	}
}

// pollLoop reads the UPS every poll interval on one connection. Stale data
// is reported and polling goes on; any other error ends the connection.
func (s *nutSource) pollLoop(ctx context.Context, c *nut.Client, emit func(update)) error {
	t := time.NewTicker(s.poll)
	defer t.Stop()
	for {
		vars, err := c.GetVars(ctx, s.cfg.NUT.UPS, pollVars...)
		now := time.Now()
		switch {
		case err == nil:
			st, ok := vars["ups.status"]
			switch {
			case !ok:
				emit(update{at: now, err: errors.New("upsd serves no ups.status"), stale: true})
			case strings.TrimSpace(st) == "WAIT":
				if s.waitSince.IsZero() {
					s.waitSince = now
				}
				if s.lastVars != nil && now.Sub(s.waitSince) < waitGrace {
					emit(update{at: now, vars: s.lastVars})
				} else {
					emit(update{at: now, err: errors.New("upsd serves WAIT: its driver has sent no data"), stale: true})
				}
			default:
				s.waitSince, s.lastVars = time.Time{}, vars
				emit(update{at: now, vars: vars})
			}
		case errors.Is(err, nut.ErrDataStale), errors.Is(err, nut.ErrDriverNotConnected):
			emit(update{at: now, err: err, stale: true})
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *nutSource) connect(ctx context.Context) (*nut.Client, error) {
	n := s.cfg.NUT
	opts := nut.Options{}
	if n.TLS != nil {
		opts.TLS = &nut.TLSOptions{CAFile: n.TLS.CAFile, ServerName: n.TLS.ServerName, Fingerprint: n.TLS.Fingerprint}
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := nut.Dial(dctx, n.Address, opts)
	if err != nil {
		return nil, err
	}
	if n.Username != "" {
		if err := s.login(dctx, c); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	s.mu.Lock()
	s.client = c
	s.mu.Unlock()
	return c, nil
}

func (s *nutSource) login(ctx context.Context, c *nut.Client) error {
	n := s.cfg.NUT
	if err := c.Username(ctx, n.Username); err != nil {
		return err
	}
	if err := c.Password(ctx, n.Password.Reveal()); err != nil {
		return err
	}
	if err := c.Login(ctx, n.UPS); err != nil {
		return fmt.Errorf("LOGIN %s as %s: %w", n.UPS, n.Username, err)
	}
	if n.Mode == "primary" {
		if err := c.Primary(ctx, n.UPS); err != nil {
			return fmt.Errorf("PRIMARY %s as %s: %w", n.UPS, n.Username, err)
		}
	}
	return nil
}

// apcupsdSource polls apcupsd's NIS, one connection per query as apcaccess
// does.
type apcupsdSource struct {
	cfg  config.UPS
	poll time.Duration
}

func newApcupsdSource(u config.UPS, poll time.Duration) *apcupsdSource {
	return &apcupsdSource{cfg: u, poll: poll}
}

func (s *apcupsdSource) run(ctx context.Context, emit func(update)) {
	b := nut.Backoff{Min: s.poll, Max: 15 * time.Second}
	for {
		r, err := apcupsd.Status(ctx, s.cfg.Apcupsd.Address, apcupsd.Options{})
		now := time.Now()
		wait := s.poll
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			emit(update{at: now, err: err})
			wait = b.Next()
		case r.CommLost():
			emit(update{at: now, err: errors.New("apcupsd: COMMLOST (apcupsd lost its UPS)"), stale: true})
		default:
			b.Reset()
			emit(update{at: now, vars: r.Vars()})
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether to go on.
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

// waitOthersGone polls NUMLOGINS until only this client is logged in or
// ctx ends; it returns the last count.
func (s *nutSource) waitOthersGone(ctx context.Context) (int, error) {
	for {
		s.mu.Lock()
		c := s.client
		s.mu.Unlock()
		n := -1
		if c != nil {
			if v, err := c.NumLogins(ctx, s.cfg.NUT.UPS); err == nil {
				n = v
				if n <= 1 {
					return n, nil
				}
			}
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return n, ctx.Err()
		}
	}
}

// instCmd sends an instant command on the held connection.
func (s *nutSource) instCmd(ctx context.Context, cmd string) error {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("INSTCMD %s %s: not connected", s.cfg.NUT.UPS, cmd)
	}
	return c.InstCmd(ctx, s.cfg.NUT.UPS, cmd, "")
}
