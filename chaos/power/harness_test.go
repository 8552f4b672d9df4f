package power

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/sundown-ups/sundown/internal/peer/sundownbin"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// Secrets every scenario configures, distinctive enough that any
// occurrence in an output is a leak.
const (
	nutPassword = "nutpw-Chaos-7Qx2Vb9L-leak"
	apiToken    = "apitok-Chaos-K4m8Zr1P-leak"

	nutPassEnv  = "CHAOS_NUT_PASSWORD"
	apiTokenEnv = "CHAOS_API_TOKEN"
)

// Timing shared by the scenarios.
const (
	poll = 500 * time.Millisecond // power.poll_interval of every config
	// slack covers a loaded 2-core CI machine running other packages'
	// tests and a race-enabled daemon: added to upper bounds only.
	slack = 3 * time.Second
)

// TestMain raises -test.parallel (default GOMAXPROCS, 2 here) unless it was
// given: the scenarios spend their time waiting for deadtimes, not
// computing, and run one beside the other.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", "16")
	}
	os.Exit(m.Run())
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// sundownBinary builds cmd/sundown once per test binary into dir (the
// top-level test's TempDir), with the race detector when this test binary
// has it.
func sundownBinary(t *testing.T, dir string) string {
	t.Helper()
	buildOnce.Do(func() {
		var took time.Duration
		builtBin, took, buildErr = sundownbin.Build(context.Background(), dir)
		if buildErr == nil {
			t.Logf("built %s (race %v) in %.1fs", builtBin, sundownbin.Race(), took.Seconds())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// suite is what every scenario shares: the binary and the secret scanner.
type suite struct {
	bin     string
	scan    *secretScanner
	started atomic.Int32 // daemons started

	mu      sync.Mutex
	logDups map[string]string // "msg: key" → an example line, for log lines with a repeated key
}

// daemonSpec describes one `sundown run`.
type daemonSpec struct {
	name string
	// body is the YAML after state_dir, log and api: power and ups.
	body string
	// api replaces the default extra api settings (after listen and
	// token_env), e.g. "rate_per_min: 600, burst: 100".
	api string
	// wrap runs the daemon through a command (e.g. nsenter into a
	// network namespace); it must exec the daemon so the PID stays.
	wrap []string
	// httpc reaches the daemon's API (default: a plain client).
	httpc *http.Client
}

// daemon is one running `sundown run` child process.
type daemon struct {
	name     string
	logPath  string
	stateDir string
	p        *proc.Proc
	api      string // http://127.0.0.1:PORT
	httpc    *http.Client
}

// configHeader is the part of every config the harness owns.
func configHeader(dir, api string) string {
	return `state_dir: ` + strconv.Quote(filepath.Join(dir, "state")) + `
log: {level: debug, format: json}
api: {listen: "127.0.0.1:0", token_env: ` + apiTokenEnv + `, ` + api + `}
`
}

// start writes the config, starts the daemon and waits until it serves its
// API. Cleanup stops it by PID (SIGTERM, it must exit 0), scans its
// output for secrets and shows it when the test failed.
func (s *suite) start(t *testing.T, spec daemonSpec) *daemon {
	t.Helper()
	dir := t.TempDir()
	if spec.api == "" {
		spec.api = "rate_per_min: 600, burst: 100"
	}
	cfg := filepath.Join(dir, "sundown.yaml")
	pwFile := filepath.Join(dir, "nut.pw")
	yml := configHeader(dir, spec.api) + strings.ReplaceAll(spec.body, "NUT_PW_FILE", strconv.Quote(pwFile))
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	// A password file for the configs that prefer it to the environment.
	if err := os.WriteFile(pwFile, []byte(nutPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: spec.name, logPath: filepath.Join(dir, "daemon.log"),
		stateDir: filepath.Join(dir, "state"), httpc: spec.httpc}
	if d.httpc == nil {
		d.httpc = &http.Client{Timeout: 5 * time.Second}
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SUNDOWN_CONFIG=") {
			env = append(env, e)
		}
	}
	env = append(env, nutPassEnv+"="+nutPassword, apiTokenEnv+"="+apiToken)
	path, args := s.bin, []string{"run", "-c", cfg}
	if len(spec.wrap) > 0 {
		path, args = spec.wrap[0], append(append(spec.wrap[1:len(spec.wrap):len(spec.wrap)], s.bin), args...)
	}
	p, err := proc.Start("sundown "+spec.name, path, args, env, d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.p = p
	s.started.Add(1)
	t.Cleanup(func() { d.cleanup(t, s, yml) })
	l := d.waitLog(t, "the API address", 30*time.Second, func(l logLine) bool { return l.Msg == "status page and API" })
	d.api = strings.TrimSuffix(l.str("url"), "/")
	if !strings.HasPrefix(d.api, "http://127.0.0.1:") {
		t.Fatalf("the %s daemon logged API url %q", d.name, d.api)
	}
	d.waitLog(t, "sundown running", 10*time.Second, func(l logLine) bool { return l.Msg == "sundown running" })
	return d
}

func (d *daemon) cleanup(t *testing.T, s *suite, config string) {
	scan := s.scan
	exited := d.p.Exited()
	if err := d.p.Stop(15 * time.Second); err != nil {
		t.Errorf("stop the %s daemon: %v", d.name, err)
	}
	switch {
	case exited:
		t.Errorf("the %s daemon had exited by itself (%v) before the end of the scenario", d.name, d.p.ExitErr())
	case d.p.ExitErr() != nil:
		t.Errorf("the %s daemon exited with %v on SIGTERM, want status 0", d.name, d.p.ExitErr())
	}
	out, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Errorf("read the %s daemon's output: %v", d.name, err)
	}
	for _, hit := range scan.scan(t.Name()+": "+d.name+" stdout/stderr", out) {
		t.Errorf("secret leaked: %s", hit)
	}
	// The API audit log records every refused call: no token in it either.
	if b, err := os.ReadFile(filepath.Join(d.stateDir, "audit.jsonl")); err == nil {
		for _, hit := range scan.scan(t.Name()+": "+d.name+" audit log", b) {
			t.Errorf("secret leaked: %s", hit)
		}
	}
	for _, l := range d.lines(t) {
		for k := range l.dup {
			b, _ := json.Marshal(map[string]any{"first": l.attrs[k], "repeated": l.dup[k]})
			s.mu.Lock()
			if s.logDups == nil {
				s.logDups = map[string]string{}
			}
			s.logDups[fmt.Sprintf("%q: key %q", l.Msg, k)] = string(b)
			s.mu.Unlock()
		}
	}
	if bytes.Contains(out, []byte("WARNING: DATA RACE")) {
		t.Errorf("the %s daemon reported a data race", d.name)
	}
	if t.Failed() {
		t.Logf("--- %s daemon config:\n%s", d.name, config)
		if len(out) > 64<<10 {
			out = append([]byte("…"), out[len(out)-64<<10:]...)
		}
		t.Logf("--- %s daemon (pid %d) output:\n%s", d.name, d.p.PID(), out)
	}
}

// logLine is one JSON log line of the daemon.
type logLine struct {
	Time  time.Time
	Level string
	Msg   string
	attrs map[string]any // first value of each key
	dup   map[string]any // keys written more than once: the later value
}

func (l logLine) str(key string) string {
	switch v := l.attrs[key].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// eventText is the message of a "power event" line: logged as an
// attribute "msg" beside slog's own (see uniqueLogKeys), or "message".
func (l logLine) eventText() string {
	if v, ok := l.dup["msg"].(string); ok {
		return v
	}
	return l.str("message")
}

func (l logLine) String() string {
	b, _ := json.Marshal(l.attrs)
	return fmt.Sprintf("%s %s %q %s", l.Time.Format("15:04:05.000"), l.Level, l.Msg, b)
}

// lines parses the daemon's output so far; lines that are not JSON (a
// race report, a panic) are skipped here and still scanned for secrets.
func (d *daemon) lines(t *testing.T) []logLine {
	t.Helper()
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Fatalf("read the %s daemon's output: %v", d.name, err)
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		raw := sc.Bytes()
		if len(raw) == 0 || raw[0] != '{' || !bytes.HasSuffix(raw, []byte("}")) {
			continue
		}
		l, ok := parseLogLine(raw)
		if !ok {
			continue
		}
		out = append(out, l)
	}
	return out
}

// parseLogLine decodes one JSON object keeping the first value of every
// key (slog writes the message first) and the later values of repeated
// keys in dup.
func parseLogLine(raw []byte) (logLine, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return logLine{}, false
	}
	l := logLine{attrs: map[string]any{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return logLine{}, false
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return logLine{}, false
		}
		if _, seen := l.attrs[key]; seen {
			if l.dup == nil {
				l.dup = map[string]any{}
			}
			l.dup[key] = v
			continue
		}
		l.attrs[key] = v
	}
	l.Level, _ = l.attrs["level"].(string)
	l.Msg, _ = l.attrs["msg"].(string)
	if s, ok := l.attrs["time"].(string); ok {
		l.Time, _ = time.Parse(time.RFC3339Nano, s)
	}
	return l, true
}

// find returns the lines matching pred.
func (d *daemon) find(t *testing.T, pred func(logLine) bool) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range d.lines(t) {
		if pred(l) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog polls the output until a line matches; it fails when the daemon
// exits or the timeout passes.
func (d *daemon) waitLog(t *testing.T, what string, timeout time.Duration, pred func(logLine) bool) logLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ls := d.find(t, pred); len(ls) > 0 {
			return ls[0]
		}
		if d.p.Exited() {
			t.Fatalf("the %s daemon exited (%v) while waiting for %s", d.name, d.p.ExitErr(), what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s daemon: no %s within %s", d.name, what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Predicates on log lines.

func isShutdownDecision(l logLine) bool {
	return l.Msg == "decision" && strings.HasPrefix(l.str("decision"), "shutdown")
}

func isEvent(ups, event string, after time.Time) func(logLine) bool {
	return func(l logLine) bool {
		return l.Msg == "power event" && l.str("ups") == ups && l.str("event") == event && !l.Time.Before(after)
	}
}

// hold watches the daemon for dur: it fails at once if the daemon exits or
// decides a shutdown.
func (d *daemon) hold(t *testing.T, what string, dur time.Duration) {
	t.Helper()
	end := time.Now().Add(dur)
	for {
		d.noShutdown(t, what)
		if time.Now().After(end) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noShutdown fails if the daemon has exited or decided a shutdown.
func (d *daemon) noShutdown(t *testing.T, what string) {
	t.Helper()
	if d.p.Exited() {
		t.Fatalf("%s: the %s daemon exited (%v)", what, d.name, d.p.ExitErr())
	}
	if ls := d.find(t, isShutdownDecision); len(ls) > 0 {
		t.Fatalf("%s: the daemon decided a shutdown: %s", what, ls[0])
	}
}

// upsStatus is one UPS in GET /api/v1/status.
type upsStatus struct {
	Name      string    `json:"name"`
	Summary   string    `json:"summary"`
	Status    []string  `json:"status"`
	OnLine    bool      `json:"on_line"`
	OnBattery bool      `json:"on_battery"`
	Comm      string    `json:"comm"`
	CommError string    `json:"comm_error"`
	Reached   bool      `json:"reached"`
	LastSeen  time.Time `json:"last_seen"`
	Critical  bool      `json:"critical"`
	Supplying bool      `json:"supplying"`
	Verdict   string    `json:"verdict"`
}

// apiStatus is the part of GET /api/v1/status the scenarios read.
type apiStatus struct {
	UPS      []upsStatus `json:"ups"`
	Decision struct {
		Kind    string    `json:"kind"`
		Summary string    `json:"summary"`
		At      time.Time `json:"at"`
		Supply  int       `json:"supply"`
	} `json:"decision"`
}

// ups returns the status of the named UPS, failing the test if absent.
func (s apiStatus) ups(t *testing.T, name string) upsStatus {
	t.Helper()
	for _, u := range s.UPS {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("no UPS %q in the API status", name)
	return upsStatus{}
}

// fetchStatus reads /api/v1/status once and returns how long it took.
func (d *daemon) fetchStatus(ctx context.Context) (apiStatus, time.Duration, error) {
	var st apiStatus
	begin := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.api+"/api/v1/status", nil)
	if err != nil {
		return st, 0, err
	}
	resp, err := d.httpc.Do(req)
	if err != nil {
		return st, time.Since(begin), fmt.Errorf("GET /api/v1/status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	took := time.Since(begin)
	if err != nil {
		return st, took, fmt.Errorf("GET /api/v1/status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, took, fmt.Errorf("GET /api/v1/status: %s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, took, fmt.Errorf("GET /api/v1/status: %w: %s", err, body)
	}
	return st, took, nil
}

func (d *daemon) status(t *testing.T) apiStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, _, err := d.fetchStatus(ctx)
	if err != nil {
		t.Fatalf("the %s daemon's API: %v", d.name, err)
	}
	return st
}

// waitStatus polls the API until cond holds.
func (d *daemon) waitStatus(t *testing.T, what string, timeout time.Duration, cond func(apiStatus) bool) apiStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last apiStatus
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		st, _, err := d.fetchStatus(ctx)
		cancel()
		if err == nil && cond(st) {
			return st
		}
		if err == nil {
			last = st
		}
		lastErr = err
		if d.p.Exited() {
			t.Fatalf("the %s daemon exited (%v) while waiting for %s", d.name, d.p.ExitErr(), what)
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(last)
			t.Fatalf("the %s daemon: no %s within %s (last error %v; last status %s)", d.name, what, timeout, lastErr, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commOK: the daemon has a fresh reading of the UPS with the given status.
func commOK(ups string, status string) func(apiStatus) bool {
	return func(s apiStatus) bool {
		for _, u := range s.UPS {
			if u.Name == ups {
				return u.Comm == "ok" && strings.Join(u.Status, " ") == status
			}
		}
		return false
	}
}

// within fails unless lo <= got <= hi.
func within(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s: %.2fs, want between %.2fs and %.2fs", what, got.Seconds(), lo.Seconds(), hi.Seconds())
	}
}

// Peers.

// nutUsers are the upsd users of every real server: sundown's (upsmon
// primary, with the secret password) and another client's, which may set
// FSD.
var nutUsers = []nutd.User{
	{Name: "mon", Password: nutPassword, Upsmon: "primary"},
	{Name: "other", Password: "other-pw", Upsmon: "primary"},
}

// onLine is a healthy UPS with hours of runtime (far above the runtime
// budget of a target-less config: 5 min plan + 2 min margin).
func onLine() map[string]string {
	return map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3600"}
}

// startUPSD starts a real upsd; its daemons' logs are scanned for secrets
// once they have stopped.
func (s *suite) startUPSD(t *testing.T, cfg nutd.Config) *nutd.Server {
	t.Helper()
	if cfg.Users == nil {
		cfg.Users = nutUsers
	}
	var srv *nutd.Server
	t.Cleanup(func() { // registered first: runs after nutd stopped its daemons
		if srv == nil {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(srv.Dir(), "logs", "*.log"))
		for _, f := range logs {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Errorf("read %s: %v", f, err)
				continue
			}
			for _, hit := range s.scan.scan(t.Name()+": "+filepath.Base(f), b) {
				t.Errorf("secret leaked: %s", hit)
			}
		}
	})
	srv = nutd.Start(t, cfg)
	return srv
}

// dialNUT opens a plain connection to a NUT server, closed at cleanup.
func dialNUT(t *testing.T, addr string) *nut.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := nut.Dial(ctx, addr, nut.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// numLogins asks upsd how many clients hold a LOGIN on ups.
func numLogins(t *testing.T, addr, ups string) int {
	t.Helper()
	c := dialNUT(t, addr)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	n, err := c.NumLogins(ctx, ups)
	if err != nil {
		t.Fatalf("NUMLOGINS %s: %v", ups, err)
	}
	_ = c.Close()
	return n
}

// upscStatus reads ups.status with the real upsc (nut-client).
func upscStatus(t *testing.T, addr, ups string) string {
	t.Helper()
	upsc := peer.NeedBinary(t, "upsc", "apt-get install -y nut-client")
	cmd := exec.CommandContext(t.Context(), upsc, ups+"@"+addr, "ups.status")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("upsc %s@%s: %v: %s", ups, addr, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// waitUpsc polls upsc until ups.status has the token.
func waitUpsc(t *testing.T, addr, ups, token string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := upscStatus(t, addr, ups)
		if strings.Contains(" "+st+" ", " "+token+" ") {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("upsc %s@%s: ups.status %q has no %s after %s", ups, addr, st, token, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// secretScanner checks captured outputs for the configured secrets.
type secretScanner struct {
	secrets []string

	mu      sync.Mutex
	sources []string
	bytes   int
	hits    []string
}

func newSecretScanner(secrets ...string) *secretScanner {
	return &secretScanner{secrets: secrets}
}

// scan records one output and returns a description of every secret found
// in it (source, line number, secret name by position).
func (s *secretScanner) scan(source string, data []byte) []string {
	var hits []string
	for i, line := range bytes.Split(data, []byte("\n")) {
		for j, sec := range s.secrets {
			if bytes.Contains(line, []byte(sec)) {
				hits = append(hits, fmt.Sprintf("secret #%d in %s, line %d", j+1, source, i+1))
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sources = append(s.sources, source)
	s.bytes += len(data)
	s.hits = append(s.hits, hits...)
	return hits
}

func (s *secretScanner) summary() (sources []string, n int, hits []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sources...), s.bytes, append([]string(nil), s.hits...)
}
