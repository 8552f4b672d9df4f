package app_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
)

func TestHooks(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "ran")
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$SUNDOWN_HOOK\" > "+mark+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.Path
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := testConfig(t, `ups:
  - name: rack
    nut: {address: 127.0.0.1, ups: u}
shutdown:
  hooks:
    - {name: script, exec: {command: ["`+script+`"]}}
    - {name: fails, exec: {command: ["/bin/sh", "-c", "echo boom >&2; exit 3"]}}
    - {name: slow, timeout: 200ms, exec: {command: ["/bin/sleep", "5"]}}
    - {name: call, http: {url: "`+srv.URL+`/pause"}}
    - {name: refused, http: {url: "`+srv.URL+`/fail"}}
`)
	run := app.RunHook(c)
	hook := func(name string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return run(ctx, plan.Step{Name: name, Kind: plan.StepHook})
	}
	if err := hook("script", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(mark); strings.TrimSpace(string(b)) != "script" {
		t.Errorf("exec hook did not run with SUNDOWN_HOOK: %q", b)
	}
	if err := hook("fails", 5*time.Second); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failing hook: %v, want its stderr in the error", err)
	}
	start := time.Now()
	if err := hook("slow", 200*time.Millisecond); err == nil {
		t.Error("a hook past its timeout succeeded")
	} else if d := time.Since(start); d > 3*time.Second {
		t.Errorf("hook timeout took %s", d)
	}
	if err := hook("call", 5*time.Second); err != nil || got != "POST /pause" {
		t.Errorf("http hook: %v, server saw %q", err, got)
	}
	if err := hook("refused", 5*time.Second); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("http hook answered 503: %v", err)
	}
	if err := hook("nope", time.Second); err == nil {
		t.Error("unknown hook ran")
	}
}
