package cli

import (
	"bytes"
	"context"
	"github.com/sundown-ups/sundown/internal/config/configtest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut/nuttest"
)

func run(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckListsEveryProblemAndExits2(t *testing.T) {
	code, out, errs := run(t, context.Background(), "check", "-c", "../config/testdata/everything-wrong.yaml")
	if code != 2 {
		t.Fatalf("exit %d, want 2; stdout %q stderr %q", code, out, errs)
	}
	for _, want := range []string{"16 problems", `power.deadtme (line 6): unknown key (did you mean "deadtime"?)`, "ups[2].nut.address"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestCheckExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	envRE := regexp.MustCompile(`_env:\s*([A-Z_][A-Z0-9_]*)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The secrets an example names come from the environment.
		for _, m := range envRE.FindAllStringSubmatch(string(b), -1) {
			t.Setenv(m[1], "x")
		}
		// Files under /etc/sundown/ are created in a temp dir.
		code, out, errs := run(t, context.Background(), "check", "--config-only", "-c", stagedExample(t, f))
		if code != 0 || !strings.Contains(out, ": ok (") {
			t.Errorf("check %s: exit %d, %q %q", f, code, out, errs)
		}
	}
}

func TestNoConfigIsUsageError(t *testing.T) {
	t.Setenv("SUNDOWN_CONFIG", "")
	code, _, errs := run(t, context.Background(), "watch")
	if code != 2 || !strings.Contains(errs, "give -c FILE") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

func TestWatchShowsUPSAndDecision(t *testing.T) {
	srv := nuttest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.AddUPS("ups", "", map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "80", "battery.runtime": "900"})
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	yml := "power: {poll_interval: 100ms}\nups:\n  - name: rack\n    nut: {address: \"" + srv.Addr() + "\", ups: ups}\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	code, out, errs := run(t, ctx, "watch", "-c", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"ONBATT", "rack: OB DISCHRG, charge 80 %, runtime 900 s", "Decision: warn, shutdown in 4", "s if power stays out: UPS rack: runtime"} {
		if !strings.Contains(out, want) {
			t.Errorf("watch output lacks %q:\n%s", want, out)
		}
	}
}

func stagedExample(t *testing.T, path string) string {
	file, _ := configtest.StageExample(t, path)
	return file
}
