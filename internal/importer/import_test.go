package importer

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/sundown-ups/sundown/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixtures: input file, format to detect, and the passwords it holds.
var fixtures = []struct {
	file      string
	format    Format
	passwords []string
}{
	{"upsmon-dualfed.conf", Upsmon, []string{"s3cret pa55 #1", "s3cret", "nas-Pa55w0rd"}},
	{"upsmon-secondary.conf", Upsmon, []string{"hunter2"}},
	{"esxcli-list-d.txt", ESXi, []string{"Esx!Nut#2024"}},
	{"esxcfg-advcfg.txt", ESXi, []string{"Sup3r-Secret"}},
}

func importFile(t *testing.T, file, pwDir string) *Result {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Import(f, Options{PasswordDir: pwDir, Source: file})
	if err != nil {
		t.Fatalf("import %s: %v", file, err)
	}
	return res
}

func warningText(ws []Warning) string {
	var b strings.Builder
	for _, w := range ws {
		b.WriteString(w.String() + "\n")
	}
	return b.String()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", name, d)
	}
}

// TestGolden pins the YAML and the warnings of each fixture.
func TestGolden(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			res := importFile(t, fx.file, DefaultPasswordDir)
			if res.Format != fx.format {
				t.Errorf("format %s, want %s", res.Format, fx.format)
			}
			base := strings.TrimSuffix(fx.file, filepath.Ext(fx.file))
			golden(t, base+".golden.yaml", res.YAML)
			golden(t, base+".golden.warnings", []byte(warningText(res.Warnings)))
		})
	}
}

// TestLoads checks that every import loads with sundown's own config
// loader once the password files it names exist, and fails without them
// for that reason only.
func TestLoads(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			dir := t.TempDir()
			res := importFile(t, fx.file, dir)
			getenv := func(string) string { return "" }
			_, err := config.Parse(fx.file, res.YAML, getenv)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("without password files: want a *config.Error, got %v", err)
			}
			for _, p := range ce.Problems {
				if !strings.HasSuffix(p.Path, ".nut.password_file") {
					t.Errorf("unexpected problem: %s", p)
				}
			}
			if len(ce.Problems) != len(res.PasswordFiles) {
				t.Errorf("%d problems, want one per password file (%d):\n%v", len(ce.Problems), len(res.PasswordFiles), err)
			}
			for _, pf := range res.PasswordFiles {
				if err := os.WriteFile(pf.Path, []byte("pw-"+pf.UPS+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := config.Parse(fx.file, res.YAML, getenv)
			if err != nil {
				t.Fatalf("with password files: %v\n%s", err, res.YAML)
			}
			for _, u := range c.UPS {
				if u.NUT.Username != "" && u.NUT.Password.Reveal() != "pw-"+u.Name {
					t.Errorf("%s: password from file not loaded", u.Name)
				}
			}
		})
	}
}

// TestWhatMaps checks the values that reach sundown, through the loader.
func TestWhatMaps(t *testing.T) {
	load := func(t *testing.T, file string) *config.Config {
		dir := t.TempDir()
		res := importFile(t, file, dir)
		for _, pf := range res.PasswordFiles {
			if err := os.WriteFile(pf.Path, []byte("x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c, err := config.Parse(file, res.YAML, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	type ups struct {
		Name, Address, NUTName, User, Mode, PrimaryWait, OffGrace string
		PowerValue                                                int
		AlarmCritical                                             bool
	}
	summary := func(c *config.Config) []ups {
		var out []ups
		for _, u := range c.UPS {
			out = append(out, ups{u.Name, u.NUT.Address, u.NUT.UPS, u.NUT.Username, u.NUT.Mode,
				u.NUT.PrimaryWait.String(), u.OffGrace.String(), *u.PowerValue, *u.AlarmCritical})
		}
		return out
	}

	c := load(t, "upsmon-dualfed.conf")
	want := []ups{
		{"rack", "localhost:3493", "rack", "upsmon", "primary", "20s", "45s", 1, false},
		{"ups", "nas.example.lan:3493", "ups", "monslave", "secondary", "1m0s", "45s", 1, false},
	}
	if d := cmp.Diff(want, summary(c)); d != "" {
		t.Errorf("dual-fed UPSes (-want +got):\n%s", d)
	}
	if *c.Power.MinSupplies != 1 || c.Power.Deadtime.String() != "25s" || c.Power.NoCommWarn.String() != "10m0s" {
		t.Errorf("power: min_supplies %d deadtime %s nocomm_warn %s", *c.Power.MinSupplies, c.Power.Deadtime, c.Power.NoCommWarn)
	}
	if c.Power.PollInterval.D() != config.DefaultPollInterval {
		t.Errorf("poll_interval %s: POLLFREQ must not be carried over", c.Power.PollInterval)
	}

	c = load(t, "esxcli-list-d.txt")
	want = []ups{
		{"eaton5px-10.0.0.20", "10.0.0.20:3493", "eaton5px", "esxmon", "secondary", "1m0s", "30s", 1, true},
		{"eaton5px-10.0.0.21", "10.0.0.21:3493", "eaton5px", "esxmon", "secondary", "1m0s", "30s", 1, true},
	}
	if d := cmp.Diff(want, summary(c)); d != "" {
		t.Errorf("ESXi UPSes (-want +got):\n%s", d)
	}
	if c.Power.OnBatteryDelay.String() != "5m0s" || *c.Power.MinSupplies != 1 {
		t.Errorf("power: on_battery_delay %s min_supplies %d", c.Power.OnBatteryDelay, *c.Power.MinSupplies)
	}
}

// TestNoSecretLeaks: no password of the input appears in the YAML or the
// warnings.
func TestNoSecretLeaks(t *testing.T) {
	for _, fx := range fixtures {
		res := importFile(t, fx.file, DefaultPasswordDir)
		out := string(res.YAML) + warningText(res.Warnings)
		for _, pw := range fx.passwords {
			if strings.Contains(out, pw) {
				t.Errorf("%s: password %q leaked into the output", fx.file, pw)
			}
		}
	}
}

// TestWarningsHaveLines: every unsupported directive of the fixture is
// reported with its line.
func TestWarningsHaveLines(t *testing.T) {
	res := importFile(t, "upsmon-dualfed.conf", DefaultPasswordDir)
	src, err := os.ReadFile("testdata/upsmon-dualfed.conf")
	if err != nil {
		t.Fatal(err)
	}
	mapped := map[string]bool{"MONITOR": true, "MINSUPPLIES": true, "DEADTIME": true, "NOCOMMWARNTIME": true,
		"HOSTSYNC": true, "OFFDURATION": true, "ALARMCRITICAL": true}
	byLine := map[int]string{}
	for _, w := range res.Warnings {
		byLine[w.Line] = w.Directive
	}
	for i, l := range strings.Split(string(src), "\n") {
		f, _ := splitFields(l)
		if len(f) == 0 || mapped[f[0]] {
			continue
		}
		if byLine[i+1] != f[0] {
			t.Errorf("line %d (%s): no warning", i+1, f[0])
		}
	}
	if !bytes.Contains(res.YAML, []byte("# DEADTIME 25 (line 19)")) {
		t.Errorf("the YAML does not say where deadtime came from:\n%s", res.YAML)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		format   Format
		want     error
	}{
		{"empty", "", Auto, ErrNoUPS},
		{"only comments", "# nothing\n\n", Upsmon, ErrNoUPS},
		{"bad monitor", "MONITOR @host 1 u p slave\nMONITOR ups@h:99999 1 u p slave\n", Upsmon, ErrNoUPS},
		{"esxi placeholder", "Value of NutUpsName is upsname@nutserver\n", Auto, ErrNoUPS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Import(strings.NewReader(tc.in), Options{Format: tc.format})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.name == "bad monitor" && (res == nil || len(res.Warnings) != 2) {
				t.Errorf("want a warning per bad MONITOR line, got %+v", res)
			}
		})
	}
	if _, err := Import(strings.NewReader("x"), Options{Format: "yaml"}); err == nil {
		t.Error("unknown format: want an error")
	}
}

func TestSplitFields(t *testing.T) {
	for in, want := range map[string][]string{
		`MONITOR ups@h 1 u "p w #x" primary # note`: {"MONITOR", "ups@h", "1", "u", "p w #x", "primary"},
		"\tPOLLFREQ   5  ":                          {"POLLFREQ", "5"},
		`NOTIFYCMD /usr/bin/a\ b`:                   {"NOTIFYCMD", "/usr/bin/a b"},
		`X "a\"b"`:                                  {"X", `a"b`},
		`X ""`:                                      {"X", ""},
		`# all comment`:                             nil,
		`X a#b`:                                     {"X", "a"}, // as NUT's parseconf: # ends the word
	} {
		got, err := splitFields(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%q (-want +got):\n%s", in, d)
		}
	}
	if _, err := splitFields(`X "open`); err == nil {
		t.Error("unclosed quote: want an error")
	}
}

func TestParseSystem(t *testing.T) {
	for in, want := range map[string][3]string{
		"ups":                {"ups", "localhost", "3493"},
		"ups@nas":            {"ups", "nas", "3493"},
		"ups@nas:3494":       {"ups", "nas", "3494"},
		"ups@[::1]:3495":     {"ups", "::1", "3495"},
		"ups@[fe80::1]":      {"ups", "fe80::1", "3493"},
		"ups@2001:db8::7":    {"ups", "2001:db8::7", "3493"},
		"ups@10.0.0.5:3493":  {"ups", "10.0.0.5", "3493"},
		"my-ups.1@h.example": {"my-ups.1", "h.example", "3493"},
	} {
		u, h, p, err := parseSystem(in)
		if err != nil || [3]string{u, h, p} != want {
			t.Errorf("%q: got %q %q %q %v, want %q", in, u, h, p, err, want)
		}
	}
	for _, bad := range []string{"@h", "ups@", "ups@h:0", "ups@h:x", "ups@[::1", "ups@[::1]x"} {
		if _, _, _, err := parseSystem(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestNames(t *testing.T) {
	d := &draft{ups: []upsDraft{
		{nutName: "ups", host: "a"}, {nutName: "ups", host: "b"}, {nutName: "x y"}, {nutName: "éé"}, {nutName: "ups-a"},
	}}
	d.nameUPSes()
	var got []string
	for _, u := range d.ups {
		got = append(got, u.name)
	}
	want := []string{"ups-a", "ups-b", "x-y", "ups", "ups-a-2"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("names (-want +got):\n%s", d)
	}
}

func TestDetect(t *testing.T) {
	for in, want := range map[string]Format{
		"MONITOR ups@h 1 u p slave\n":          Upsmon,
		"   Path: /UserVars/NutUpsName\n":      ESXi,
		"Value of NutUser is x\n":              ESXi,
		"UserVars.NutUpsName = ups@h\n":        ESXi,
		"# NutClient users: see upsmon.conf\n": Upsmon,
	} {
		if got := Detect([]byte(in)); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

func FuzzImport(f *testing.F) {
	for _, fx := range fixtures {
		b, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("MONITOR \"a\\"))
	f.Add([]byte("   Path: /UserVars/NutUpsName\n   Type: string\n   String Value: a@[::1]:1 b@c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Import(bytes.NewReader(data), Options{})
		if err != nil {
			return
		}
		var v any
		if len(res.YAML) == 0 {
			t.Fatal("no error and no YAML")
		}
		if err := yaml.Unmarshal(res.YAML, &v); err != nil {
			t.Fatalf("the output is not YAML: %v\n%s", err, res.YAML)
		}
	})
}
