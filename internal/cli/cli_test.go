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
		code, out, errs := run(t, context.Background(), "check", "-c", stagedExample(t, f))
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

// The demo is the README's first command: it must finish, decide, set FSD
// and hold the latch. Run fast here.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo takes ~25 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	code, out, errs := run(t, ctx, "demo", "--speed", "30")
	if code != 0 {
		t.Fatalf("demo exit %d: %s\n%s", code, errs, out)
	}
	for _, want := range []string{"The mains power fails", "ONBATT", "Decision: shutdown: UPS rack: runtime",
		"(from plan estimate)", "FSD", "group web stopped", "legacy-erp (ungrouped)       escalates: guest legacy-erp not off within 6s",
		"esx-03                       host shutting down", "vCenter 20 of 20 VMs off", "Proxmox 4 of 4 guests off", "pve-1                        host shutting down", "0 step(s) failed", "ONLINE", "Demo finished"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	checkDemoOrder(t, out)
	if strings.Contains(out, demoPassword) {
		t.Error("demo printed its NUT password")
	}
}

// The web group stops before app, app before db, db before dc, and
// esx-03 (carrying sundown) shuts down after every other step.
func checkDemoOrder(t *testing.T, out string) {
	t.Helper()
	idx := func(s string) int {
		i := strings.Index(out, s)
		if i < 0 {
			t.Fatalf("output lacks %q:\n%s", s, out)
		}
		return i
	}
	order := []string{"group web stopped", "group app stopped", "group db stopped", "group dc stopped", "esx-03                       host shutting down", "shutdown finished"}
	for i := 1; i < len(order); i++ {
		if idx(order[i-1]) > idx(order[i]) {
			t.Errorf("%q came after %q", order[i-1], order[i])
		}
	}
	if idx("app-1 (app)                  shutdown") < idx("group web stopped") || idx("db-1 (db)                    shutdown") < idx("group app stopped") || idx("dc-1 (dc)                    shutdown") < idx("group db stopped") {
		t.Error("a group started before the group depending on it had stopped")
	}
}

func stagedExample(t *testing.T, path string) string {
	file, _ := configtest.StageExample(t, path)
	return file
}
