package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/power"
)

// WriteDocsEnv names the environment variable that controls writing
// docs/BENCHMARKS.md. TestDecisionParity writes its section only when it is
// "1" (the test runs in CI, which must not touch the tree); the benchmarks,
// which only run when asked for, write theirs unless it is "0".
const WriteDocsEnv = "SUNDOWN_WRITE_DOCS"

// docsHeader starts docs/BENCHMARKS.md when the file does not exist yet.
const docsHeader = `# sundown benchmarks

sundown measured against the real NUT 2.8.0 peers (upsd, dummy-ups, upsmon)
on the machine the project's developers and CI use: **2 cores, Debian 12,
NUT 2.8.0 from Debian's packages**. The code is in ` + "`bench/`" + `; each
section below is rewritten in place by it (between its ` + "`<!-- bench:NAME -->`" + `
markers: edit outside them only) and says when it was measured.

Reproduce: ` + "`apt-get install -y nut-server nut-client`" + `, then ` + "`make bench`" + ` at the
repository root (about 6 minutes). It runs

    SUNDOWN_WRITE_DOCS=1 go test ./bench -run 'TestDecisionParity' -count=1
    SUNDOWN_WRITE_DOCS=1 go test ./bench -run '^$' -bench . -benchtime 1x -count=1

Only one upsmon can run on a machine at a time (it always writes
/run/nut/upsmon.pid): the benchmarks wait for each other's upsmon. Numbers
from a loaded machine are worse than these; the latency ones are dominated
by poll intervals, not by CPU.

<!-- bench:latency -->
_Not measured yet: run ` + "`make bench`" + `._
<!-- /bench:latency -->

<!-- bench:idle -->
_Not measured yet: run ` + "`make bench`" + `._
<!-- /bench:idle -->

<!-- bench:parity -->
_Not measured yet: run ` + "`make bench`" + `._
<!-- /bench:parity -->
`

// repoRoot returns the module's root folder (the folder of go env GOMOD).
func repoRoot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		tb.Fatalf("go env GOMOD: not inside a module (%q)", mod)
	}
	return filepath.Dir(mod)
}

// writeDocs replaces section name of docs/BENCHMARKS.md with body when
// allowed by WriteDocsEnv (always=false: only when it is "1"; always=true:
// unless it is "0").
func writeDocs(tb testing.TB, name, body string, always bool) {
	tb.Helper()
	v := os.Getenv(WriteDocsEnv)
	if v != "1" && (!always || v == "0") {
		tb.Logf("docs/BENCHMARKS.md not written (set %s=1 to write section %s)", WriteDocsEnv, name)
		return
	}
	path := filepath.Join(repoRoot(tb), "docs", "BENCHMARKS.md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatalf("docs: %v", err)
	}
	if err := writeSection(path, docsHeader, name, body); err != nil {
		tb.Fatalf("docs: %v", err)
	}
	tb.Logf("wrote section %s of %s", name, path)
}

// machineLine describes when and where a measurement ran, for the docs.
func machineLine(tb testing.TB) string {
	tb.Helper()
	osName := "unknown OS"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	nutVer := "NUT ?"
	if out, err := exec.Command(nutd.Binary(tb, "upsd"), "-V").CombinedOutput(); err == nil {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(line); len(f) > 0 {
			nutVer = "NUT " + f[len(f)-1]
		}
	}
	return fmt.Sprintf("Measured %s on %s/%s, %d cores, %s, %s, %s.",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		osName, nutVer, runtime.Version())
}

// parseConfig builds a sundown config from YAML the way the daemon does
// (strict, with defaults); env resolves password_env.
func parseConfig(tb testing.TB, yaml string, env map[string]string) *config.Config {
	tb.Helper()
	c, err := config.Parse("bench.yaml", []byte(yaml), func(k string) string { return env[k] })
	if err != nil {
		tb.Fatalf("config: %v\n%s", err, yaml)
	}
	return c
}

// stampedEvent is a power event with the moment the app handed it out.
type stampedEvent struct {
	power.Event
	Seen time.Time
}

// inProcess is sundown's daemon core running in this test.
type inProcess struct {
	App *app.App

	mu     sync.Mutex
	events []stampedEvent
	log    bytes.Buffer

	cancel context.CancelFunc
	done   chan error
}

// lockedWriter serializes writes to a buffer guarded by mu.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startApp runs app.New(cfg) with an OnEvent hook that records every event
// with time.Now(), until the test's cleanup (or Stop). Its log goes to a
// buffer (Log).
func startApp(tb testing.TB, cfg *config.Config, act bool) *inProcess {
	tb.Helper()
	p := &inProcess{done: make(chan error, 1)}
	logger := slog.New(slog.NewTextHandler(lockedWriter{&p.mu, &p.log}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := app.New(cfg, logger, app.Options{Act: act, OnEvent: func(e power.Event) {
		now := time.Now()
		p.mu.Lock()
		p.events = append(p.events, stampedEvent{e, now})
		p.mu.Unlock()
	}})
	if err != nil {
		tb.Fatalf("app.New: %v", err)
	}
	p.App = a
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- a.Run(ctx) }()
	tb.Cleanup(p.Stop)
	return p
}

// Stop ends Run and waits for it; calling it again does nothing.
func (p *inProcess) Stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	<-p.done
}

// Events returns the events recorded so far.
func (p *inProcess) Events() []stampedEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]stampedEvent(nil), p.events...)
}

// Log returns the app's log so far.
func (p *inProcess) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// firstEvent returns the first recorded event of type typ seen at or after
// after.
func (p *inProcess) firstEvent(typ power.EventType, after time.Time) (stampedEvent, bool) {
	for _, e := range p.Events() {
		if e.Type == typ && !e.Seen.Before(after) {
			return e, true
		}
	}
	return stampedEvent{}, false
}

// logged returns the time of the first log record with message msg at or
// after after.
func (p *inProcess) logged(msg string, after time.Time) (time.Time, bool) {
	for _, line := range strings.Split(p.Log(), "\n") {
		if !strings.Contains(line, "msg="+strconv.Quote(msg)) && !strings.Contains(line, "msg="+msg+" ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		v, ok := strings.CutPrefix(f[0], "time=")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, v)
		if err == nil && !at.Before(after) {
			return at, true
		}
	}
	return time.Time{}, false
}

// waitReached waits until every UPS of the app has been read once.
func (p *inProcess) waitReached(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, u := range p.App.Snapshot().UPS {
			if u.Comm != power.CommOK {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sundown: UPSes not read within %v: %+v\nlog:\n%s", timeout, p.App.Snapshot().UPS, p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
