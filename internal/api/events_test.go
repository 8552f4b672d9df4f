package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// sseEvent is one parsed Server-Sent Event (or comment).
type sseEvent struct {
	Event, Data, Comment string
}

// parseSSE splits a stream into events, checking the framing: every line
// is "field: value" or a comment, events end with an empty line.
func parseSSE(t *testing.T, text string) []sseEvent {
	t.Helper()
	var out []sseEvent
	blocks := strings.Split(text, "\n\n")
	if last := blocks[len(blocks)-1]; last != "" {
		t.Fatalf("stream does not end with a complete event: %q", last)
	}
	for _, b := range blocks[:len(blocks)-1] {
		var e sseEvent
		for _, line := range strings.Split(b, "\n") {
			switch {
			case strings.HasPrefix(line, ":"):
				e.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				e.Event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				e.Data += line[len("data: "):]
			case strings.HasPrefix(line, "retry: "):
			default:
				t.Fatalf("bad SSE line %q in %q", line, b)
			}
		}
		out = append(out, e)
	}
	return out
}

func statusEvents(t *testing.T, evs []sseEvent) []Status {
	t.Helper()
	var out []Status
	for _, e := range evs {
		if e.Event != "status" {
			continue
		}
		var s Status
		if err := json.Unmarshal([]byte(e.Data), &s); err != nil {
			t.Fatalf("status event data: %v", err)
		}
		out = append(out, s)
	}
	return out
}

// TestEventsStream runs the handler in a synctest bubble: time is fake
// (the default 15 s heartbeat passes at once), and the bubble fails the
// test if any goroutine is left behind.
func TestEventsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDaemon(sampleSnapshot())
		s := New(d, Actions{}, Options{})
		ctx, disconnect := context.WithCancel(context.Background())
		req := httptest.NewRequest(http.MethodGet, "/api/v1/events", nil).WithContext(ctx)
		w := newFlushRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeHTTP(w, req)
		}()
		synctest.Wait()
		if ct := w.Header().Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
			t.Errorf("Content-Type = %q", ct)
		}
		evs := parseSSE(t, w.String())
		sts := statusEvents(t, evs)
		if len(sts) != 1 || sts[0].UPS[0].Summary != "on battery" {
			t.Fatalf("at connect: %d status events %+v", len(sts), evs)
		}

		// A new snapshot is pushed.
		snap := sampleSnapshot()
		snap.UPS[0].Status = power.NewStatus(power.OL, power.CHRG)
		snap.At = snap.At.Add(time.Second)
		d.set(snap)
		synctest.Wait()
		sts = statusEvents(t, parseSSE(t, w.String()))
		if len(sts) != 2 || sts[1].UPS[0].Summary != "on line" {
			t.Fatalf("after a new snapshot: %d status events, last %+v", len(sts), sts[len(sts)-1].UPS[0])
		}

		// The same state republished with only a new time is not resent.
		snap.At = snap.At.Add(time.Second)
		d.set(snap)
		synctest.Wait()
		if n := len(statusEvents(t, parseSSE(t, w.String()))); n != 2 {
			t.Errorf("%d status events after a republished state, want 2", n)
		}

		// Heartbeat every 15 s.
		time.Sleep(DefaultHeartbeat - time.Millisecond)
		synctest.Wait()
		if strings.Contains(w.String(), ": heartbeat") {
			t.Fatal("heartbeat before 15 s")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		evs = parseSSE(t, w.String())
		if last := evs[len(evs)-1]; last.Comment != "heartbeat" {
			t.Errorf("after 15 s the last frame is %+v, want the heartbeat comment", last)
		}

		// The client goes: the handler ends and unsubscribes.
		disconnect()
		<-done
		if n := d.subscribers(); n != 0 {
			t.Errorf("%d subscriptions left", n)
		}
	})
}

func TestEventsEndWhenServerCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDaemon(sampleSnapshot())
		s := New(d, Actions{}, Options{})
		done := make(chan struct{})
		for range 3 {
			go func() {
				s.ServeHTTP(newFlushRecorder(), httptest.NewRequest(http.MethodGet, "/api/v1/events", nil))
				done <- struct{}{}
			}()
		}
		synctest.Wait()
		if n := d.subscribers(); n != 3 {
			t.Fatalf("%d subscribers, want 3", n)
		}
		s.Close()
		for range 3 {
			<-done
		}
		if n := d.subscribers(); n != 0 {
			t.Errorf("%d subscriptions left", n)
		}
	})
}

func TestEventsStreamLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(newFakeDaemon(sampleSnapshot()), Actions{}, Options{})
		done := make(chan struct{}, MaxStreams)
		for range MaxStreams {
			go func() {
				s.ServeHTTP(newFlushRecorder(), httptest.NewRequest(http.MethodGet, "/api/v1/events", nil))
				done <- struct{}{}
			}()
		}
		synctest.Wait()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/events", nil))
		mustEqualStatus(t, rec.Code, http.StatusServiceUnavailable)
		s.Close()
		for range MaxStreams {
			<-done
		}
	})
}

// TestEventsOverHTTP reads the stream through a real HTTP connection, with
// an injected heartbeat, and checks that a client hanging up ends the
// handler.
func TestEventsOverHTTP(t *testing.T) {
	d := newFakeDaemon(sampleSnapshot())
	beat := make(chan time.Time)
	s := New(d, Actions{}, Options{NewTicker: func(time.Duration) (<-chan time.Time, func()) { return beat, func() {} }})
	ts := httptest.NewServer(s)
	defer ts.Close()
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/v1/events", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	next := func() sseEvent {
		t.Helper()
		var block strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v (so far %q)", err, block.String())
			}
			if line == "\n" {
				if strings.HasPrefix(block.String(), "retry:") {
					block.Reset()
					continue
				}
				return parseSSE(t, block.String()+"\n")[0]
			}
			block.WriteString(line)
		}
	}
	first := statusEvents(t, []sseEvent{next()})
	if len(first) != 1 || first[0].Decision.Kind != "warn" {
		t.Fatalf("first event %+v", first)
	}
	beat <- time.Now()
	if e := next(); e.Comment != "heartbeat" {
		t.Fatalf("after a tick: %+v, want the heartbeat", e)
	}
	snap := sampleSnapshot()
	snap.UPS[0].Status = power.NewStatus(power.OB, power.LB)
	d.set(snap)
	got := statusEvents(t, []sseEvent{next()})
	if len(got) != 1 || !got[0].UPS[0].LowBattery || got[0].UPS[0].Summary != "on battery, low battery" {
		t.Fatalf("pushed event %+v", got)
	}
	// The client hangs up: the handler sees it and unsubscribes.
	cancel()
	select {
	case <-d.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not end after the client went")
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	d := newFakeDaemon(sampleSnapshot())
	s := New(d, Actions{}, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	st, err := FetchStatus(context.Background(), base)
	if err != nil || st.UPS[0].Name != "rack" {
		t.Fatalf("FetchStatus: %v %+v", err, st)
	}
	resp, err := http.Get(base + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("stream after shutdown: %v", err)
	}
	if n := d.subscribers(); n != 0 {
		t.Errorf("%d subscriptions left after Serve returned", n)
	}
	if _, err := FetchStatus(context.Background(), base); err == nil {
		t.Error("the server still answers after Serve returned")
	}
}
