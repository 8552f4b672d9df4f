package site

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/sundown-ups/sundown/internal/peer/sundownbin"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/api"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// Environment variables the configs take their secrets from.
const (
	envVCPassword  = "SUNDOWN_CHAOS_VC_PASSWORD"
	envAPIToken    = "SUNDOWN_CHAOS_API_TOKEN"
	envNUTPassword = "SUNDOWN_CHAOS_NUT_PASSWORD"
	envWebhookURL  = "SUNDOWN_CHAOS_WEBHOOK_URL" // + _N per channel
)

// buildDir holds the sundown binary for the whole test run (TestMain).
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sundown-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: temp dir:", err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// sundownBinary builds cmd/sundown once per test run (with -race when this
// test binary has it) and returns its path.
func sundownBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		var took time.Duration
		binPath, took, buildErr = sundownbin.Build(context.Background(), buildDir)
		if buildErr == nil {
			fmt.Fprintf(os.Stderr, "chaos: built %s (race %v) in %.1fs\n", binPath, sundownbin.Race(), took.Seconds())
		}
	})
	if buildErr != nil {
		t.Fatalf("build sundown: %v", buildErr)
	}
	return binPath
}

// newSecret returns a distinctive value that a leak scan can find: kind, a
// dash and 24 hex digits.
func newSecret(kind string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "chaos" + kind + "-" + hex.EncodeToString(b[:])
}

// siteConfig describes one scenario's world. Empty fields take defaults.
type siteConfig struct {
	Fleet vcsim.Fleet
	// VCHosts is the vc target's hosts: value (flow YAML).
	VCHosts string
	// ExtraTargets are more items of the targets: list (YAML, two-space
	// indent, each starting with "  - name: ").
	ExtraTargets string
	// Shutdown is the whole shutdown: section.
	Shutdown string
	// Notify is the whole notify: section ("" for none).
	Notify string
	// UPS is the whole ups: section; default one trigger UPS.
	UPS string
	// StateDir overrides DIR/state (it must exist or be creatable).
	StateDir string
	// VCPasswordFile gives the vCenter password through password_file
	// rather than password_env.
	VCPasswordFile bool
	// Env is added to the daemon's environment.
	Env []string
	// Secrets are more values the scan looks for (what → value).
	Secrets map[string]string
	// Receivers are webhook receivers whose bodies the scan covers.
	Receivers []*receiver
	// LogLevel is the daemon's log level (default info).
	LogLevel string
}

// addWebhook adds a json webhook channel to c.Notify that posts to r,
// with a secret token in the URL's path; see addWebhookURL.
func (c *siteConfig) addWebhook(name string, r *receiver, settings string) {
	c.addWebhookURL(name, r.srv.URL, settings)
	c.Receivers = append(c.Receivers, r)
}

// addWebhookURL adds a json webhook channel to c.Notify that posts to
// base + "/hook/" + a secret token; the URL comes from an environment
// variable. settings (notify: keys such as "  timeout: 1s\n") are used when
// it is the first channel.
func (c *siteConfig) addWebhookURL(name, base, settings string) {
	c.addChannel("{name: "+name+", webhook: {format: json, url_env: "+c.webhookEnv(name, base)+"}}", settings)
}

func (c *siteConfig) webhookEnv(name, base string) string {
	token := newSecret("hooktok")
	env := envWebhookURL + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	c.Env = append(c.Env, env+"="+base+"/hook/"+token)
	c.addSecretValue("webhook URL token ("+name+")", token)
	return env
}

// addChannel adds one item (flow YAML) to notify.channels.
func (c *siteConfig) addChannel(item, settings string) {
	if c.Notify == "" {
		c.Notify = "notify:\n" + settings + "  channels:\n"
	}
	c.Notify += "    - " + item + "\n"
}

func (c *siteConfig) addSecretValue(what, v string) {
	if c.Secrets == nil {
		c.Secrets = map[string]string{}
	}
	c.Secrets[what] = v
}

// site is one scenario's world: the vSphere simulator, a config, the
// daemons started on it, and what they printed.
type site struct {
	t        *testing.T
	dir      string
	sim      *vcsim.Sim
	cfg      string
	stateDir string
	journ    string
	audit    string
	env      []string

	mu       sync.Mutex
	secrets  map[string]string // what → value
	files    []string          // more files to scan for secrets
	captured []capture         // API answers, webhook bodies, command output
	daemons  []*daemon
	// receivers' bodies are scanned too
	receivers []*receiver
}

type capture struct {
	what string
	b    []byte
}

// newSite starts the simulator and writes the config. Its cleanup (which
// runs after every daemon started on it has stopped) scans everything the
// scenario captured for the secrets.
func newSite(t *testing.T, c siteConfig) *site {
	t.Helper()
	s := &site{t: t, dir: t.TempDir(), secrets: map[string]string{}}
	t.Cleanup(s.scanSecrets)
	s.stateDir = filepath.Join(s.dir, "state")
	if c.StateDir != "" {
		s.stateDir = c.StateDir
	}
	s.journ = filepath.Join(s.stateDir, "journal.jsonl")
	s.audit = filepath.Join(s.dir, "audit.jsonl")

	vcPass := newSecret("vcpw")
	apiToken := newSecret("apitok")
	s.addSecret("vCenter password", vcPass)
	s.addSecret("API token", apiToken)
	fleet := c.Fleet
	fleet.Password = vcPass
	sim, err := vcsim.Start(t.Context(), fleet)
	if err != nil {
		t.Fatalf("vcsim: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("vcsim close: %v", err)
		}
	})
	s.sim = sim

	pwLine := "password_env: " + envVCPassword
	if c.VCPasswordFile {
		pf := filepath.Join(s.dir, "vc.pass")
		if err := os.WriteFile(pf, []byte(vcPass+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pwLine = "password_file: " + strconv.Quote(pf)
	}
	hosts := c.VCHosts
	if hosts == "" {
		hosts = "{maintenance: true, maintenance_timeout: 10s, shutdown: true, shutdown_timeout: 10s}"
	}
	ups := c.UPS
	if ups == "" {
		ups = "ups:\n  - name: rack\n    trigger: {}\n"
	}
	level := c.LogLevel
	if level == "" {
		level = "info"
	}
	shutdown := c.Shutdown
	if shutdown == "" {
		shutdown = "shutdown:\n  default_action: [\"shutdown 10s\", \"poweroff 5s\"]\n  caps: {global: 4, per_host: 2}\n"
	}
	yml := "state_dir: " + strconv.Quote(s.stateDir) + "\n" +
		"log: {level: " + level + "}\n" +
		"api: {listen: \"127.0.0.1:0\", token_env: " + envAPIToken + ", audit_log: " + strconv.Quote(s.audit) + "}\n" +
		"power: {poll_interval: 100ms}\n" +
		"restore: {auto: false}\n" +
		ups +
		"targets:\n" +
		"  - name: vc\n" +
		"    vsphere:\n" +
		"      url: " + strconv.Quote(sim.URL()) + "\n" +
		"      username: " + strconv.Quote(sim.Username()) + "\n" +
		"      " + pwLine + "\n" +
		"      ca_file: " + strconv.Quote(sim.CAFile()) + "\n" +
		"    hosts: " + hosts + "\n" +
		c.ExtraTargets +
		shutdown +
		c.Notify
	s.cfg = filepath.Join(s.dir, "sundown.yaml")
	if err := os.WriteFile(s.cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), "SUNDOWN_CONFIG=", envAPIToken+"="+apiToken)
	if !c.VCPasswordFile {
		s.env = append(s.env, envVCPassword+"="+vcPass)
	}
	s.env = append(s.env, c.Env...)
	for what, v := range c.Secrets {
		s.addSecret(what, v)
	}
	s.receivers = c.Receivers
	return s
}

func (s *site) addSecret(what, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[what] = v
}

func (s *site) secret(what string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secrets[what]
}

// addFile adds a file to the secret scan.
func (s *site) addFile(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files = append(s.files, path)
}

// keep records bytes the scenario saw (an API answer, a webhook body) for
// the secret scan.
func (s *site) keep(what string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.captured = append(s.captured, capture{what, slices.Clone(b)})
}

// leaks lists where a secret (or its random part) appears in b.
func (s *site) leaks(where string, b []byte) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for what, v := range s.secrets {
		core := v
		if i := strings.LastIndexByte(v, '-'); i >= 0 {
			core = v[i+1:]
		}
		if bytes.Contains(b, []byte(core)) {
			line := lineWith(b, []byte(core))
			out = append(out, fmt.Sprintf("%s appears in %s: %s", what, where, strings.ReplaceAll(line, core, "<LEAKED>")))
		}
	}
	slices.Sort(out)
	return out
}

func lineWith(b, sub []byte) string {
	i := bytes.Index(b, sub)
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	end := bytes.IndexByte(b[i:], '\n')
	if end < 0 {
		end = len(b) - i
	}
	line := string(b[start : i+end])
	if len(line) > 400 {
		line = line[:400] + "…"
	}
	return line
}

// outputs is every file and capture the scan covers: daemon logs, the
// journal, the API audit log, extra files and captures.
func (s *site) outputs() []capture {
	s.mu.Lock()
	files := []string{s.journ, s.audit}
	for _, d := range s.daemons {
		files = append(files, d.log)
	}
	files = append(files, s.files...)
	caps := slices.Clone(s.captured)
	for _, r := range s.receivers {
		r.mu.Lock()
		for _, b := range r.bodies {
			caps = append(caps, capture{"webhook body (" + r.mode + ")", b})
		}
		r.mu.Unlock()
	}
	s.mu.Unlock()
	out := make([]capture, 0, len(files)+len(caps))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // not written in this scenario (no journal on a full disk, …)
		}
		out = append(out, capture{filepath.Base(f), b})
	}
	return append(out, caps...)
}

// scanSecrets fails the test when any secret appears in any output.
func (s *site) scanSecrets() {
	n, total := 0, 0
	for _, c := range s.outputs() {
		for _, l := range s.leaks(c.what, c.b) {
			s.t.Errorf("SECRET LEAK: %s", l)
		}
		n++
		total += len(c.b)
	}
	s.t.Logf("secret scan: %d secrets, %d outputs, %d bytes scanned", len(s.secrets), n, total)
}

// daemon is one sundown child process.
type daemon struct {
	s       *site
	p       *proc.Proc
	name    string
	log     string
	started time.Time

	apiOnce sync.Once
	apiURL  string
}

// startDaemon starts `sundown run -c CONFIG`; cleanup stops it by PID and
// shows its output when the test failed.
func (s *site) startDaemon(name string) *daemon {
	t := s.t
	t.Helper()
	bin := sundownBinary(t)
	d := &daemon{s: s, name: name, log: filepath.Join(s.dir, name+".log"), started: time.Now()}
	p, err := proc.Start("sundown "+name, bin, []string{"run", "-c", s.cfg}, s.env, d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.p = p
	s.mu.Lock()
	s.daemons = append(s.daemons, d)
	s.mu.Unlock()
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("stop %s daemon: %v", name, err)
		}
		out := d.output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("the %s daemon reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s daemon (pid %d) output (last 40 lines):\n%s", name, p.PID(), lastLines(out, 40))
		}
	})
	return d
}

// runCommand runs a one-shot sundown command (check, plan, …) and returns
// its combined output, kept for the secret scan.
func (s *site) runCommand(timeout time.Duration, args ...string) (string, error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sundownBinary(s.t), args...)
	cmd.Env = s.env
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	s.keep("sundown "+strings.Join(args, " "), out)
	return string(out), err
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (d *daemon) output() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// wait polls cond every 20 ms until it holds; it fails the test when the
// daemon exits or timeout passes.
func (d *daemon) wait(what string, timeout time.Duration, cond func() bool) {
	t := d.s.t
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if d.p.Exited() {
			t.Fatalf("the %s daemon exited (%v) while waiting for %s", d.name, d.p.ExitErr(), what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s daemon: no %s within %s", d.name, what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) waitLog(substr string, timeout time.Duration) {
	d.s.t.Helper()
	d.wait(strconv.Quote(substr)+" in the log", timeout, func() bool { return strings.Contains(d.output(), substr) })
}

var apiLine = regexp.MustCompile(`msg="status page and API" url=(http://127\.0\.0\.1:\d+)/`)

// api is the daemon's API base URL (http://127.0.0.1:PORT), read from its
// log.
func (d *daemon) api() string {
	d.s.t.Helper()
	d.apiOnce.Do(func() {
		d.wait("the API address in the log", 30*time.Second, func() bool { return apiLine.MatchString(d.output()) })
		d.apiURL = apiLine.FindStringSubmatch(d.output())[1]
	})
	return d.apiURL
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// trigger posts a power signal to the daemon's trigger UPS with the API
// token.
func (d *daemon) trigger(kind string) {
	t := d.s.t
	t.Helper()
	body := `{"kind":"` + kind + `","reason":"chaos test","source":"chaos"}`
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, d.api()+"/api/v1/trigger", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+d.s.secret("API token"))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("trigger %s: %v", kind, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d.s.keep("POST /api/v1/trigger", b)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("trigger %s: %s: %s", kind, resp.Status, b)
	}
}

// status reads GET /api/v1/status.
func (d *daemon) status() api.Status {
	t := d.s.t
	t.Helper()
	resp, err := httpClient.Get(d.api() + "/api/v1/status")
	if err != nil {
		t.Fatalf("GET /api/v1/status: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d.s.keep("GET /api/v1/status", b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/status: %s: %s", resp.Status, b)
	}
	var st api.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("GET /api/v1/status: %v: %s", err, b)
	}
	return st
}

// kill sends SIGKILL and waits for the reap.
func (d *daemon) kill() {
	t := d.s.t
	t.Helper()
	if err := d.p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.p.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("the %s daemon was not reaped 5s after SIGKILL", d.name)
	}
}

// terminate sends SIGTERM and returns how long the daemon took to exit;
// it fails the test when it does not exit within timeout or exits non-zero.
func (d *daemon) terminate(timeout time.Duration) time.Duration {
	t := d.s.t
	t.Helper()
	begin := time.Now()
	if err := d.p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.p.Done():
	case <-time.After(timeout):
		t.Fatalf("the %s daemon did not exit within %s of SIGTERM (deadlock at exit?)", d.name, timeout)
	}
	if err := d.p.ExitErr(); err != nil {
		t.Errorf("the %s daemon exited with %v after SIGTERM, want 0", d.name, err)
	}
	return time.Since(begin)
}

// rec is a journal line (see plan.Journal for the format).
type rec struct {
	T       time.Time `json:"t"`
	Run     string    `json:"run"`
	Type    string    `json:"type"`
	Key     string    `json:"key"`
	Keys    []string  `json:"keys"`
	Action  string    `json:"action"`
	Index   int       `json:"index"`
	Outcome string    `json:"outcome"`
	Err     string    `json:"err"`
	Note    string    `json:"note"`
	Resumed bool      `json:"resumed"`
}

// journal reads the journal as it is now, without a torn last line.
func (s *site) journal() []rec {
	t := s.t
	t.Helper()
	b, err := os.ReadFile(s.journ)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read journal: %v", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
		b = b[:i+1]
	}
	var out []rec
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var r rec
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("journal line does not parse: %v: %s", err, sc.Bytes())
		}
		out = append(out, r)
	}
	return out
}

// count returns how many records have type typ (and key, if given).
func count(rs []rec, typ string, key string) int {
	n := 0
	for _, r := range rs {
		if r.Type == typ && (key == "" || r.Key == key) {
			n++
		}
	}
	return n
}

// find returns the first record of type typ for key (and whether there is
// one).
func find(rs []rec, typ, key string) (rec, bool) {
	for _, r := range rs {
		if r.Type == typ && r.Key == key {
			return r, true
		}
	}
	return rec{}, false
}

// runDone waits until the journal holds run-done.
func (d *daemon) waitRunDone(timeout time.Duration) []rec {
	d.s.t.Helper()
	var rs []rec
	d.wait("run-done in the journal", timeout, func() bool {
		rs = d.s.journal()
		return count(rs, "run-done", "") > 0
	})
	return rs
}

// guestKey and host keys are the plan's step keys on the vc target.
func (s *site) guestKey(vm string) string     { return "guest:vc/" + s.sim.VMID(vm) }
func (s *site) maintKey(host string) string   { return "host-maint:vc/" + s.sim.HostID(host) }
func (s *site) hostOffKey(host string) string { return "host-off:vc/" + s.sim.HostID(host) }

// statusStep finds a step of the status's shutdown by key.
func statusStep(st api.Status, key string) (api.Step, bool) {
	if st.Shutdown == nil {
		return api.Step{}, false
	}
	for _, s := range st.Shutdown.Steps {
		if s.Key == key {
			return s, true
		}
	}
	return api.Step{}, false
}

// firstCall watches the simulator for the first call of method on name
// (polling every 5 ms from now on) and returns a function that stops the
// watch and gives its time (zero when none came).
func (s *site) firstCall(method, name string) func() time.Time {
	stop := make(chan struct{})
	done := make(chan time.Time, 1)
	base := s.sim.CallsFor(method, name)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- time.Time{}
				return
			case now := <-tick.C:
				if s.sim.CallsFor(method, name) > base {
					done <- now
					return
				}
			}
		}
	}()
	var once sync.Once
	var at time.Time
	get := func() time.Time {
		once.Do(func() {
			close(stop)
			at = <-done
		})
		return at
	}
	s.t.Cleanup(func() { get() })
	return get
}

// receiver is a notification receiver (a webhook endpoint) that answers
// 200, 500 or never (until the test ends).
type receiver struct {
	srv  *httptest.Server
	mode string
	stop chan struct{}

	mu     sync.Mutex
	bodies [][]byte
}

// notice is the JSON body of sundown's json webhook format.
type notice struct {
	Type     string `json:"type"`
	Severity string `json:"severity"`
	Subject  string `json:"subject"`
	Body     string `json:"body"`
}

func newReceiver(t *testing.T, mode string) *receiver {
	r := &receiver{mode: mode, stop: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.mu.Unlock()
		switch mode {
		case "ok":
			w.WriteHeader(http.StatusOK)
		case "500":
			http.Error(w, "receiver broken", http.StatusInternalServerError)
		case "hang":
			select {
			case <-req.Context().Done():
			case <-r.stop:
			}
		}
	}))
	t.Cleanup(func() {
		close(r.stop)
		r.srv.Close()
	})
	return r
}

// url is the receiver's URL with a secret token in its path.
func (r *receiver) url(token string) string { return r.srv.URL + "/hook/" + token }

func (r *receiver) hits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func (r *receiver) notices(t *testing.T) []notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notice
	for _, b := range r.bodies {
		var n notice
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("webhook body is not JSON: %v: %s", err, b)
			continue
		}
		out = append(out, n)
	}
	return out
}

// maxRepeats is how often the most repeated body arrived (a retry sends
// the same body again).
func (r *receiver) maxRepeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]int{}
	most := 0
	for _, b := range r.bodies {
		seen[string(b)]++
		most = max(most, seen[string(b)])
	}
	return most
}

// closedPort returns a loopback port nothing listens on (it was bound and
// released).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
