package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
)

// DefaultAddr is where the API listens unless configured otherwise:
// loopback only.
const DefaultAddr = "127.0.0.1:8431"

// Defaults of Options.
const (
	DefaultHeartbeat  = 15 * time.Second
	DefaultRatePerMin = 6
	DefaultBurst      = 3
	// MaxBodyBytes bounds the body of a POST.
	MaxBodyBytes = 16 << 10
	// MaxStreams bounds the open event streams.
	MaxStreams = 64
	// shutdownGrace bounds the graceful shutdown of Serve.
	shutdownGrace = 5 * time.Second
)

// Daemon is what the API reads: the daemon's latest snapshot and a
// subscription to new ones. *app.App implements it.
//
// Subscribe returns a channel that always holds the latest snapshot (a slow
// reader loses intermediate ones) and a cancel function that the API calls
// exactly once when it stops reading.
type Daemon interface {
	Snapshot() app.Snapshot
	Subscribe() (<-chan app.Snapshot, func())
}

// Actions are the state-changing calls. A nil function makes its endpoint
// answer 501 Not Implemented. They run on the request's goroutine with the
// request's context and should return quickly (start the work, do not wait
// for it). An error wrapping ErrInvalid answers 400, one wrapping
// ErrConflict 409, any other 500; the error's text is sent to the client
// and written to the audit log, so it must hold no secret.
type Actions struct {
	Trigger func(ctx context.Context, r TriggerRequest) error
	Drill   func(ctx context.Context, r DrillRequest) (runID string, err error)
	Ack     func(ctx context.Context, r AckRequest) error
}

// Errors an action may wrap to choose the HTTP status.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrConflict = errors.New("conflict")
)

// Options tune a Server. The zero value serves read-only endpoints and
// refuses every state-changing call (no token).
type Options struct {
	// Token is the bearer token state-changing calls must present. Zero:
	// they are all refused with 403.
	Token config.Secret
	// AuditLog receives one JSON line per state-changing call, accepted or
	// refused. Nil: the lines go to Log at info level.
	AuditLog io.Writer
	// RatePerMin and Burst limit state-changing calls per client IP (a
	// token bucket). Zero: DefaultRatePerMin, DefaultBurst.
	RatePerMin float64
	Burst      int
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// Channels, when set, reports the notification channels' health.
	Channels func() []ChannelHealth
	// Now is the clock of the rate limiter and the audit log; nil means
	// time.Now.
	Now func() time.Time
	// Heartbeat is the interval of the event stream's comment lines
	// (default 15 s); NewTicker, if set, makes its ticks (tests).
	Heartbeat time.Duration
	NewTicker func(d time.Duration) (<-chan time.Time, func())
	// Log receives the server's own messages; nil discards them.
	Log *slog.Logger
}

// Server is the API and status page. It implements http.Handler.
type Server struct {
	d       Daemon
	act     Actions
	opt     Options
	log     *slog.Logger
	mux     *http.ServeMux
	limiter *limiter
	auditMu sync.Mutex
	page    *pageRenderer

	stopOnce sync.Once
	stopping chan struct{} // closed by Close: event streams end

	streamsMu sync.Mutex
	streams   int
}

// New returns a Server reading d and calling a.
func New(d Daemon, a Actions, o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RatePerMin <= 0 {
		o.RatePerMin = DefaultRatePerMin
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.NewTicker == nil {
		o.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	s := &Server{
		d: d, act: a, opt: o, log: o.Log,
		limiter:  newLimiter(o.RatePerMin, o.Burst),
		stopping: make(chan struct{}),
		page:     newPageRenderer(),
	}
	m := http.NewServeMux()
	m.HandleFunc("/api/v1/status", s.getOnly(s.handleStatus))
	m.HandleFunc("/api/v1/events", s.getOnly(s.handleEvents))
	m.HandleFunc("/api/v1/trigger", s.postOnly(s.handleTrigger))
	m.HandleFunc("/api/v1/drill", s.postOnly(s.handleDrill))
	m.HandleFunc("/api/v1/ack", s.postOnly(s.handleAck))
	m.HandleFunc("/metrics", s.getOnly(s.handleMetrics))
	m.HandleFunc("/assets/", s.getOnly(s.handleAsset))
	// Unknown paths are 404 whatever the method; only the page itself is
	// GET-only.
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/index.html" {
			s.handleRoot(w, r)
			return
		}
		s.getOnly(s.handleRoot)(w, r)
	})
	s.mux = m
	return s
}

// ServeHTTP serves one request. A panic in a handler is recovered, logged
// and answered with 500 when nothing was sent yet.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &respWriter{ResponseWriter: w}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.log.Error("api: handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if !rw.wrote {
			writeError(rw, http.StatusInternalServerError, "internal error; see the daemon's log")
		}
	}()
	rw.Header().Set("X-Content-Type-Options", "nosniff")
	rw.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(rw, r)
}

// Close ends every open event stream. It is idempotent; Serve calls it when
// its context ends.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// ListenAndServe listens on addr (DefaultAddr when empty) and serves until
// ctx ends; see Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down gracefully: event
// streams end, requests in flight get a few seconds to finish, then the
// remaining connections are closed. It returns after the HTTP server has
// stopped; the error is nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("api listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("api: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		_ = hs.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("api: serve %s: %w", ln.Addr(), serr)
	}
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// respWriter remembers whether anything was sent, and lets
// http.ResponseController reach the connection (flush, deadlines).
type respWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *respWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *respWriter) Flush() {
	w.wrote = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) getOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET")
			return
		}
		h(w, r)
	}
}

func (s *Server) postOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			msg := "method " + r.Method + " not allowed; use POST"
			writeError(w, http.StatusMethodNotAllowed, msg)
			s.audit(r, http.StatusMethodNotAllowed, msg, "")
			return
		}
		h(w, r)
	}
}

// errorBody is the JSON body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func (s *Server) statusOf(snap app.Snapshot) Status {
	var ch []ChannelHealth
	if s.opt.Channels != nil {
		ch = s.opt.Channels()
	}
	return StatusOf(snap, ch)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.statusOf(s.d.Snapshot()))
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.opt.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.opt.Metrics.ServeHTTP(w, r)
}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "/index.html" {
		msg := "no such endpoint: " + r.URL.Path
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			msg += " (the status page is at /)"
		}
		writeError(w, http.StatusNotFound, msg)
		return
	}
	s.servePage(w, r)
}
