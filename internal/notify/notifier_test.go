package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// funcChannel is a Channel whose Send is a test function.
type funcChannel struct {
	name string
	send func(ctx context.Context, m Message) error
}

func (c *funcChannel) Name() string                              { return c.name }
func (c *funcChannel) Send(ctx context.Context, m Message) error { return c.send(ctx, m) }

// recorder collects delivered messages and attempt times.
type recorder struct {
	mu       sync.Mutex
	subjects []string
	attempts []time.Duration // since start
	start    time.Time
}

func (r *recorder) add(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subjects = append(r.subjects, m.Subject)
}

func (r *recorder) tick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, time.Since(r.start))
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.subjects...)
}

// startRun runs n in the background and returns a stop function that
// cancels it and waits for Run to return.
func startRun(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func mustNew(t *testing.T, routes []Route, o Options) *Notifier {
	t.Helper()
	n, err := New(routes, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n
}

func statsOf(t *testing.T, n *Notifier, name string) ChannelStats {
	t.Helper()
	for _, s := range n.Stats() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stats for %q", name)
	return ChannelStats{}
}

func TestFilterByType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var all, power recorder
		n := mustNew(t, []Route{
			{Channel: &funcChannel{name: "all", send: func(_ context.Context, m Message) error { all.add(m); return nil }}},
			{Channel: &funcChannel{name: "power", send: func(_ context.Context, m Message) error { power.add(m); return nil }},
				Types: []string{"onbatt", "ONLINE"}},
		}, Options{})
		startRun(t, n)
		for _, typ := range []string{"ONBATT", "LOWBATT", "ONLINE", "SHUTDOWN_STARTED"} {
			n.Notify(Message{Type: typ, Subject: typ})
		}
		synctest.Wait()
		if diff := cmp.Diff([]string{"ONBATT", "LOWBATT", "ONLINE", "SHUTDOWN_STARTED"}, all.got()); diff != "" {
			t.Errorf("all channel (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"ONBATT", "ONLINE"}, power.got()); diff != "" {
			t.Errorf("filtered channel (-want +got):\n%s", diff)
		}
	})
}

func TestRetryWithBackoffThenDelivered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := recorder{start: time.Now()}
		fails := 3
		ch := &funcChannel{name: "flaky", send: func(_ context.Context, m Message) error {
			rec.tick()
			if fails > 0 {
				fails--
				return errors.New("connection refused")
			}
			rec.add(m)
			return nil
		}}
		o := Options{Backoff: time.Second, MaxBackoff: 3 * time.Second, random: func() float64 { return 0 }}
		n := mustNew(t, []Route{{Channel: ch}}, o)
		startRun(t, n)
		n.Notify(Message{Type: "ONBATT", Subject: "on battery"})

		// After the first failure the channel is visibly down.
		synctest.Wait()
		s := statsOf(t, n, "flaky")
		if !s.Down || s.Failed != 1 || s.LastError != "connection refused" || s.Pending != 1 {
			t.Fatalf("after first failure: %+v", s)
		}

		time.Sleep(10 * time.Second) // fake time inside the bubble
		synctest.Wait()
		// random=0 gives half of each delay: 0.5 s, 1 s, then 2 s (4 s capped to 3 s, halved 1.5 s).
		want := []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 3000 * time.Millisecond}
		if diff := cmp.Diff(want, rec.attempts); diff != "" {
			t.Errorf("attempt times (-want +got):\n%s", diff)
		}
		s = statsOf(t, n, "flaky")
		if s.Sent != 1 || s.Failed != 3 || s.Down || s.ConsecutiveFailures != 0 || s.GaveUp != 0 || s.Pending != 0 {
			t.Errorf("after recovery: %+v", s)
		}
		if s.LastOK.IsZero() || s.LastError != "connection refused" {
			t.Errorf("LastOK/LastError not kept: %+v", s)
		}
	})
}

func TestPermanentErrorNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		ch := &funcChannel{name: "perm", send: func(context.Context, Message) error {
			calls++
			return fmt.Errorf("post: %w", Permanent(errors.New("HTTP 400")))
		}}
		n := mustNew(t, []Route{{Channel: ch}}, Options{Retries: 10, Backoff: time.Millisecond})
		startRun(t, n)
		n.Notify(Message{Type: "ONBATT"})
		synctest.Wait()
		time.Sleep(time.Minute)
		synctest.Wait()
		s := statsOf(t, n, "perm")
		if calls != 1 || s.Failed != 1 || s.GaveUp != 1 || !s.Down || s.Pending != 0 {
			t.Errorf("calls=%d stats=%+v", calls, s)
		}
	})
}

func TestRetriesExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		ch := &funcChannel{name: "dead", send: func(context.Context, Message) error {
			calls++
			return errors.New("dial tcp: connection refused")
		}}
		n := mustNew(t, []Route{{Channel: ch}}, Options{Retries: 2, Backoff: time.Second})
		startRun(t, n)
		n.Notify(Message{Type: "ONBATT"})
		time.Sleep(time.Hour)
		synctest.Wait()
		s := statsOf(t, n, "dead")
		if calls != 3 || s.Failed != 3 || s.GaveUp != 1 || !s.Down || s.ConsecutiveFailures != 3 {
			t.Errorf("calls=%d stats=%+v", calls, s)
		}
	})
}

func TestNoRetriesWhenNegative(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		ch := &funcChannel{name: "once", send: func(context.Context, Message) error { calls++; return errors.New("boom") }}
		n := mustNew(t, []Route{{Channel: ch}}, Options{Retries: -1})
		startRun(t, n)
		n.Notify(Message{Type: "ONBATT"})
		time.Sleep(time.Hour)
		synctest.Wait()
		if calls != 1 {
			t.Errorf("calls = %d, want 1", calls)
		}
	})
}

func TestPerChannelTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var ended []time.Duration
		ch := &funcChannel{name: "hang", send: func(ctx context.Context, _ Message) error {
			<-ctx.Done()
			ended = append(ended, time.Since(start))
			return fmt.Errorf("post: %w", ctx.Err())
		}}
		n := mustNew(t, []Route{{Channel: ch, Timeout: 2 * time.Second}},
			Options{Timeout: time.Hour, Retries: -1})
		startRun(t, n)
		n.Notify(Message{Type: "ONBATT"})
		time.Sleep(time.Minute)
		synctest.Wait()
		if diff := cmp.Diff([]time.Duration{2 * time.Second}, ended); diff != "" {
			t.Errorf("attempt ended (-want +got):\n%s", diff)
		}
		s := statsOf(t, n, "hang")
		if !strings.Contains(s.LastError, "timed out after 2s") || s.GaveUp != 1 {
			t.Errorf("stats: %+v", s)
		}
	})
}

func TestFullQueueDropsOldestAndNotifyNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var rec recorder
		ch := &funcChannel{name: "slow", send: func(ctx context.Context, m Message) error {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
			rec.add(m)
			return nil
		}}
		n := mustNew(t, []Route{{Channel: ch}}, Options{QueueSize: 4, Timeout: time.Hour})
		startRun(t, n)
		n.Notify(Message{Type: "T", Subject: "m0"})
		synctest.Wait() // m0 is in flight, blocked on gate
		// 1000 calls return although the channel is blocked: were Notify to
		// block, synctest would report a deadlock here.
		for i := 1; i <= 1000; i++ {
			n.Notify(Message{Type: "T", Subject: fmt.Sprintf("m%d", i)})
		}
		s := statsOf(t, n, "slow")
		if s.Dropped != 996 || s.Pending != 5 {
			t.Fatalf("while blocked: %+v", s)
		}
		close(gate)
		synctest.Wait()
		if diff := cmp.Diff([]string{"m0", "m997", "m998", "m999", "m1000"}, rec.got()); diff != "" {
			t.Errorf("delivered (-want +got):\n%s", diff)
		}
		s = statsOf(t, n, "slow")
		if s.Sent != 5 || s.Dropped != 996 || s.Pending != 0 {
			t.Errorf("after: %+v", s)
		}
	})
}

func TestDeadChannelDoesNotDelayAnother(t *testing.T) {
	// No fake time here: the proof is ordering. The dead channel blocks
	// until the end of the test; the other one must deliver regardless.
	release := make(chan struct{})
	deadEntered := make(chan struct{}, 1)
	delivered := make(chan string, 10)
	dead := &funcChannel{name: "dead", send: func(ctx context.Context, _ Message) error {
		deadEntered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return errors.New("unreachable")
	}}
	live := &funcChannel{name: "live", send: func(_ context.Context, m Message) error {
		delivered <- m.Subject
		return nil
	}}
	n := mustNew(t, []Route{{Channel: dead}, {Channel: live}}, Options{Timeout: time.Hour, Retries: -1})
	stop := startRun(t, n)
	n.Notify(Message{Type: "ONBATT", Subject: "one"})
	<-deadEntered // the dead channel holds its first message
	n.Notify(Message{Type: "ONBATT", Subject: "two"})
	for _, want := range []string{"one", "two"} {
		if got := <-delivered; got != want {
			t.Fatalf("live channel delivered %q, want %q", got, want)
		}
	}
	if s := statsOf(t, n, "dead"); s.Sent != 0 || s.Pending != 2 {
		t.Errorf("dead channel: %+v", s)
	}
	close(release)
	stop()
}

func TestFinalFlushAndAfterRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		fail := true
		ch := &funcChannel{name: "mail", send: func(_ context.Context, m Message) error {
			if fail && m.Subject == "first" {
				return errors.New("451 try later")
			}
			rec.add(m)
			return nil
		}}
		n := mustNew(t, []Route{{Channel: ch}}, Options{Backoff: time.Hour, MaxBackoff: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		n.Notify(Message{Type: "ONBATT", Subject: "first"}) // queued before Run
		go func() { done <- n.Run(ctx) }()
		synctest.Wait() // first failed, waiting an hour to retry
		n.Notify(Message{Type: "SHUTDOWN_STARTED", Subject: "second"})
		n.Notify(Message{Type: "SHUTDOWN_DONE", Subject: "third"})
		cancel() // retrying stops; queued messages get one attempt each
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if diff := cmp.Diff([]string{"second", "third"}, rec.got()); diff != "" {
			t.Errorf("flushed (-want +got):\n%s", diff)
		}
		n.Notify(Message{Type: "ONLINE", Subject: "late"})
		s := statsOf(t, n, "mail")
		if s.Sent != 2 || s.GaveUp != 1 || s.Dropped != 1 || s.Pending != 0 {
			t.Errorf("stats: %+v", s)
		}
		if err := n.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
			t.Errorf("second Run = %v, want ErrAlreadyRun", err)
		}
	})
}

func TestFlushIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unblock := make(chan struct{})
		calls := 0
		// A channel that honours its context: the flush deadline cuts it.
		slow := &funcChannel{name: "slow", send: func(ctx context.Context, _ Message) error {
			calls++
			<-ctx.Done()
			return ctx.Err()
		}}
		// A channel that ignores its context must not hold Run either.
		rude := &funcChannel{name: "rude", send: func(context.Context, Message) error {
			<-unblock
			return nil
		}}
		n := mustNew(t, []Route{{Channel: slow}, {Channel: rude}},
			Options{Timeout: time.Hour, FlushTimeout: 3 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		for i := range 3 {
			n.Notify(Message{Type: "T", Subject: fmt.Sprint(i)})
		}
		synctest.Wait()
		start := time.Now()
		cancel()
		<-done
		if took := time.Since(start); took != 3*time.Second+flushGrace {
			t.Errorf("Run returned %s after cancel, want %s", took, 3*time.Second+flushGrace)
		}
		if calls != 1 {
			t.Errorf("slow channel attempts = %d, want 1 (flush cut by its deadline)", calls)
		}
		if s := statsOf(t, n, "slow"); s.Dropped != 2 || s.GaveUp != 1 {
			t.Errorf("slow stats: %+v", s)
		}
		close(unblock) // let the abandoned worker end so the bubble can close
	})
}

func TestNewRejectsBadRoutes(t *testing.T) {
	a := &funcChannel{name: "a"}
	_, err := New([]Route{{Channel: a}, {Channel: nil}, {Channel: &funcChannel{name: "a"}}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "nil channel") || !strings.Contains(err.Error(), `duplicate channel name "a"`) {
		t.Errorf("New error = %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	base, max := 100*time.Millisecond, time.Second
	for _, tc := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{0, 0, 50 * time.Millisecond},
		{0, 0.999999, 100 * time.Millisecond},
		{1, 0, 100 * time.Millisecond},
		{2, 0.5, 300 * time.Millisecond},
		{3, 0, 400 * time.Millisecond},
		{4, 0, 500 * time.Millisecond}, // 1.6 s capped to 1 s
		{60, 0, 500 * time.Millisecond},
	} {
		got := backoffDelay(base, max, tc.attempt, tc.r)
		if got.Round(time.Millisecond) != tc.want {
			t.Errorf("backoffDelay(attempt %d, r %v) = %s, want %s", tc.attempt, tc.r, got, tc.want)
		}
	}
}

func TestRedactURLAndExcerpt(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXXSECRET": "https://hooks.slack.com",
		"https://user:pw@ntfy.example:8443/topic?auth=tok":      "https://ntfy.example:8443",
		"not a url":         "<invalid url>",
		"http://[::1]:80/x": "http://[::1]:80",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Excerpt("  héllo\r\nworld  ", 100); got != "héllo  world" {
		t.Errorf("Excerpt = %q", got)
	}
	if got := Excerpt("ééé", 3); got != "é…" {
		t.Errorf("Excerpt cut = %q", got)
	}
}

func TestMessageTextAndVars(t *testing.T) {
	m := Message{Body: "line one\nline two", Vars: map[string]string{"ups.status": "OB", "battery.charge": "80"}}
	if m.Text() != "line one" {
		t.Errorf("Text = %q", m.Text())
	}
	if diff := cmp.Diff([]string{"battery.charge: 80", "ups.status: OB"}, m.SortedVars()); diff != "" {
		t.Errorf("SortedVars (-want +got):\n%s", diff)
	}
}
