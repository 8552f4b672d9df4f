package vsphere_test

// The tests' in-process vSphere is vcsim.Sim (govmomi's simulator with a
// declared fleet, TLS from a throw-away CA on 127.0.0.1, ToolsUnavailable
// for VMs without tools, a guest that ignores shutdown, ShutdownHost_Task,
// call counting). This file declares the fleets the tests use and adapts
// the Sim to the conformance suite.

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

const (
	simUser      = "sundown@vsphere.local"
	simPassword  = "correct horse battery staple"
	powerOffPriv = "VirtualMachine.Interact.PowerOff"
	// guestDelay is how long a guest OS takes to shut down in these fleets.
	guestDelay = 300 * time.Millisecond
)

// pki is a CA and a server certificate signed by it, with the fingerprints
// the TLS tests pin.
type pki struct {
	*vcsim.PKI
}

func newPKI() (*pki, error) {
	k, err := vcsim.NewPKI()
	if err != nil {
		return nil, err
	}
	return &pki{k}, nil
}

func (k *pki) sha256() string { return k.Thumbprint() }

func (k *pki) sha1() string {
	s := sha1.Sum(k.Leaf.Raw)
	return hex.EncodeToString(s[:])
}

// colons formats hex as vSphere shows thumbprints: "AB:CD:…".
func colons(h string) string {
	h = strings.ToUpper(h)
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// simOptions shape one simulator.
type simOptions struct {
	esx         bool           // standalone ESXi instead of vCenter
	methodDelay map[string]int // per-method API delay in ms
}

// The fleets. vCenter: three hosts in a cluster, six VMs; ESXi: one host,
// four VMs. web-1 runs with tools, hung-1 ignores shutdown, appliance-1
// has no tools, old-1 is off; template-1 and app-1 are plain running VMs.
func simFleet(opt simOptions) vcsim.Fleet {
	f := vcsim.Fleet{VCenter: !opt.esx, Username: simUser, Password: simPassword}
	if opt.esx {
		f.Hosts = []vcsim.Host{{Name: "esxi.lab.example"}}
	} else {
		f.Hosts = []vcsim.Host{{Name: "esx-1.lab.example"}, {Name: "esx-2.lab.example"}, {Name: "esx-3.lab.example"}}
	}
	host := func(i int) string { return f.Hosts[i%len(f.Hosts)].Name }
	f.VMs = []vcsim.VM{
		{Name: "web-1", Host: host(0), ShutdownDelay: guestDelay},
		{Name: "hung-1", Host: host(0), IgnoreShutdown: true},
		{Name: "appliance-1", Host: host(1), NoTools: true},
		{Name: "old-1", Host: host(1), PoweredOff: true, ShutdownDelay: guestDelay},
	}
	if !opt.esx {
		f.VMs = append(f.VMs,
			vcsim.VM{Name: "template-1", Host: host(2), ShutdownDelay: guestDelay},
			vcsim.VM{Name: "app-1", Host: host(2), ShutdownDelay: guestDelay},
		)
	}
	if len(opt.methodDelay) > 0 {
		f.MethodDelay = map[string]time.Duration{}
		for name, ms := range opt.methodDelay {
			f.MethodDelay[name] = time.Duration(ms) * time.Millisecond
		}
	}
	return f
}

// sim is one running simulator seen by a test.
type sim struct {
	t     *testing.T
	vc    *vcsim.Sim
	pki   *pki
	fix   providertest.Fixture
	names map[string]string // VM id → name
}

func startSim(t *testing.T, opt simOptions) *sim {
	t.Helper()
	f := simFleet(opt)
	vc, err := vcsim.Start(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vc.Close(); err != nil {
			t.Errorf("vcsim Close: %v", err)
		}
	})
	s := &sim{t: t, vc: vc, names: map[string]string{}}
	s.pki = &pki{&vcsim.PKI{CAPEM: vc.CAPEM(), Leaf: vc.Certificate()}}
	for _, vm := range f.VMs {
		s.names[vc.VMID(vm.Name)] = vm.Name
	}
	s.fix = providertest.Fixture{
		Running:      vc.VMID("web-1"),
		Off:          vc.VMID("old-1"),
		NoTools:      vc.VMID("appliance-1"),
		Deaf:         vc.VMID("hung-1"),
		Host:         vc.HostID(f.Hosts[0].Name),
		DenyPowerOff: s.denyPowerOff,
	}
	return s
}

// url is the endpoint without credentials.
func (s *sim) url() string { return s.vc.URL() }

// config is a provider Config that trusts the simulator through the CA file.
func (s *sim) config() vsphere.Config {
	return vsphere.Config{
		URL:      s.vc.URL(),
		Username: simUser,
		Password: simPassword,
		CAFile:   s.vc.CAFile(),
		Logger:   testLogger(s.t),
	}
}

// open connects a provider and closes it at the end of the test.
func (s *sim) open(cfg vsphere.Config) *vsphere.Provider {
	s.t.Helper()
	p, err := vsphere.New(s.t.Context(), cfg)
	if err != nil {
		s.t.Fatalf("vsphere.New: %v", err)
	}
	s.t.Cleanup(func() { _ = p.Close() })
	return p
}

// admin returns a separate, logged-in client for arranging the fleet.
func (s *sim) admin() *vim25.Client {
	s.t.Helper()
	ctx := s.t.Context()
	u, err := url.Parse(s.url())
	if err != nil {
		s.t.Fatal(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(s.vc.CAFile()); err != nil {
		s.t.Fatal(err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := session.NewManager(c).Login(ctx, url.UserPassword(simUser, simPassword)); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = session.NewManager(c).Logout(context.Background()) })
	return c
}

// terminateProviderSessions ends every session opened by sundown, as a
// vCenter restart or an idle timeout would.
func (s *sim) terminateProviderSessions() int {
	s.t.Helper()
	ctx := s.t.Context()
	c := s.admin()
	var sm mo.SessionManager
	if err := property.DefaultCollector(c).RetrieveOne(ctx, *c.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		s.t.Fatal(err)
	}
	var ids []string
	for _, us := range sm.SessionList {
		if us.UserAgent == "sundown" {
			ids = append(ids, us.Key)
		}
	}
	if len(ids) == 0 {
		s.t.Fatal("no sundown session to terminate")
	}
	if err := session.NewManager(c).TerminateSession(ctx, ids); err != nil {
		s.t.Fatal(err)
	}
	return len(ids)
}

func (s *sim) count(method string) int { return s.vc.Calls(method) }

// denyPowerOff makes the next PowerOffVM_Task on id fail with NoPermission,
// through the simulator's fault injection.
func (s *sim) denyPowerOff(t *testing.T, id string) string {
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: id}
	s.vc.AddFaultRule(&simulator.FaultInjectionRule{
		MethodName:  "PowerOffVM_Task",
		ObjectType:  "VirtualMachine",
		ObjectName:  s.names[id],
		Probability: 1,
		FaultType:   simulator.FaultTypeCustom,
		Fault:       &types.NoPermission{Object: &ref, PrivilegeId: powerOffPriv},
		MaxCount:    1,
		Enabled:     true,
	})
	return powerOffPriv
}

// harness adapts a simulator to the conformance suite.
func harness(opt simOptions) providertest.Harness {
	return providertest.Harness{
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			s := startSim(t, opt)
			p, err := vsphere.New(t.Context(), s.config())
			if err != nil {
				t.Fatalf("vsphere.New: %v", err)
			}
			return p, s.fix
		},
		Timeout: 10 * time.Second,
	}
}

// logBuffer collects log lines for assertions and echoes them to t.Log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func captureLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func testLogger(t *testing.T) *slog.Logger {
	l, _ := captureLogger(t)
	return l
}

var _ io.Writer = (*logBuffer)(nil)
