// Package ready answers "is it up yet?" during a restore: after a host or
// VM was powered on, and before the things that depend on it are started.
//
// A Probe checks one thing once (a TCP port accepts connections, an HTTP
// endpoint answers with the expected status and body, or any function).
// Wait repeats a probe at an interval until it passes or the context ends,
// and then reports the last failure together with what was probed and how
// often: "tcp 10.0.0.5:5432: connection refused after 12 attempts".
//
// Time is injected through Clock so unit tests step Wait tick by tick
// without sleeping.
package ready

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Probe checks one condition once.
//
// Check returns nil when the condition holds. Its errors say what was wrong
// ("connection refused", "status 503 Service Unavailable, want 2xx") but
// not what was probed: String names that, and Wait puts both together.
// Check must return when ctx ends. Probes are safe for concurrent use.
type Probe interface {
	Check(ctx context.Context) error
	String() string
}

// Func adapts a function to a Probe named name ("func name" in messages).
func Func(name string, f func(ctx context.Context) error) Probe {
	return funcProbe{name: name, f: f}
}

type funcProbe struct {
	name string
	f    func(ctx context.Context) error
}

func (p funcProbe) Check(ctx context.Context) error {
	if p.f == nil {
		return errors.New("no function")
	}
	return p.f(ctx)
}

func (p funcProbe) String() string { return "func " + p.name }

// Clock makes tickers. The zero Waiter uses the real clock.
type Clock interface {
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker that Wait uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealClock returns the Clock backed by package time.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Waiter repeats probes. Its zero value is ready to use with the real clock.
type Waiter struct {
	// Clock paces the attempts; nil means the real clock.
	Clock Clock
}

// Wait runs p at once and then every interval until it passes (nil) or ctx
// ends. It uses the real clock; see Waiter.Wait.
func Wait(ctx context.Context, p Probe, interval time.Duration) error {
	return Waiter{}.Wait(ctx, p, interval)
}

// Wait runs p at once and then on every tick of interval until p passes or
// ctx ends. Attempts do not overlap: a tick that comes while an attempt is
// still running is dropped, as with time.Ticker. Each attempt is bounded by
// ctx and by the probe's own timeout.
//
// On failure it returns a *WaitError carrying the last probe error; both
// that error and ctx's error match with errors.Is. An attempt that ctx cut
// short (it failed with the context's error after ctx ended) does not
// count and does not replace the previous failure, so the message shows
// the real reason ("connection refused"), not "context deadline exceeded".
func (w Waiter) Wait(ctx context.Context, p Probe, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("wait %s: interval %s is not positive", p, interval)
	}
	if err := ctx.Err(); err != nil {
		return &WaitError{Probe: p.String(), Attempts: 0, Err: err, ctxErr: err}
	}
	clock := w.Clock
	if clock == nil {
		clock = realClock{}
	}
	t := clock.NewTicker(interval)
	defer t.Stop()

	var last error
	attempts := 0
	for {
		err := p.Check(ctx)
		if err == nil {
			return nil
		}
		ctxErr := ctx.Err()
		cut := cutShort(ctx, err)
		if !cut || last == nil { // a cut-short first attempt is all we have
			last, attempts = err, attempts+1
		}
		if ctxErr != nil {
			return &WaitError{Probe: p.String(), Attempts: attempts, Err: last, ctxErr: ctxErr}
		}
		select {
		case <-ctx.Done():
			return &WaitError{Probe: p.String(), Attempts: attempts, Err: last, ctxErr: ctx.Err()}
		case <-t.C():
		}
	}
}

// cutShort reports whether a failed attempt failed only because ctx ended.
// A probe may see its deadline a moment before ctx.Err reports it (a
// dialer's own timer derived from the same deadline), hence the clock
// check.
func cutShort(ctx context.Context, err error) bool {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if ctx.Err() != nil {
		return true
	}
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// WaitError is what Wait returns when the probe never passed.
type WaitError struct {
	Probe    string // what was probed, e.g. "tcp 10.0.0.5:5432"
	Attempts int    // completed attempts
	Err      error  // the last attempt's error
	ctxErr   error
}

// Error formats as "tcp 10.0.0.5:5432: connection refused after 12 attempts".
func (e *WaitError) Error() string {
	n := strconv.Itoa(e.Attempts) + " attempts"
	if e.Attempts == 1 {
		n = "1 attempt"
	}
	return e.Probe + ": " + e.Err.Error() + " after " + n
}

// Unwrap returns the last probe error and the context's error, so that
// errors.Is matches either (syscall.ECONNREFUSED, context.DeadlineExceeded).
func (e *WaitError) Unwrap() []error {
	if e.ctxErr == nil || e.ctxErr == e.Err {
		return []error{e.Err}
	}
	return []error{e.Err, e.ctxErr}
}
