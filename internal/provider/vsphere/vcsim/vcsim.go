// Package vcsim runs govmomi's vSphere simulator in-process with a declared
// fleet of hosts and VMs, for `sundown demo`, the daemon's end-to-end tests
// and the benchmarks. It is an ordinary package (it does not import
// testing).
//
// Start builds exactly the declared inventory — a vCenter with one
// datacenter and one cluster, or a standalone ESXi host — with the VMs named
// as declared on the hosts declared, and serves the vSphere API over TLS on
// 127.0.0.1 with a certificate from a throw-away CA. The simulator's gaps
// that matter to sundown are filled in:
//
//   - ShutdownGuest on a VM without VMware Tools answers ToolsUnavailable
//     (the simulator would accept it);
//   - a guest reaches poweredOff only after its own shutdown delay (the
//     simulator's takes a few milliseconds), or never, for a guest that
//     ignores the request;
//   - VMware Tools are reported running while a VM with tools is on, and
//     not running while it is off or suspended;
//   - HostSystem.ShutdownHost_Task, which the simulator lacks: without force
//     it needs maintenance mode, and the host goes down with its VMs;
//   - a VM on a host that is down cannot be powered on;
//   - calls are counted per method and per method and VM or host, host
//     shutdowns and maintenance requests recorded.
//
// Building the inventory bypasses the simulator's usual 20 ms task wait, so
// a fleet of 1,000 VMs starts in about 2 seconds.
//
// A Sim prints nothing: while it runs, the standard library's log package
// (where the simulator writes its complaints) is discarded, unless
// Fleet.KeepStdLog says otherwise.
package vcsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Defaults for Fleet and VM fields left empty.
const (
	DefaultUsername      = "sundown@vsphere.local"
	DefaultPassword      = "vcsim-demo-password"
	DefaultShutdownDelay = 2 * time.Second
)

// VM is one virtual machine of the fleet.
type VM struct {
	// Name is the VM's display name, unique in the fleet. It must not
	// contain '/', '\' or '%' (vSphere escapes them).
	Name string
	// Host is the name of the Host that runs the VM; it may be empty when
	// the fleet has exactly one host.
	Host string
	// PoweredOff starts the VM off; by default it is on.
	PoweredOff bool
	// NoTools: VMware Tools are not installed, so ShutdownGuest answers
	// ToolsUnavailable while the VM is on.
	NoTools bool
	// IgnoreShutdown: the guest accepts ShutdownGuest and stays on (a hung
	// guest OS).
	IgnoreShutdown bool
	// ShutdownDelay is the guest OS's time from ShutdownGuest to
	// poweredOff; 0 means DefaultShutdownDelay.
	ShutdownDelay time.Duration
	// Annotation is the VM's notes (config.annotation).
	Annotation string
	// UUID is the BIOS UUID (config.uuid); empty lets the simulator derive
	// one.
	UUID string
}

// Host is one hypervisor host of the fleet.
type Host struct {
	// Name is the host's name in the inventory, unique in the fleet.
	Name string
}

// Fleet declares what Start builds.
type Fleet struct {
	// VCenter serves a vCenter (one datacenter, one cluster holding every
	// host); otherwise a standalone ESXi host, and Hosts must have exactly
	// one entry.
	VCenter bool
	// Hosts must not be empty.
	Hosts []Host
	// VMs may be empty.
	VMs []VM
	// Username and Password are the only credentials the simulator
	// accepts; empty means DefaultUsername and DefaultPassword.
	Username, Password string
	// MethodDelay delays the simulator's answer to the named API methods
	// ("ShutdownGuest", "PowerOffVM_Task", "RetrieveProperties", …), to
	// model a slow server. Resolution is a millisecond.
	MethodDelay map[string]time.Duration
	// PKI is the CA and certificate to serve; nil makes a new one.
	PKI *PKI
	// KeepStdLog leaves the standard library's log package alone. By
	// default a Sim discards that output while it runs (see QuietStdLog),
	// which is where the simulator reports refused requests and the HTTP
	// server its failed TLS handshakes.
	KeepStdLog bool
}

// Sim is a running simulator. Its methods are safe for concurrent use.
type Sim struct {
	fleet  Fleet
	model  *simulator.Model
	server *simulator.Server
	pki    *PKI
	dir    string // owned temp dir: the CA file and the datastore
	caFile string
	url    string
	hook   *toolsHook
	// restoreLog undoes QuietStdLog; nil with Fleet.KeepStdLog.
	restoreLog func()

	// Filled by Start, read-only afterwards.
	vms       []*vmState
	vmByName  map[string]*vmState
	vmByID    map[string]*vmState
	hosts     []*hostState
	hostByNm  map[string]*hostState
	hostByID  map[string]*hostState
	dsName    string
	startTook time.Duration

	mu          sync.Mutex
	calls       map[string]int
	objCalls    map[callKey]int // calls per method and managed object
	shutdowns   []string
	maintenance []types.EnterMaintenanceMode_Task
	pending     map[string]*pendingShutdown // VM id → guest shutdown under way
	closed      bool
	timers      sync.WaitGroup // shutdown timers that fired and still run

	closeOnce sync.Once
	closeErr  error
}

type vmState struct {
	spec VM
	ref  types.ManagedObjectReference
	obj  *simulator.VirtualMachine
	host *hostState
}

type hostState struct {
	name string
	ref  types.ManagedObjectReference
	obj  *simulator.HostSystem
}

// callKey counts the calls of one method on one managed object (by its
// ID, "vm-42", unique across types).
type callKey struct {
	method, obj string
}

type pendingShutdown struct {
	timer *time.Timer
	boot  time.Time // the boot the request was made in
}

// startMu serializes the parts of Start that touch govmomi's globals.
var startMu sync.Mutex

// Start builds the fleet and serves it on https://127.0.0.1:<port>/sdk. ctx
// bounds the building only. The caller must Close the Sim.
func Start(ctx context.Context, f Fleet) (sim *Sim, err error) {
	start := time.Now()
	if err := f.normalize(); err != nil {
		return nil, err
	}
	k := f.PKI
	if k == nil {
		if k, err = NewPKI(); err != nil {
			return nil, err
		}
	}
	s := &Sim{
		fleet:    f,
		pki:      k,
		vmByName: make(map[string]*vmState, len(f.VMs)),
		vmByID:   make(map[string]*vmState, len(f.VMs)),
		hostByNm: make(map[string]*hostState, len(f.Hosts)),
		hostByID: make(map[string]*hostState, len(f.Hosts)),
		calls:    map[string]int{},
		objCalls: map[callKey]int{},
		pending:  map[string]*pendingShutdown{},
	}
	defer func() {
		if err != nil {
			s.teardown()
			sim = nil
		}
	}()
	if !f.KeepStdLog {
		s.restoreLog = QuietStdLog()
	}
	if s.dir, err = scratchDir(); err != nil {
		return nil, err
	}
	s.caFile = filepath.Join(s.dir, "ca.pem")
	if err := os.WriteFile(s.caFile, k.CAPEM, 0o600); err != nil {
		return nil, fmt.Errorf("vcsim: write CA file: %w", err)
	}
	// The simulator's model builder and server start write package-level
	// state of govmomi's (default settings, the evaluation licence): one
	// Sim at a time.
	startMu.Lock()
	defer startMu.Unlock()
	if err := s.build(ctx); err != nil {
		return nil, err
	}

	m := s.model
	if len(f.MethodDelay) > 0 {
		// After building, so that building is not slowed down.
		m.DelayConfig.MethodDelay = make(map[string]int, len(f.MethodDelay))
		for name, d := range f.MethodDelay {
			m.DelayConfig.MethodDelay[name] = int(d / time.Millisecond)
		}
	}
	m.Map().Handler = s.handle
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{k.Server}, MinVersion: tls.VersionTLS12}
	m.Service.Listen = &url.URL{User: url.UserPassword(f.Username, f.Password)}
	if s.server, err = newServer(m.Service); err != nil {
		return nil, err
	}
	s.url = "https://" + s.server.URL.Host + "/sdk"
	s.startTook = time.Since(start)
	return s, nil
}

// scratchDir makes the Sim's folder: the CA file and the datastore, where
// the simulator writes three small files per VM. A RAM file system is
// preferred when there is one: on a disk, creating those files is most of
// the time Start takes (5 s rather than 1.6 s for 1,000 VMs here).
func scratchDir() (string, error) {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "sundown-vcsim-"); err == nil {
			return dir, nil
		}
	}
	dir, err := os.MkdirTemp("", "sundown-vcsim-")
	if err != nil {
		return "", fmt.Errorf("vcsim: temp dir: %w", err)
	}
	return dir, nil
}

// newServer starts the HTTPS server; the simulator panics when it cannot
// listen.
func newServer(svc *simulator.Service) (srv *simulator.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("vcsim: start server: %v", r)
		}
	}()
	return svc.NewServer(), nil
}

func (f *Fleet) normalize() error {
	if f.Username == "" {
		f.Username = DefaultUsername
	}
	if f.Password == "" {
		f.Password = DefaultPassword
	}
	var errs []error
	if len(f.Hosts) == 0 {
		errs = append(errs, errors.New("fleet has no hosts"))
	}
	if !f.VCenter && len(f.Hosts) > 1 {
		errs = append(errs, fmt.Errorf("a standalone ESXi fleet has exactly one host, not %d", len(f.Hosts)))
	}
	hosts := map[string]bool{}
	for i, h := range f.Hosts {
		switch {
		case h.Name == "":
			errs = append(errs, fmt.Errorf("hosts[%d]: empty name", i))
		case hosts[h.Name]:
			errs = append(errs, fmt.Errorf("hosts[%d]: duplicate name %q", i, h.Name))
		}
		hosts[h.Name] = true
	}
	vms := map[string]bool{}
	// Copy: normalize fills in defaults and must not write to the
	// caller's slice.
	f.VMs = append([]VM(nil), f.VMs...)
	for i := range f.VMs {
		vm := &f.VMs[i]
		if vm.Host == "" && len(f.Hosts) == 1 {
			vm.Host = f.Hosts[0].Name
		}
		if vm.ShutdownDelay == 0 {
			vm.ShutdownDelay = DefaultShutdownDelay
		}
		switch {
		case vm.Name == "":
			errs = append(errs, fmt.Errorf("vms[%d]: empty name", i))
		case strings.ContainsAny(vm.Name, `/\%`):
			errs = append(errs, fmt.Errorf("vms[%d]: name %q contains '/', '\\' or '%%'", i, vm.Name))
		case vms[vm.Name]:
			errs = append(errs, fmt.Errorf("vms[%d]: duplicate name %q", i, vm.Name))
		}
		vms[vm.Name] = true
		if !hosts[vm.Host] {
			errs = append(errs, fmt.Errorf("vms[%d] (%s): unknown host %q", i, vm.Name, vm.Host))
		}
		if vm.ShutdownDelay < 0 {
			errs = append(errs, fmt.Errorf("vms[%d] (%s): negative shutdown delay", i, vm.Name))
		}
	}
	for name, d := range f.MethodDelay {
		if d < 0 {
			errs = append(errs, fmt.Errorf("method delay of %s is negative", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vcsim: invalid fleet: %w", err)
	}
	return nil
}

// URL is the SDK endpoint, https://127.0.0.1:<port>/sdk, without
// credentials.
func (s *Sim) URL() string { return s.url }

// CAFile is a PEM file with the CA that signed the server certificate. It
// lives in a temp folder the Sim removes on Close.
func (s *Sim) CAFile() string { return s.caFile }

// CAPEM is the content of CAFile.
func (s *Sim) CAPEM() []byte { return s.pki.CAPEM }

// Thumbprint is the SHA-256 fingerprint of the server certificate in
// lower-case hex.
func (s *Sim) Thumbprint() string { return s.pki.Thumbprint() }

// Certificate is the server certificate (the leaf).
func (s *Sim) Certificate() *x509.Certificate { return s.pki.Leaf }

// Username is the accepted user name.
func (s *Sim) Username() string { return s.fleet.Username }

// Password is the accepted password.
func (s *Sim) Password() string { return s.fleet.Password }

// StartDuration is how long Start took.
func (s *Sim) StartDuration() time.Duration { return s.startTook }

// VMID is the managed object ID ("vm-42") of the named VM, "" when the
// fleet has no such VM. It is the ID providers report.
func (s *Sim) VMID(name string) string {
	if vm := s.vmByName[name]; vm != nil {
		return vm.ref.Value
	}
	return ""
}

// HostID is the managed object ID ("host-21") of the named host, "" when
// the fleet has no such host.
func (s *Sim) HostID(name string) string {
	if h := s.hostByNm[name]; h != nil {
		return h.ref.Value
	}
	return ""
}

// Calls is how many API requests for method (the vSphere name:
// "ShutdownGuest", "PowerOffVM_Task", "RetrieveProperties", …) the Sim has
// received.
func (s *Sim) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// CallsFor is how many API requests for method the Sim has received on the
// named VM or, when no VM has that name, the named host: e.g.
// CallsFor("ShutdownGuest", "web-1"), CallsFor("ShutdownHost_Task",
// "esx-a"). Requests the simulator refused count too. An unknown name
// gives 0.
func (s *Sim) CallsFor(method, name string) int {
	var id string
	switch vm, h := s.vmByName[name], s.hostByNm[name]; {
	case vm != nil:
		id = vm.ref.Value
	case h != nil:
		id = h.ref.Value
	default:
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objCalls[callKey{method, id}]
}

// PowerState is the named VM's power state: "poweredOn", "poweredOff" or
// "suspended"; "" for an unknown VM.
func (s *Sim) PowerState(vmName string) string {
	vm := s.vmByName[vmName]
	if vm == nil {
		return ""
	}
	var st types.VirtualMachinePowerState
	s.withLock(vm.ref, func() { st = vm.obj.Runtime.PowerState })
	return string(st)
}

// HostPowerState is the named host's power state: "poweredOn",
// "poweredOff" or "standBy"; "" for an unknown host.
func (s *Sim) HostPowerState(host string) string {
	h := s.hostByNm[host]
	if h == nil {
		return ""
	}
	var st types.HostSystemPowerState
	s.withLock(h.ref, func() { st = h.obj.Runtime.PowerState })
	return string(st)
}

// HostShutdowns lists the names of the hosts that were shut down through
// ShutdownHost_Task, in order.
func (s *Sim) HostShutdowns() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.shutdowns...)
}

// MaintenanceRequests are the EnterMaintenanceMode_Task requests received,
// in order.
func (s *Sim) MaintenanceRequests() []types.EnterMaintenanceMode_Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]types.EnterMaintenanceMode_Task(nil), s.maintenance...)
}

// InMaintenance reports whether the named host is in maintenance mode.
func (s *Sim) InMaintenance(host string) bool {
	h := s.hostByNm[host]
	if h == nil {
		return false
	}
	var in bool
	s.withLock(h.ref, func() { in = h.obj.Runtime.InMaintenanceMode })
	return in
}

// BootHost brings a host that was shut down back up (what Wake-on-LAN or
// IPMI would do when power returns): powered on and connected, still in
// maintenance mode if it was, its VMs off. A host that is up is left alone.
func (s *Sim) BootHost(host string) error {
	h := s.hostByNm[host]
	if h == nil {
		return fmt.Errorf("vcsim: boot host %q: no such host", host)
	}
	ctx := s.owner()
	s.model.Map().WithLock(ctx, h.ref, func() {
		if h.obj.Runtime.PowerState == types.HostSystemPowerStatePoweredOn {
			return
		}
		now := time.Now()
		s.model.Map().Update(ctx, h.obj, []types.PropertyChange{
			{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOn},
			{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			{Name: "runtime.bootTime", Val: &now},
		})
	})
	return nil
}

// AddFaultRule adds a fault injection rule to the simulator (see
// simulator.FaultInjectionRule: a method, an object type and name, a
// probability, a count).
func (s *Sim) AddFaultRule(rule *simulator.FaultInjectionRule) {
	s.model.Service.AddFaultRule(rule)
}

// Close stops the server (waiting for requests in flight), cancels pending
// guest shutdowns and removes everything the Sim created. It is safe to
// call more than once; later calls return the first result.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.teardown() })
	return s.closeErr
}

// teardown releases whatever Start got as far as creating.
func (s *Sim) teardown() error {
	if s.server != nil {
		s.server.Close()
	}
	s.mu.Lock()
	s.closed = true
	for id, p := range s.pending {
		if p.timer.Stop() {
			s.timers.Done()
		}
		delete(s.pending, id)
	}
	s.mu.Unlock()
	s.timers.Wait()
	if s.model != nil {
		if s.hook != nil {
			s.model.Map().RemoveHandler(s.hook)
		}
		s.model.Remove()
	}
	if s.restoreLog != nil {
		s.restoreLog()
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("vcsim: remove %s: %w", s.dir, err)
		}
	}
	return nil
}

// owner returns a new lock owner: the simulator's locks are re-entrant per
// *simulator.Context, so each independent operation needs its own.
func (s *Sim) owner() *simulator.Context {
	return &simulator.Context{Context: context.Background(), Map: s.model.Map()}
}

// withLock runs f holding obj's lock. Pass a ManagedObjectReference: the
// registry then finds the lock without reading the object, whose Self field
// the hooks' wrappers rewrite (a data race the detector reports).
func (s *Sim) withLock(obj mo.Reference, f func()) {
	s.model.Map().WithLock(s.owner(), obj, f)
}
