package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
)

// Trigger kinds, as `sundown trigger --kind` and the API take them.
const (
	TriggerOnBattery = "onbattery" // mains failed: the policy's delays and budget apply
	TriggerShutdown  = "shutdown"  // shut down now (the UPS reads on battery, low battery)
	TriggerClear     = "clear"     // mains is back
)

// ErrNoTrigger: the config has no trigger UPS (or not the one named).
var ErrNoTrigger = errors.New("no trigger UPS configured: add one under ups: with trigger: {}")

// triggerSource is a UPS whose status comes from outside (PowerChute on a
// Windows box, a UPS network card calling a URL) through App.Trigger. It
// reads as a live UPS on line power until told otherwise, and reports its
// status every poll, so that the policy applies to it exactly as to a NUT
// UPS: the same delays, budget, latch and journal.
type triggerSource struct {
	cfg  config.UPS
	poll time.Duration

	mu      sync.Mutex
	status  string
	changed chan struct{}
}

func newTriggerSource(u config.UPS, poll time.Duration) *triggerSource {
	return &triggerSource{cfg: u, poll: poll, status: "OL", changed: make(chan struct{}, 1)}
}

func (s *triggerSource) set(kind string) error {
	st := map[string]string{TriggerOnBattery: "OB DISCHRG", TriggerShutdown: "OB LB DISCHRG", TriggerClear: "OL"}[kind]
	if st == "" {
		return fmt.Errorf("trigger kind %q: want onbattery, shutdown or clear", kind)
	}
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *triggerSource) run(ctx context.Context, emit func(update)) {
	t := time.NewTicker(s.poll)
	defer t.Stop()
	for {
		s.mu.Lock()
		st := s.status
		s.mu.Unlock()
		emit(update{at: time.Now(), vars: map[string]string{"ups.status": st}})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.changed:
		}
	}
}

// Trigger feeds an external power signal into the policy: kind is
// TriggerOnBattery, TriggerShutdown or TriggerClear; ups names the trigger
// UPS (empty: the only one). It returns ErrNoTrigger when there is none.
func (a *App) Trigger(kind, reason, ups string) error {
	var found []*triggerSource
	for _, s := range a.sources {
		if ts, ok := s.(*triggerSource); ok && (ups == "" || ts.cfg.Name == ups) {
			found = append(found, ts)
		}
	}
	switch {
	case len(found) == 0 && ups != "":
		return fmt.Errorf("%w (no trigger UPS named %q)", ErrNoTrigger, ups)
	case len(found) == 0:
		return ErrNoTrigger
	case len(found) > 1:
		return fmt.Errorf("several trigger UPSes: name one (%s, …)", found[0].cfg.Name)
	}
	if err := found[0].set(kind); err != nil {
		return err
	}
	a.log.Warn("external trigger", "ups", found[0].cfg.Name, "kind", kind, "reason", reason)
	return nil
}
