package ready

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// manualClock hands out one ticker whose ticks the test sends.
type manualClock struct {
	interval time.Duration
	ticker   *manualTicker
}

func (c *manualClock) NewTicker(d time.Duration) Ticker {
	c.interval = d
	c.ticker = &manualTicker{ch: make(chan time.Time)}
	return c.ticker
}

type manualTicker struct {
	ch      chan time.Time
	stopped bool
}

func (t *manualTicker) C() <-chan time.Time { return t.ch }
func (t *manualTicker) Stop()               { t.stopped = true }

// stepProbe reports each call on calls and waits for the test's verdict on
// results, so the test sees every attempt and decides its outcome.
type stepProbe struct {
	calls   chan int
	results chan error
	n       int
}

func newStepProbe() *stepProbe {
	return &stepProbe{calls: make(chan int), results: make(chan error)}
}

func (p *stepProbe) Check(ctx context.Context) error {
	p.n++
	p.calls <- p.n
	return <-p.results
}

func (p *stepProbe) String() string { return "func step" }

// run starts Wait in a goroutine the test owns; the returned channel
// delivers Wait's result.
func run(ctx context.Context, w Waiter, p Probe, interval time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Wait(ctx, p, interval) }()
	return done
}

var errNotYet = errors.New("not yet")

func TestWaitTicksUntilSuccess(t *testing.T) {
	clock := &manualClock{}
	p := newStepProbe()
	done := run(t.Context(), Waiter{Clock: clock}, p, 7*time.Second)

	// The first attempt runs at once, before any tick.
	if n := <-p.calls; n != 1 {
		t.Fatalf("first call = %d", n)
	}
	p.results <- errNotYet
	for i := 2; i <= 4; i++ {
		// No attempt happens until the tick: the probe is not called
		// while Wait waits on the ticker, so this send is only received
		// by Wait's select.
		clock.ticker.ch <- time.Time{}
		if n := <-p.calls; n != i {
			t.Fatalf("call = %d, want %d", n, i)
		}
		if i < 4 {
			p.results <- errNotYet
		} else {
			p.results <- nil
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if clock.interval != 7*time.Second || !clock.ticker.stopped {
		t.Fatalf("ticker interval %s, stopped %v", clock.interval, clock.ticker.stopped)
	}
}

func TestWaitReportsLastErrorWhenContextEnds(t *testing.T) {
	clock := &manualClock{}
	p := newStepProbe()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := run(ctx, Waiter{Clock: clock}, p, time.Second)

	<-p.calls
	p.results <- errors.New("first")
	for range 2 {
		clock.ticker.ch <- time.Time{}
		<-p.calls
		p.results <- errNotYet
	}
	cancel() // Wait is now waiting for a tick
	err := <-done
	if got, want := err.Error(), "func step: not yet after 3 attempts"; got != want {
		t.Fatalf("error = %q, want %q", got, want)
	}
	if !errors.Is(err, errNotYet) || !errors.Is(err, context.Canceled) {
		t.Fatalf("errors.Is: probe %v, ctx %v", errors.Is(err, errNotYet), errors.Is(err, context.Canceled))
	}
	var we *WaitError
	if !errors.As(err, &we) || we.Attempts != 3 || we.Probe != "func step" {
		t.Fatalf("WaitError = %+v", we)
	}
}

// An attempt the context cut short neither counts nor hides the real reason.
func TestWaitIgnoresAttemptCutByContext(t *testing.T) {
	clock := &manualClock{}
	p := newStepProbe()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := run(ctx, Waiter{Clock: clock}, p, time.Second)

	<-p.calls
	p.results <- errors.New("connection refused")
	clock.ticker.ch <- time.Time{}
	<-p.calls
	cancel()
	p.results <- context.Canceled
	err := <-done
	if got, want := err.Error(), "func step: connection refused after 1 attempt"; got != want {
		t.Fatalf("error = %q, want %q", got, want)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatal("context error not reachable")
	}
}

func TestWaitFirstAttemptCutByContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	probe := Func("slow", func(context.Context) error {
		cancel()
		return context.Canceled
	})
	err := Waiter{Clock: &manualClock{}}.Wait(ctx, probe, time.Second)
	if got, want := err.Error(), "func slow: context canceled after 1 attempt"; got != want {
		t.Fatalf("error = %q, want %q", got, want)
	}
}

func TestWaitContextAlreadyDone(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	err := Waiter{Clock: &manualClock{}}.Wait(ctx, Func("x", func(context.Context) error { called = true; return nil }), time.Second)
	if called || !errors.Is(err, context.Canceled) || err.Error() != "func x: context canceled after 0 attempts" {
		t.Fatalf("called %v, err %v", called, err)
	}
}

func TestWaitRejectsBadInterval(t *testing.T) {
	err := Wait(t.Context(), Func("x", func(context.Context) error { return nil }), 0)
	if err == nil || !strings.Contains(err.Error(), "interval 0s is not positive") {
		t.Fatalf("Wait with interval 0: %v", err)
	}
}

func TestFuncProbe(t *testing.T) {
	p := Func("migrations", func(context.Context) error { return nil })
	if p.String() != "func migrations" || p.Check(t.Context()) != nil {
		t.Fatal("Func probe")
	}
	if err := Func("nil", nil).Check(t.Context()); err == nil {
		t.Fatal("nil func passed")
	}
}

// TestWaitRealClock: the zero Waiter paces with the real ticker.
func TestWaitRealClock(t *testing.T) {
	n := 0
	p := Func("count", func(context.Context) error {
		if n++; n < 3 {
			return errNotYet
		}
		return nil
	})
	start := time.Now()
	if err := Wait(t.Context(), p, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if n != 3 || time.Since(start) < 10*time.Millisecond {
		t.Fatalf("%d attempts in %s", n, time.Since(start))
	}
}
