package vsphere_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// None of these tests run in parallel: TestTaskDelay changes a package
// global of the simulator.

func TestConformanceVCenter(t *testing.T) {
	providertest.Run(t, harness(simOptions{}))
}

func TestConformanceESXi(t *testing.T) {
	providertest.Run(t, harness(simOptions{esx: true}))
}

func wantClass(t *testing.T, err error, want provider.Class) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *provider.Error", err, err)
	}
	if e.Class != want {
		t.Fatalf("class %s, want %s: %v", e.Class, want, err)
	}
	return e
}

// poll calls cond every 20 ms until it holds or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func noSecret(t *testing.T, where, text, secret string) {
	t.Helper()
	if strings.Contains(text, secret) {
		t.Errorf("%s contains the password: %q", where, text)
	}
}

// providerSessions lists the keys of the sessions sundown holds.
func (s *sim) providerSessions() []string {
	s.t.Helper()
	c := s.admin()
	var sm mo.SessionManager
	if err := property.DefaultCollector(c).RetrieveOne(s.t.Context(), *c.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		s.t.Fatal(err)
	}
	var keys []string
	for _, us := range sm.SessionList {
		if us.UserAgent == "sundown" {
			keys = append(keys, us.Key)
		}
	}
	return keys
}

func TestTagsAndTemplates(t *testing.T) {
	s := startSim(t, simOptions{})
	ctx := t.Context()
	c := s.admin()
	vm := object.NewVirtualMachine(c, types.ManagedObjectReference{Type: "VirtualMachine", Value: s.fix.Running})
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{Annotation: "web front end"})
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	cfm, err := object.GetCustomFieldsManager(c)
	if err != nil {
		t.Fatal(err)
	}
	def, err := cfm.Add(ctx, "sundown.group", "VirtualMachine", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfm.Set(ctx, vm.Reference(), def.Key, "web"); err != nil {
		t.Fatal(err)
	}

	// A template cannot be powered on: it is not a guest.
	var tmplID string
	for id, name := range s.names {
		if name == "template-1" {
			tmplID = id
		}
	}
	tmpl := object.NewVirtualMachine(c, types.ManagedObjectReference{Type: "VirtualMachine", Value: tmplID})
	if task, err = tmpl.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tmpl.MarkAsTemplate(ctx); err != nil {
		t.Fatal(err)
	}

	p := s.open(s.config())
	g, err := p.Guest(ctx, s.fix.Running)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{vsphere.AnnotationTag: "web front end", "sundown.group": "web"}
	if len(g.Tags) != len(want) || g.Tags[vsphere.AnnotationTag] != want[vsphere.AnnotationTag] || g.Tags["sundown.group"] != "web" {
		t.Errorf("Tags = %v, want %v", g.Tags, want)
	}
	if g.UUID == "" || g.Name != "web-1" {
		t.Errorf("Guest = %+v, want a UUID and name web-1", g)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Guests) != 5 || len(inv.Hosts) != 3 {
		t.Errorf("inventory has %d guests and %d hosts, want 5 (6 VMs minus the template) and 3", len(inv.Guests), len(inv.Hosts))
	}
	for _, g := range inv.Guests {
		if g.ID == tmplID {
			t.Errorf("template %s listed as a guest", tmplID)
		}
		if g.ID == s.fix.NoTools && g.Tags != nil {
			t.Errorf("guest without notes or attributes has Tags %v, want nil", g.Tags)
		}
	}
}

func TestSessionLossRelogin(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	log, logs := captureLogger(t)
	cfg.Logger = log
	p := s.open(cfg)
	ctx := t.Context()
	before := s.providerSessions()
	if len(before) != 1 {
		t.Fatalf("provider holds %d sessions, want 1", len(before))
	}
	s.terminateProviderSessions()

	// The next call finds the session gone, logs in again and succeeds.
	if _, err := p.Inventory(ctx); err != nil {
		t.Fatalf("Inventory after session loss: %v", err)
	}
	if err := p.PowerOffGuest(ctx, s.fix.Running); err != nil {
		t.Fatalf("PowerOffGuest after re-login: %v", err)
	}
	after := s.providerSessions()
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("sessions before %v, after %v: want exactly one new session", before, after)
	}
	if n := strings.Count(logs.String(), "session re-established"); n != 1 {
		t.Errorf("logged %d re-logins, want 1:\n%s", n, logs)
	}
	noSecret(t, "log", logs.String(), simPassword)
}

func TestConcurrentCallsShareOneRelogin(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	log, logs := captureLogger(t)
	cfg.Logger = log
	p := s.open(cfg)
	s.terminateProviderSessions()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := p.Inventory(t.Context())
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("Inventory: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "session re-established"); n != 1 {
		t.Errorf("%d re-logins for 8 concurrent calls, want 1", n)
	}
	if got := s.providerSessions(); len(got) != 1 {
		t.Errorf("provider holds %d sessions, want 1", len(got))
	}
}

func TestKeepAlive(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	log, logs := captureLogger(t)
	cfg.Logger = log
	cfg.KeepAlive = 20 * time.Millisecond
	p := s.open(cfg)
	poll(t, 5*time.Second, "three keep-alive calls", func() bool { return s.count("CurrentTime") >= 3 })

	// The keep-alive notices a lost session and logs in again by itself,
	// with no caller involved.
	before := s.providerSessions()
	s.terminateProviderSessions()
	poll(t, 5*time.Second, "keep-alive re-login", func() bool {
		return strings.Contains(logs.String(), "session re-established")
	})
	if after := s.providerSessions(); len(after) != 1 || after[0] == before[0] {
		t.Errorf("sessions before %v, after %v: want one new session", before, after)
	}
	keepAliveRunning := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "vsphere.(*Provider).keepAlive")
	}
	if !keepAliveRunning() {
		t.Fatal("keep-alive goroutine not found in the stacks before Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close stopped the keep-alive goroutine and logged out.
	poll(t, 2*time.Second, "keep-alive goroutine to exit", func() bool { return !keepAliveRunning() })
	if got := s.providerSessions(); len(got) != 0 {
		t.Errorf("sessions after Close: %v, want none", got)
	}
}

func TestReloginRefused(t *testing.T) {
	s := startSim(t, simOptions{})
	p := s.open(s.config())
	s.terminateProviderSessions()
	s.vc.AddFaultRule(&simulator.FaultInjectionRule{
		MethodName: "Login", ObjectType: "*", ObjectName: "*", Probability: 1,
		FaultType: simulator.FaultTypeCustom, Fault: &types.InvalidLogin{}, Enabled: true,
	})
	_, err := p.Inventory(t.Context())
	e := wantClass(t, err, provider.Auth)
	if e.Op != "Inventory" {
		t.Errorf("Op = %q, want Inventory", e.Op)
	}
	noSecret(t, "error", err.Error(), simPassword)
}

func TestWrongPassword(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	const wrong = "hunter2-wrong-password"
	cfg.Password = wrong
	log, logs := captureLogger(t)
	cfg.Logger = log
	_, err := vsphere.New(t.Context(), cfg)
	wantClass(t, err, provider.Auth)
	noSecret(t, "error", err.Error(), wrong)
	noSecret(t, "log", logs.String(), wrong)
}

func TestTLS(t *testing.T) {
	s := startSim(t, simOptions{})
	other, err := newPKI()
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, other.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		edit      func(*vsphere.Config)
		wantClass provider.Class // Unclassified: must connect
		wantText  string
	}{
		{"CA file", func(c *vsphere.Config) {}, provider.Unclassified, ""},
		{"other CA", func(c *vsphere.Config) { c.CAFile = otherCA }, provider.Permanent, "certificate"},
		{"system roots", func(c *vsphere.Config) { c.CAFile = "" }, provider.Permanent, "certificate"},
		{"SHA-256 pin, vSphere format", func(c *vsphere.Config) { c.CAFile = ""; c.Thumbprint = colons(s.pki.sha256()) }, provider.Unclassified, ""},
		{"SHA-1 pin, lower-case hex", func(c *vsphere.Config) { c.CAFile = ""; c.Thumbprint = s.pki.sha1() }, provider.Unclassified, ""},
		{"wrong pin", func(c *vsphere.Config) { c.CAFile = ""; c.Thumbprint = other.sha256() }, provider.Permanent, "thumbprint"},
		{"CA and pin", func(c *vsphere.Config) { c.Thumbprint = s.pki.sha256() }, provider.Unclassified, ""},
		{"CA and wrong pin", func(c *vsphere.Config) { c.Thumbprint = other.sha1() }, provider.Permanent, "thumbprint"},
		{"pin but other CA", func(c *vsphere.Config) { c.CAFile = otherCA; c.Thumbprint = s.pki.sha256() }, provider.Permanent, "certificate"},
		{"malformed pin", func(c *vsphere.Config) { c.Thumbprint = "12:34" }, provider.Permanent, "thumbprint"},
		{"insecure with CA", func(c *vsphere.Config) { c.Insecure = true }, provider.Permanent, "insecure"},
		{"missing CA file", func(c *vsphere.Config) { c.CAFile = filepath.Join(t.TempDir(), "nope.pem") }, provider.Permanent, "CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := s.config()
			tt.edit(&cfg)
			p, err := vsphere.New(t.Context(), cfg)
			if tt.wantClass == provider.Unclassified {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer p.Close()
				if _, err := p.Inventory(t.Context()); err != nil {
					t.Fatalf("Inventory: %v", err)
				}
				return
			}
			if err == nil {
				p.Close()
				t.Fatal("New succeeded, want an error")
			}
			wantClass(t, err, tt.wantClass)
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}

	t.Run("insecure warns at every connect", func(t *testing.T) {
		cfg := s.config()
		cfg.CAFile = ""
		cfg.Insecure = true
		log, logs := captureLogger(t)
		cfg.Logger = log
		p, err := vsphere.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if n := strings.Count(logs.String(), "level=WARN msg=\"vsphere: TLS certificate verification is DISABLED"); n != 1 {
			t.Fatalf("%d warnings after connect, want 1:\n%s", n, logs)
		}
		s.terminateProviderSessions()
		if _, err := p.Inventory(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), "verification is DISABLED"); n != 2 {
			t.Errorf("%d warnings after a re-login, want 2", n)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	const secret = "pa55word-in-url"
	tests := []struct {
		name string
		cfg  vsphere.Config
		text string
	}{
		{"empty URL", vsphere.Config{Username: "u", Password: "p"}, "URL is empty"},
		{"plain http", vsphere.Config{URL: "http://127.0.0.1:1/sdk", Username: "u", Password: "p"}, "only https"},
		{"credentials in URL", vsphere.Config{URL: "https://root:" + secret + "@127.0.0.1/sdk", Username: "u", Password: "p"}, "must not contain credentials"},
		{"no username", vsphere.Config{URL: "127.0.0.1", Password: "p"}, "username and password are required"},
		{"no password", vsphere.Config{URL: "127.0.0.1", Username: "u"}, "username and password are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vsphere.New(t.Context(), tt.cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			wantClass(t, err, provider.Permanent)
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			noSecret(t, "error", err.Error(), secret)
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = vsphere.New(t.Context(), vsphere.Config{URL: "https://" + addr + "/sdk", Username: "u", Password: "p", Logger: testLogger(t)})
	wantClass(t, err, provider.Unreachable)
}

func TestSilentServerHonoursDeadline(t *testing.T) {
	// A server that accepts TCP and never says a word: the TLS handshake
	// must end with the caller's context.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() {
		ln.Close() // ends Accept, then the goroutine closes its conns
		<-done
	}()
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = vsphere.New(ctx, vsphere.Config{URL: "https://" + ln.Addr().String() + "/sdk", Username: "u", Password: "p", Logger: testLogger(t)})
	took := time.Since(start)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap DeadlineExceeded", err)
	}
	if took > 2*time.Second {
		t.Errorf("New took %v against a 300ms deadline", took)
	}
}

// TestTaskDelay slows the simulator's PowerOff tasks (simulator.TaskDelay is
// a package global: this test must not run in parallel with others).
func TestTaskDelay(t *testing.T) {
	s := startSim(t, simOptions{})
	p := s.open(s.config())
	ctx := t.Context()
	const delay = 400 * time.Millisecond
	simulator.TaskDelay.MethodDelay = map[string]int{"PowerOff": int(delay / time.Millisecond), "LockHandoff": 0}
	t.Cleanup(func() { simulator.TaskDelay.MethodDelay = nil })

	start := time.Now()
	if err := p.PowerOffGuest(ctx, s.fix.Running); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("PowerOffGuest returned after %v, before its %v task could finish", took, delay)
	}
	if g, err := p.Guest(ctx, s.fix.Running); err != nil || g.Power != provider.PowerOff {
		t.Fatalf("after PowerOffGuest: %+v, %v; want off", g, err)
	}

	// A caller deadline shorter than the task: prompt Transient error
	// wrapping the deadline; the accepted request still completes.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	err := p.PowerOffGuest(short, s.fix.Deaf)
	took := time.Since(start)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap DeadlineExceeded", err)
	}
	if took >= delay {
		t.Errorf("PowerOffGuest with a 100ms deadline took %v", took)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := p.WaitGuest(wctx, s.fix.Deaf, provider.PowerOff); err != nil {
		t.Errorf("the accepted power-off did not complete: %v", err)
	}
}

func TestSlowCallHonoursDeadline(t *testing.T) {
	s := startSim(t, simOptions{methodDelay: map[string]int{"ShutdownGuest": 1000}})
	p := s.open(s.config())
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.ShutdownGuest(ctx, s.fix.Running)
	took := time.Since(start)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap DeadlineExceeded", err)
	}
	if took > 800*time.Millisecond {
		t.Errorf("ShutdownGuest took %v against a 150ms deadline", took)
	}
}

func TestShutdownHostOutsideMaintenance(t *testing.T) {
	s := startSim(t, simOptions{})
	p := s.open(s.config())
	ctx := t.Context()
	err := p.ShutdownHost(ctx, s.fix.Host, false)
	wantClass(t, err, provider.Permanent)
	if !strings.Contains(err.Error(), "maintenance mode") {
		t.Errorf("error %q does not explain the refusal", err)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range inv.Hosts {
		if h.Power != provider.PowerOn {
			t.Errorf("host %s is %s after a refused shutdown", h.ID, h.Power)
		}
	}
	if err := p.ShutdownHost(ctx, s.fix.Host, true); err != nil {
		t.Fatalf("forced ShutdownHost: %v", err)
	}
	poll(t, 5*time.Second, "host off", func() bool {
		inv, err := p.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range inv.Hosts {
			if h.ID == s.fix.Host {
				return h.Power == provider.PowerOff
			}
		}
		return false
	})
}

func TestEnterMaintenanceOptions(t *testing.T) {
	s := startSim(t, simOptions{})
	p := s.open(s.config())
	ctx := t.Context()
	err := p.EnterMaintenance(ctx, s.fix.Host, provider.MaintenanceOptions{VSANMode: "evacuateEverything"})
	wantClass(t, err, provider.Permanent)
	if n := s.count("EnterMaintenanceMode_Task"); n != 0 {
		t.Fatalf("an invalid vSAN mode still sent %d requests", n)
	}
	opts := provider.MaintenanceOptions{Timeout: 1500 * time.Millisecond, VSANMode: "evacuateAllData"}
	if err := p.EnterMaintenance(ctx, s.fix.Host, opts); err != nil {
		t.Fatal(err)
	}
	reqs := s.vc.MaintenanceRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d EnterMaintenanceMode_Task requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Timeout != 2 {
		t.Errorf("timeout %d s, want 2 (1.5 s rounded up)", r.Timeout)
	}
	if r.MaintenanceSpec == nil || r.MaintenanceSpec.VsanMode == nil || r.MaintenanceSpec.VsanMode.ObjectAction != "evacuateAllData" {
		t.Errorf("maintenance spec %+v, want vSAN mode evacuateAllData", r.MaintenanceSpec)
	}
	// Already in: no second request.
	if err := p.EnterMaintenance(ctx, s.fix.Host, opts); err != nil {
		t.Fatal(err)
	}
	if n := s.count("EnterMaintenanceMode_Task"); n != 1 {
		t.Errorf("%d requests after a repeated EnterMaintenance, want 1", n)
	}
}

// BenchmarkInventory lists a 100-VM vCenter (3 hosts) per iteration.
func BenchmarkInventory(b *testing.B) {
	f := vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-1"}, {Name: "esx-2"}, {Name: "esx-3"}}}
	for i := range 100 {
		f.VMs = append(f.VMs, vcsim.VM{Name: fmt.Sprintf("vm-%03d", i), Host: f.Hosts[i%3].Name})
	}
	vc, err := vcsim.Start(b.Context(), f)
	if err != nil {
		b.Fatal(err)
	}
	defer vc.Close()
	p, err := vsphere.New(b.Context(), vsphere.Config{
		URL: vc.URL(), Username: vc.Username(), Password: vc.Password(),
		Thumbprint: vc.Thumbprint(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ResetTimer()
	for b.Loop() {
		inv, err := p.Inventory(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(inv.Guests) != 100 {
			b.Fatalf("%d guests", len(inv.Guests))
		}
	}
}
