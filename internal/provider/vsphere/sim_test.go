package vsphere_test

// An in-process vSphere for the tests: govmomi's simulator (vcsim) serving
// TLS on 127.0.0.1 with a certificate from a throw-away CA, with the gaps
// that matter to sundown filled in through the simulator's own hooks:
//
//   - ShutdownGuest on a VM whose tools do not run answers ToolsUnavailable
//     (the simulator would accept it);
//   - one VM accepts ShutdownGuest and ignores it (a hung guest OS);
//   - HostSystem.ShutdownHost_Task, which the simulator lacks, through a
//     wrapper object returned by the registry's Handler hook;
//   - calls are counted per method, and EnterMaintenanceMode_Task requests
//     are recorded.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
)

const (
	simUser      = "sundown@vsphere.local"
	simPassword  = "correct horse battery staple"
	powerOffPriv = "VirtualMachine.Interact.PowerOff"
)

// pki is a CA and a server certificate for 127.0.0.1 signed by it.
type pki struct {
	caPEM  []byte
	server tls.Certificate
	leaf   *x509.Certificate
}

var testPKI = sync.OnceValues(func() (*pki, error) { return newPKI() })

func newPKI() (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sundown test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "vcsim"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	return &pki{
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		server: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key, Leaf: leaf},
		leaf:   leaf,
	}, nil
}

func (k *pki) sha256() string {
	s := sha256.Sum256(k.leaf.Raw)
	return hex.EncodeToString(s[:])
}

func (k *pki) sha1() string {
	s := sha1.Sum(k.leaf.Raw)
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
	methodDelay map[string]int // per-method API delay in ms (Model.DelayConfig)
}

// sim is one running simulator.
type sim struct {
	t      *testing.T
	model  *simulator.Model
	server *simulator.Server
	caFile string
	pki    *pki
	fix    providertest.Fixture
	names  map[string]string // VM id → name

	noTools map[string]bool // VM ids whose tools do not run
	deaf    string

	mu          sync.Mutex
	calls       map[string]int
	maintenance []types.EnterMaintenanceMode_Task
}

func startSim(t *testing.T, opt simOptions) *sim {
	t.Helper()
	k, err := testPKI()
	if err != nil {
		t.Fatal(err)
	}
	var m *simulator.Model
	if opt.esx {
		m = simulator.ESX()
		m.Machine = 4
	} else {
		m = simulator.VPX() // 1 standalone host + a cluster
		m.ClusterHost = 2
		m.Machine = 3 // per host folder / pool: 6 VMs on 3 hosts
	}
	m.DelayConfig.MethodDelay = opt.methodDelay
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)

	s := &sim{t: t, model: m, pki: k, names: map[string]string{}, noTools: map[string]bool{}, calls: map[string]int{}}
	byName := map[string]*simulator.VirtualMachine{}
	for _, e := range m.Map().All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		byName[vm.Name] = vm
		s.names[vm.Self.Value] = vm.Name
	}
	pick := func(name string) *simulator.VirtualMachine {
		vm, ok := byName[name]
		if !ok {
			t.Fatalf("simulator has no VM %s", name)
		}
		return vm
	}
	var running, deaf, noTools, off *simulator.VirtualMachine
	if opt.esx {
		running, deaf, noTools, off = pick("ha-host_VM0"), pick("ha-host_VM1"), pick("ha-host_VM2"), pick("ha-host_VM3")
	} else {
		running, deaf = pick("DC0_H0_VM0"), pick("DC0_H0_VM1")
		noTools, off = pick("DC0_C0_RP0_VM0"), pick("DC0_C0_RP0_VM1")
	}
	s.fix = providertest.Fixture{
		Running: running.Self.Value,
		Off:     off.Self.Value,
		NoTools: noTools.Self.Value,
		Deaf:    deaf.Self.Value,
		Host:    running.Runtime.Host.Value,
	}
	s.fix.DenyPowerOff = s.denyPowerOff
	s.deaf = deaf.Self.Value
	s.noTools[noTools.Self.Value] = true
	s.noTools[off.Self.Value] = true

	// Tools run in every VM but NoTools and Off (the simulator reports
	// them not installed everywhere).
	ctx := m.Service.Context
	for _, vm := range byName {
		if s.noTools[vm.Self.Value] {
			continue
		}
		m.Map().WithLock(ctx, vm, func() {
			m.Map().Update(ctx, vm, []types.PropertyChange{
				{Name: "guest.toolsRunningStatus", Val: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
				{Name: "guest.toolsStatus", Val: types.VirtualMachineToolsStatusToolsOk},
			})
		})
	}
	m.Map().Handler = s.handle

	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{k.server}}
	m.Service.Listen = &url.URL{User: url.UserPassword(simUser, simPassword)}
	s.server = m.Service.NewServer()
	t.Cleanup(s.server.Close)

	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, k.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// Power Off off through the API, as an admin would.
	c := s.admin()
	task, err := object.NewVirtualMachine(c, off.Self).PowerOff(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// url is the endpoint without credentials.
func (s *sim) url() string {
	return "https://" + s.server.URL.Host + "/sdk"
}

// config is a provider Config that trusts the simulator through the CA file.
func (s *sim) config() vsphere.Config {
	return vsphere.Config{
		URL:      s.url(),
		Username: simUser,
		Password: simPassword,
		CAFile:   s.caFile,
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
	u, _ := url.Parse(s.url())
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(s.caFile); err != nil {
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

func (s *sim) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// handle is the registry's Handler hook: it runs before every method.
func (s *sim) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	s.mu.Lock()
	s.calls[m.Name]++
	if req, ok := m.Body.(*types.EnterMaintenanceMode_Task); ok {
		s.maintenance = append(s.maintenance, *req)
	}
	s.mu.Unlock()

	switch m.Name {
	case "ShutdownGuest":
		if s.noTools[m.This.Value] {
			vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine)
			if !ok {
				return nil, nil
			}
			var state types.VirtualMachinePowerState
			ctx.Map.WithLock(ctx, vm, func() { state = vm.Runtime.PowerState })
			if state == types.VirtualMachinePowerStatePoweredOn {
				return nil, &types.ToolsUnavailable{}
			}
		}
		if m.This.Value == s.deaf {
			if vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
				return override(ctx, &deafVM{vm}), nil
			}
		}
	case "ShutdownHost_Task":
		if h, ok := ctx.Map.Get(m.This).(*simulator.HostSystem); ok {
			return override(ctx, &shutdownHost{h}), nil
		}
	}
	return nil, nil
}

// override makes w handle this call. The simulator prefers an object in the
// caller's session registry over the one the Handler hook returns, so the
// wrapper goes there too (it embeds the real object, so every other method
// still reaches it).
func override(ctx *simulator.Context, w mo.Reference) mo.Reference {
	if ctx.Session != nil {
		ctx.Session.Put(w)
	}
	return w
}

// denyPowerOff makes the next PowerOffVM_Task on id fail with NoPermission,
// through the simulator's fault injection.
func (s *sim) denyPowerOff(t *testing.T, id string) string {
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: id}
	s.model.Service.AddFaultRule(&simulator.FaultInjectionRule{
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

// deafVM accepts ShutdownGuest and does nothing: a guest OS that hangs.
type deafVM struct {
	*simulator.VirtualMachine
}

func (vm *deafVM) ShutdownGuest(ctx *simulator.Context, req *types.ShutdownGuest) soap.HasFault {
	body := &methods.ShutdownGuestBody{}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		body.Fault_ = simulator.Fault("", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn,
			ExistingState:  vm.Runtime.PowerState,
		})
		return body
	}
	body.Res = new(types.ShutdownGuestResponse)
	return body
}

// shutdownHost adds ShutdownHost_Task with the documented behaviour: without
// force the host must be in maintenance mode (else InvalidState).
type shutdownHost struct {
	*simulator.HostSystem
}

func (h *shutdownHost) ShutdownHostTask(ctx *simulator.Context, req *types.ShutdownHost_Task) soap.HasFault {
	task := simulator.CreateTask(h.HostSystem, "shutdownHost", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if !req.Force && !h.Runtime.InMaintenanceMode {
			return nil, &types.InvalidState{}
		}
		ctx.Update(h.HostSystem, []types.PropertyChange{
			{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOff},
		})
		return nil, nil
	})
	return &methods.ShutdownHost_TaskBody{
		Res: &types.ShutdownHost_TaskResponse{Returnval: task.Run(ctx)},
	}
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
