package ready

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// immediateClock ticks as soon as Wait asks, so real-socket tests run at
// the speed of the sockets and are paced by attempt counts, not time.
type immediateClock struct{}

func (immediateClock) NewTicker(time.Duration) Ticker { return immediateTicker{} }

type immediateTicker struct{}

var closedTicks = func() chan time.Time { c := make(chan time.Time); close(c); return c }()

func (immediateTicker) C() <-chan time.Time { return closedTicks }
func (immediateTicker) Stop()               {}

var fast = Waiter{Clock: immediateClock{}}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reservePort returns a loopback TCP address nothing listens on now.
func reservePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// countingProbe wraps a probe and counts attempts. before(n) runs ahead of
// attempt n (the hook that opens a listener "late"), after(n) once it is
// done (the hook that ends the context after a given attempt).
type countingProbe struct {
	Probe
	n             int
	before, after func(n int)
	errs          []error
}

func (p *countingProbe) Check(ctx context.Context) error {
	p.n++
	if p.before != nil {
		p.before(p.n)
	}
	err := p.Probe.Check(ctx)
	if err != nil {
		p.errs = append(p.errs, err)
	}
	if p.after != nil {
		p.after(p.n)
	}
	return err
}

// TestTCPListenerStartsLate: the port opens just before the 5th attempt;
// the first four are refused, the fifth passes.
func TestTCPListenerStartsLate(t *testing.T) {
	addr := reservePort(t)
	tcp, err := TCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	p := &countingProbe{Probe: tcp, before: func(n int) {
		if n == 5 {
			var err error
			if l, err = net.Listen("tcp", addr); err != nil {
				t.Errorf("listen late on %s: %v", addr, err)
			}
		}
	}}
	if err := fast.Wait(testCtx(t), p, time.Second); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if l == nil {
		t.Fatal("listener never opened")
	}
	defer l.Close()
	if p.n != 5 || len(p.errs) != 4 {
		t.Fatalf("%d attempts, %d failures; want 5 and 4", p.n, len(p.errs))
	}
	for _, err := range p.errs {
		if !errors.Is(err, syscall.ECONNREFUSED) || err.Error() != "connection refused" {
			t.Fatalf("failure %q (%T), want a bare connection refused", err, err)
		}
	}
}

// TestTCPNeverListens: the message names the probe, the last error and
// the attempt count, with the context's end driven by the count.
func TestTCPNeverListens(t *testing.T) {
	addr := reservePort(t)
	tcp, err := TCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	p := &countingProbe{Probe: tcp, after: func(n int) {
		if n == 12 {
			cancel()
		}
	}}
	err = fast.Wait(ctx, p, time.Second)
	want := "tcp " + addr + ": connection refused after 12 attempts"
	if err == nil || err.Error() != want {
		t.Fatalf("Wait error = %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, context.Canceled) {
		t.Fatal("errors.Is does not reach ECONNREFUSED and context.Canceled")
	}
}

func TestTCPDeadline(t *testing.T) {
	addr := reservePort(t)
	tcp, _ := TCP(addr)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := Wait(ctx, tcp, 20*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Wait = %v", err)
	}
	if !strings.HasPrefix(err.Error(), "tcp "+addr+": connection refused after ") {
		t.Fatalf("error text %q", err)
	}
}

func TestTCPValidation(t *testing.T) {
	for _, addr := range []string{"", "host", ":5432", "host:", "host:99999", "host:nosuchservice"} {
		if _, err := TCP(addr); err == nil {
			t.Errorf("TCP(%q) accepted", addr)
		}
	}
	p, err := TCP("[::1]:22")
	if err != nil || p.String() != "tcp [::1]:22" {
		t.Fatalf("TCP([::1]:22) = %v, %v", p, err)
	}
}

// checkNoLeak fails the test if goroutines started during it are still
// running shortly after it (and its deferred server Close) ended.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond) // waiting for socket goroutines to end
		}
	})
}

// flakyHandler answers 503 to the first n requests, then 200 with body.
type flakyHandler struct {
	n    int64
	seen atomic.Int64
	body string
}

func (h *flakyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.seen.Add(1) <= h.n {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprint(w, h.body)
}

func TestHTTPServerStartsLateThenWarmsUp(t *testing.T) {
	addr := reservePort(t)
	h := &flakyHandler{n: 2, body: "status: ready"}
	srv := httptest.NewUnstartedServer(h)
	defer srv.Close()
	probe, err := NewHTTP(HTTPConfig{URL: "http://" + addr + "/health", Contains: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	p := &countingProbe{Probe: probe, before: func(n int) {
		if n == 3 { // refused twice, then up but answering 503 twice
			once.Do(func() {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("listen late: %v", err)
					return
				}
				srv.Listener.Close()
				srv.Listener = l
				srv.Start()
			})
		}
	}}
	if err := fast.Wait(testCtx(t), p, time.Second); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if p.n != 5 {
		t.Fatalf("%d attempts, want 5 (2 refused, 2 × 503, 1 ok)", p.n)
	}
	wantErrs := []string{"connection refused", "connection refused",
		"status 503 Service Unavailable, want 2xx", "status 503 Service Unavailable, want 2xx"}
	for i, err := range p.errs {
		if err.Error() != wantErrs[i] {
			t.Errorf("attempt %d: %q, want %q", i+1, err, wantErrs[i])
		}
	}
}

func TestHTTPStatusAndBody(t *testing.T) {
	checkNoLeak(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/redirect":
			http.Redirect(w, r, "/body", http.StatusFound)
		default:
			fmt.Fprint(w, "vCenter is initializing")
		}
	}))
	defer srv.Close()
	ctx := testCtx(t)
	for _, tc := range []struct {
		cfg     HTTPConfig
		wantErr string
	}{
		{HTTPConfig{URL: srv.URL + "/body"}, ""},
		{HTTPConfig{URL: srv.URL + "/nocontent"}, ""},
		{HTTPConfig{URL: srv.URL + "/nocontent", Status: 200}, "status 204 No Content, want 200"},
		{HTTPConfig{URL: srv.URL + "/teapot"}, "status 418 I'm a teapot, want 2xx"},
		{HTTPConfig{URL: srv.URL + "/teapot", Status: 418}, ""},
		{HTTPConfig{URL: srv.URL + "/body", Contains: "initializing"}, ""},
		{HTTPConfig{URL: srv.URL + "/body", Contains: "ready"}, `status 200 but body does not contain "ready"`},
		{HTTPConfig{URL: srv.URL + "/redirect", Contains: "vCenter"}, ""},
	} {
		p, err := NewHTTP(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = p.Check(ctx)
		if (tc.wantErr == "") != (err == nil) || (err != nil && err.Error() != tc.wantErr) {
			t.Errorf("%+v: Check = %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
}

func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHTTPSWithCAFile(t *testing.T) {
	checkNoLeak(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	defer srv.Close()
	ctx := testCtx(t)

	trusted, err := NewHTTP(HTTPConfig{URL: srv.URL, CAFile: writeCA(t, srv), Contains: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if err := trusted.Check(ctx); err != nil {
		t.Fatalf("with CA file: %v", err)
	}

	untrusted, err := NewHTTP(HTTPConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = untrusted.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("without CA file: %v", err)
	}

	// The right CA but the wrong name: verification stays on.
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	wrongName, err := NewHTTP(HTTPConfig{URL: "https://localhost:" + strconv.Itoa(port), CAFile: writeCA(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	if err := wrongName.Check(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wrong host name: %v", err)
	}
}

func TestHTTPValidationAndRedaction(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  HTTPConfig
		want string
	}{
		{HTTPConfig{URL: "ftp://h/x"}, `scheme "ftp"`},
		{HTTPConfig{URL: "http:///x"}, "no host"},
		{HTTPConfig{URL: "http://h/x", Status: 42}, "status 42"},
		{HTTPConfig{URL: "http://h/x", Timeout: -1}, "timeout -1ns"},
		{HTTPConfig{URL: "http://h/x", CAFile: filepath.Join(dir, "missing.pem")}, "no such file"},
		{HTTPConfig{URL: "http://h/x", CAFile: notPEM}, "no PEM certificate"},
		{HTTPConfig{URL: "http://u:hunter2@h:%zz/"}, "URL does not parse"},
	} {
		_, err := NewHTTP(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("NewHTTP(%+v) = %v, want it to contain %q", tc.cfg, err, tc.want)
		}
	}

	// A password in the URL is sent but never shown.
	var gotUser, gotPass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUser, gotPass, _ = r.BasicAuth()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://monitor:hunter2@", 1)
	p, err := NewHTTP(HTTPConfig{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	n := 0
	err = fast.Wait(ctx, Func("", func(ctx context.Context) error {
		if n++; n == 2 {
			cancel()
		}
		return p.Check(ctx)
	}), time.Second)
	if gotUser != "monitor" || gotPass != "hunter2" {
		t.Fatalf("basic auth sent: %q %q", gotUser, gotPass)
	}
	if strings.Contains(p.String(), "hunter2") || !strings.Contains(p.String(), "monitor:xxxxx@") {
		t.Fatalf("String() = %q", p.String())
	}
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Wait error shows the password: %v", err)
	}

	// Connection errors carry no URL (and so no password) either.
	refused, err := NewHTTP(HTTPConfig{URL: "http://monitor:hunter2@" + reservePort(t) + "/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := refused.Check(testCtx(t)); err == nil || err.Error() != "connection refused" {
		t.Fatalf("refused: %v", err)
	}
}
