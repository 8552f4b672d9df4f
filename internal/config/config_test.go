package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/sundown-ups/sundown/internal/config/configtest"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.err golden files")

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestErrorGolden checks the exact messages for every bad file under
// testdata: all problems at once, each with its path and line.
func TestErrorGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(filepath.Base(f), data, env(nil))
			if err == nil {
				t.Fatal("bad config loaded without error")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *config.Error", err)
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("error text differs from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// TestExamplesLoad loads every example config shipped in the repository.
func TestExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			// Files under /etc/sundown/ are created in a temp dir.
			_, data := configtest.StageExample(t, f)
			c, err := Parse(f, data, func(string) string { return "from-env" })
			if err != nil {
				t.Fatalf("example does not load:\n%v", err)
			}
			if len(c.UPS) == 0 {
				t.Fatal("example has no UPS")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("x.yaml", []byte("ups:\n  - name: a\n    nut: {address: 127.0.0.1, ups: u}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	u := c.UPS[0]
	if u.NUT.Address != "127.0.0.1:3493" || u.NUT.Mode != "secondary" || *u.PowerValue != 1 ||
		u.Deadtime.D() != DefaultDeadtime || u.OffGrace.D() != DefaultOffGrace || !*u.AlarmCritical {
		t.Errorf("UPS defaults not applied: %+v %+v", u, *u.NUT)
	}
	p := c.Power
	if *p.MinSupplies != 1 || p.PollInterval.D() != DefaultPollInterval || p.Debounce.D() != DefaultDebounce ||
		p.RuntimeMargin.D() != DefaultRuntimeMargin || p.ShutdownDuration.D() != DefaultShutdownDuration ||
		p.OnBatteryDelay.D() != 0 {
		t.Errorf("power defaults not applied: %+v", p)
	}
	if c.Log.Level != "info" || c.Log.Format != "text" {
		t.Errorf("log defaults: %+v", c.Log)
	}
}

func TestUPSDeadtimeInheritsPowerDeadtime(t *testing.T) {
	c, err := Parse("x.yaml", []byte("power: {deadtime: 40s}\nups:\n  - name: a\n    apcupsd: {address: \"::1\"}\n  - name: b\n    deadtime: 5s\n    apcupsd: {address: h}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.UPS[0].Deadtime.D() != 40*time.Second || c.UPS[1].Deadtime.D() != 5*time.Second {
		t.Errorf("deadtimes %v %v", c.UPS[0].Deadtime, c.UPS[1].Deadtime)
	}
	if c.UPS[0].Apcupsd.Address != "[::1]:3551" || c.UPS[1].Apcupsd.Address != "h:3551" {
		t.Errorf("addresses %q %q", c.UPS[0].Apcupsd.Address, c.UPS[1].Apcupsd.Address)
	}
}

func TestSecretsFromFileAndEnvNeverPrint(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "pass")
	if err := os.WriteFile(pf, []byte("s3cret-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`ups:
  - name: a
    nut: {address: h, ups: u, username: m, password_file: %s}
  - name: b
    nut: {address: h, ups: u, username: m, password_env: PW}
`, pf)
	c, err := Parse("x.yaml", []byte(yml), env(map[string]string{"PW": "s3cret-env"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.UPS[0].NUT.Password.Reveal(); got != "s3cret-file" {
		t.Errorf("file secret = %q", got)
	}
	if got := c.UPS[1].NUT.Password.Reveal(); got != "s3cret-env" {
		t.Errorf("env secret = %q", got)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%v %+v %#v %s %q", c, c.UPS[0].NUT, c.UPS[1].NUT, c.UPS[0].NUT.Password, c.UPS[1].NUT.Password)
	j, _ := json.Marshal(c)
	out.Write(j)
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "pw", c.UPS[0].NUT.Password, "cfg", c.UPS[1].NUT)
	for _, s := range []string{"s3cret-file", "s3cret-env"} {
		if strings.Contains(out.String(), s) {
			t.Errorf("secret %q printed: %s", s, out.String())
		}
	}
	if !strings.Contains(out.String(), "<secret>") {
		t.Error("secret placeholder not printed")
	}
}

func TestSecretProblemsDoNotLeak(t *testing.T) {
	yml := "ups:\n  - name: a\n    nut: {address: h, ups: u, username: m, password_env: PW, password_file: /nonexistent}\n" +
		"  - name: b\n    nut: {address: h, ups: u, username: m, password_file: /nonexistent/pw}\n" +
		"  - name: c\n    nut: {address: h, ups: u, username: m, password_env: UNSET}\n"
	_, err := Parse("x.yaml", []byte(yml), env(map[string]string{"PW": "leakme"}))
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	for _, want := range []string{"not both", "cannot read", "UNSET is not set"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "leakme") {
		t.Errorf("secret in error: %s", msg)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "2m": 2 * time.Minute, "1h30m": 90 * time.Minute, "500ms": 500 * time.Millisecond, "0": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"90", "1.5", "-3s", "soon", ""} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestEmptyAndMultiDocument(t *testing.T) {
	for name, in := range map[string]string{"empty": "", "two docs": "ups: []\n---\nups: []\n", "not a map": "- 1\n", "bad yaml": "ups: [\n"} {
		if _, err := Parse(name, []byte(in), env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"ups:\n  - name: a\n    nut: {address: h, ups: u}\n", "power: {deadtime: 1s}", "a: &x 1\nb: *x", "ups: [{name: 1}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse("fuzz.yaml", data, env(nil))
	})
}
