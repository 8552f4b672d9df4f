package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Defaults for zero Options fields.
const (
	DefaultQueueSize    = 64
	DefaultTimeout      = 10 * time.Second
	DefaultRetries      = 4
	DefaultBackoff      = time.Second
	DefaultMaxBackoff   = 30 * time.Second
	DefaultFlushTimeout = 5 * time.Second
)

// Options tune a Notifier. Zero fields take the defaults above.
type Options struct {
	// QueueSize bounds each channel's queue; when full, the oldest queued
	// message is dropped (and counted) to make room for the new one.
	QueueSize int
	// Timeout bounds one delivery attempt (Route.Timeout overrides it).
	Timeout time.Duration
	// Retries is the number of retries after a failed first attempt;
	// 0 means DefaultRetries, a negative value means no retry.
	Retries int
	// Backoff is the wait before the first retry; it doubles for every
	// further retry up to MaxBackoff. Each wait is jittered to a random
	// value between half and all of it.
	Backoff, MaxBackoff time.Duration
	// FlushTimeout bounds the final flush once Run's context ends: queued
	// messages get one attempt each within this time; the rest are dropped.
	FlushTimeout time.Duration
	// Log receives one line per state change (channel down/recovered, a
	// message given up, first drop). Nil discards.
	Log *slog.Logger
	// Now stamps messages without At and the times in Stats (default
	// time.Now).
	Now func() time.Time

	random func() float64 // jitter source in [0,1); tests pin it
}

func (o Options) withDefaults() Options {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = o.Backoff
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.random == nil {
		o.random = rand.Float64
	}
	return o
}

// Route is a channel with its filter.
type Route struct {
	Channel Channel
	// Types lists the message types this channel receives (compared
	// case-insensitively); empty means all.
	Types []string
	// Timeout overrides Options.Timeout for this channel when > 0.
	Timeout time.Duration
}

// ChannelStats is a snapshot of one channel's delivery state.
type ChannelStats struct {
	Name    string
	Sent    uint64 // messages delivered
	Failed  uint64 // failed attempts (a message retried 3 times and lost adds 4)
	Dropped uint64 // messages dropped unsent: queue full, or the final flush ran out
	GaveUp  uint64 // messages abandoned: permanent error, retries exhausted, or shutdown
	Pending int    // queued plus in flight
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int
	// Down is true while the channel's last attempt failed.
	Down        bool
	LastError   string
	LastErrorAt time.Time
	LastOK      time.Time
}

// flushGrace is how long Run waits past FlushTimeout for a channel that
// ignores its context before it returns anyway.
const flushGrace = time.Second

// ErrAlreadyRun is returned by Run when called more than once.
var ErrAlreadyRun = errors.New("notify: Run called twice")

// Notifier fans messages out to channels, each with its own queue and
// worker. Create it with New, start delivery with Run, and send with Notify
// (from any goroutine, before or during Run).
type Notifier struct {
	opts    Options
	workers []*worker

	mu      sync.Mutex
	started bool
}

// New builds a Notifier for routes. It fails on a nil channel or a duplicate
// channel name (names key the stats).
func New(routes []Route, o Options) (*Notifier, error) {
	o = o.withDefaults()
	n := &Notifier{opts: o}
	seen := map[string]bool{}
	var errs []error
	for i, r := range routes {
		if r.Channel == nil {
			errs = append(errs, fmt.Errorf("notify route %d: nil channel", i))
			continue
		}
		name := r.Channel.Name()
		if seen[name] {
			errs = append(errs, fmt.Errorf("notify route %d: duplicate channel name %q", i, name))
			continue
		}
		seen[name] = true
		timeout := o.Timeout
		if r.Timeout > 0 {
			timeout = r.Timeout
		}
		w := &worker{
			ch:      r.Channel,
			name:    name,
			timeout: timeout,
			opts:    &n.opts,
			wake:    make(chan struct{}, 1),
		}
		if len(r.Types) > 0 {
			w.types = map[string]bool{}
			for _, t := range r.Types {
				w.types[strings.ToUpper(t)] = true
			}
		}
		n.workers = append(n.workers, w)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return n, nil
}

// Notify queues m for every channel whose filter accepts m.Type. It never
// blocks: a full queue drops its oldest message. A zero m.At is stamped with
// Options.Now. m.Vars is copied. After Run has returned, messages are
// dropped and counted.
func (n *Notifier) Notify(m Message) {
	if m.At.IsZero() {
		m.At = n.opts.Now()
	}
	m.Vars = maps.Clone(m.Vars)
	typ := strings.ToUpper(m.Type)
	for _, w := range n.workers {
		if w.types != nil && !w.types[typ] {
			continue
		}
		w.enqueue(m)
	}
}

// Run delivers messages until ctx ends, then gives queued messages one
// final attempt each within Options.FlushTimeout (retries stop at once), and
// returns when every worker has stopped. Run therefore returns at most
// FlushTimeout after ctx ends for channels that honour their context; a
// channel that ignores it is abandoned (logged, its goroutine left to end on
// its own) one second later, so nothing can hold the caller. Messages still
// queued then, or sent with Notify afterwards, count as Dropped. Run
// returns ErrAlreadyRun if called again.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return ErrAlreadyRun
	}
	n.started = true
	n.mu.Unlock()

	// hard bounds attempts: it outlives ctx by at most FlushTimeout, so an
	// attempt in flight when ctx ends may still finish.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Go(func() { w.run(ctx, hard) })
	}
	<-ctx.Done()
	t := time.AfterFunc(n.opts.FlushTimeout, cancelHard)
	defer t.Stop()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	// A channel that ignores its context must not hold the shutdown: wait
	// at most a little past the flush deadline, then abandon its worker.
	grace := time.NewTimer(n.opts.FlushTimeout + flushGrace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		for _, w := range n.workers {
			w.mu.Lock()
			stuck := w.inflight
			w.mu.Unlock()
			if stuck {
				n.opts.Log.Error("notify channel ignored its deadline; abandoning its worker", "channel", w.name)
			}
		}
	}

	// Messages still queued are lost: count them, and drop later ones.
	for _, w := range n.workers {
		w.mu.Lock()
		w.closed = true
		w.st.Dropped += uint64(len(w.queue))
		w.queue = nil
		w.mu.Unlock()
	}
	return nil
}

// Stats returns a snapshot per channel, in route order.
func (n *Notifier) Stats() []ChannelStats {
	out := make([]ChannelStats, len(n.workers))
	for i, w := range n.workers {
		w.mu.Lock()
		s := w.st
		s.Name = w.name
		s.Pending = len(w.queue)
		if w.inflight {
			s.Pending++
		}
		w.mu.Unlock()
		out[i] = s
	}
	return out
}

type worker struct {
	ch      Channel
	name    string
	types   map[string]bool // nil: all
	timeout time.Duration
	opts    *Options
	wake    chan struct{} // capacity 1: "the queue may be non-empty"

	mu         sync.Mutex
	queue      []Message
	inflight   bool
	closed     bool // Run has returned: enqueue drops
	st         ChannelStats
	dropWarned bool
}

func (w *worker) enqueue(m Message) {
	var dropped *Message
	w.mu.Lock()
	if w.closed {
		w.st.Dropped++
		w.mu.Unlock()
		return
	}
	if len(w.queue) >= w.opts.QueueSize {
		d := w.queue[0]
		w.queue[0] = Message{}
		w.queue = w.queue[1:]
		w.st.Dropped++
		if !w.dropWarned {
			w.dropWarned = true
			dropped = &d
		}
	}
	w.queue = append(w.queue, m)
	w.mu.Unlock()
	if dropped != nil {
		// Once until the channel next delivers: a storm logs one line.
		w.opts.Log.Warn("notification queue full, dropping oldest",
			"channel", w.name, "type", dropped.Type, "ups", dropped.UPS)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued message and marks it in flight.
func (w *worker) pop() (Message, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return Message{}, false
	}
	m := w.queue[0]
	w.queue[0] = Message{}
	w.queue = w.queue[1:]
	w.inflight = true
	return m, true
}

func (w *worker) done() {
	w.mu.Lock()
	w.inflight = false
	w.mu.Unlock()
}

// run is the channel's worker: it delivers until ctx ends, then flushes the
// queue with one attempt per message until the queue is empty or hard ends.
func (w *worker) run(ctx, hard context.Context) {
	for ctx.Err() == nil {
		m, ok := w.pop()
		if !ok {
			select {
			case <-w.wake:
			case <-ctx.Done():
			}
			continue
		}
		w.deliver(ctx, hard, m)
		w.done()
	}
	for hard.Err() == nil {
		m, ok := w.pop()
		if !ok {
			return
		}
		w.deliver(ctx, hard, m)
		w.done()
	}
}

// deliver sends m with retries. Retrying stops when ctx ends; attempts run
// under hard so an attempt in flight can finish during the final flush.
func (w *worker) deliver(ctx, hard context.Context, m Message) {
	retries := w.opts.Retries
	for attempt := 0; ; attempt++ {
		err := w.attempt(hard, m)
		if err == nil {
			return
		}
		reason := ""
		switch {
		case IsPermanent(err):
			reason = "permanent error"
		case attempt >= retries:
			reason = "retries exhausted"
		case ctx.Err() != nil:
			reason = "shutting down"
		}
		if reason == "" {
			t := time.NewTimer(backoffDelay(w.opts.Backoff, w.opts.MaxBackoff, attempt, w.opts.random()))
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				reason = "shutting down"
			}
		}
		w.mu.Lock()
		w.st.GaveUp++
		w.mu.Unlock()
		w.opts.Log.Warn("notification given up", "channel", w.name, "type", m.Type, "ups", m.UPS,
			"attempts", attempt+1, "reason", reason, "err", err)
		return
	}
}

// attempt makes one delivery attempt and records its outcome.
func (w *worker) attempt(hard context.Context, m Message) error {
	ctx, cancel := context.WithTimeout(hard, w.timeout)
	start := time.Now()
	err := w.ch.Send(ctx, m)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && hard.Err() == nil {
		err = fmt.Errorf("timed out after %s: %w", w.timeout, err)
	}
	cancel()
	now := w.opts.Now()
	// Log after unlocking: Notify takes w.mu and must never wait on a
	// slow log writer.
	w.mu.Lock()
	wasDown := w.st.Down
	if err == nil {
		w.st.Sent++
		w.st.LastOK = now
		w.st.Down = false
		w.st.ConsecutiveFailures = 0
		w.dropWarned = false
	} else {
		w.st.Failed++
		w.st.ConsecutiveFailures++
		w.st.LastError = err.Error()
		w.st.LastErrorAt = now
		w.st.Down = true
	}
	w.mu.Unlock()
	switch {
	case err == nil && wasDown:
		w.opts.Log.Info("notify channel recovered", "channel", w.name)
	case err != nil && !wasDown:
		w.opts.Log.Warn("notify channel down", "channel", w.name, "err", err,
			"attempt_seconds", time.Since(start).Seconds())
	}
	return err
}

// backoffDelay is the wait after failed attempt number attempt (0-based):
// base·2^attempt capped at max, jittered to between half and all of it by r
// in [0,1).
func backoffDelay(base, max time.Duration, attempt int, r float64) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + time.Duration(r*float64(d-half))
}
