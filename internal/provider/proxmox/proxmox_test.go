package proxmox_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
	"github.com/sundown-ups/sundown/internal/provider/proxmox"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
)

const (
	tokenID = "sundown@pve!sundown"
	secret  = "3f0a6c9e-1111-4c2b-9d7e-2a5b0c1d9e77"
)

// conformanceFleet: pve1 carries Running (101), Off (102), NoTools (103,
// agent down), Deaf (104) and an HA-managed VM (106); pve2 a container.
func conformanceFleet() pvetest.Fleet {
	return pvetest.Fleet{
		Nodes: []pvetest.Node{{Name: "pve1"}, {Name: "pve2"}},
		Guests: []pvetest.Guest{
			{Node: "pve1", VMID: 101, Name: "web", Running: true},
			{Node: "pve1", VMID: 102, Name: "spare"},
			{Node: "pve1", VMID: 103, Name: "noagent", Running: true, AgentDown: true},
			{Node: "pve1", VMID: 104, Name: "deaf", Running: true, IgnoreShutdown: true},
			{Node: "pve2", VMID: 105, Name: "ct", Type: "lxc", Running: true},
			{Node: "pve1", VMID: 106, Name: "ha", Running: true, HA: true},
		},
		Token: tokenID + "=" + secret,
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startFake(t *testing.T, f pvetest.Fleet) *pvetest.Server {
	t.Helper()
	s, err := pvetest.NewServer(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func cfgFor(s *pvetest.Server) proxmox.Config {
	return proxmox.Config{URL: s.URL(), TokenID: tokenID, Secret: secret, CAFile: s.CAFile(),
		PollInterval: 10 * time.Millisecond, Logger: quiet()}
}

func open(t *testing.T, s *pvetest.Server) *proxmox.Provider {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p, err := proxmox.New(ctx, cfgFor(s))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * time.Second,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			s := startFake(t, conformanceFleet())
			p := open(t, s)
			return p, providertest.Fixture{
				Running: "pve1/qemu/101",
				Off:     "pve1/qemu/102",
				NoTools: "pve1/qemu/103",
				Deaf:    "pve1/qemu/104",
				Host:    "pve1",
				DenyPowerOff: func(t *testing.T, id string) string {
					if id != "pve1/qemu/101" {
						t.Fatalf("DenyPowerOff(%s): only 101 is modelled", id)
					}
					s.DenyNext(101)
					return "VM.PowerMgmt"
				},
			}
		},
	})
}

// waitFake polls the fake's own state until cond holds (a real peer
// running over time: poll with a deadline).
func waitFake(t *testing.T, s *pvetest.Server, vmid int, d time.Duration, cond func(pvetest.GuestState) bool) pvetest.GuestState {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, ok := s.State(vmid)
		if !ok {
			t.Fatalf("no guest %d", vmid)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %d: condition not reached within %v; state %+v", vmid, d, st)
		}
		time.Sleep(10 * time.Millisecond) // polling a peer with a deadline
	}
}

func TestHAGuestStaysOffAfterShutdown(t *testing.T) {
	s := startFake(t, conformanceFleet())
	p := open(t, s)
	defer p.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	const id = "pve1/qemu/106"
	if err := p.ShutdownGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitGuest(ctx, id, provider.PowerOff); err != nil {
		t.Fatal(err)
	}
	if n := s.Calls("PUT /cluster/ha/resources/vm:106"); n != 1 {
		t.Errorf("HA resource PUT calls = %d, want 1", n)
	}
	// Give the HA stack several restart delays: it must not bring it back.
	time.Sleep(400 * time.Millisecond) // observing a peer's (non-)action
	st, _ := s.State(106)
	if st.Status != "stopped" || st.HAState != "stopped" || st.Starts != 0 {
		t.Fatalf("HA guest after shutdown: %+v, want stopped with HA state stopped and no restart", st)
	}
	// Powering it on again hands it back to HA as "started".
	if err := p.PowerOnGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.State(106); st.HAState != "started" || st.Status != "running" {
		t.Fatalf("after PowerOnGuest: %+v", st)
	}
}

// TestFakeHARestarts pins the behaviour the provider defends against: the
// HA stack restarts an HA guest stopped without changing its HA state.
func TestFakeHARestarts(t *testing.T) {
	s := startFake(t, conformanceFleet())
	c := newRaw(t, s)
	up := c.post(t, "/nodes/pve1/qemu/106/status/stop", nil, 200).data.(string)
	c.waitTask(t, "pve1", up)
	waitFake(t, s, 106, 5*time.Second, func(g pvetest.GuestState) bool { return g.Status == "running" && g.Starts == 1 })
}

func TestPermissionNamesPrivilege(t *testing.T) {
	f := conformanceFleet()
	f.DenyPowerMgmt = []int{101}
	s := startFake(t, f)
	p := open(t, s)
	defer p.Close()
	ctx := t.Context()
	for name, call := range map[string]func() error{
		"ShutdownGuest": func() error { return p.ShutdownGuest(ctx, "pve1/qemu/101") },
		"PowerOffGuest": func() error { return p.PowerOffGuest(ctx, "pve1/qemu/101") },
		"SuspendGuest":  func() error { return p.SuspendGuest(ctx, "pve1/qemu/101") },
	} {
		err := call()
		var e *provider.Error
		if !errors.As(err, &e) || e.Class != provider.Permission || e.Privilege != "VM.PowerMgmt" {
			t.Errorf("%s: %v, want class permission with privilege VM.PowerMgmt", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "VM.PowerMgmt") || e.Target != "pve1/qemu/101" {
			t.Errorf("%s: error %q / target %q", name, err, e.Target)
		}
	}
}

func TestBadTokenIsAuth(t *testing.T) {
	s := startFake(t, conformanceFleet())
	cfg := cfgFor(s)
	cfg.Secret = "wrong-secret-value"
	_, err := proxmox.New(t.Context(), cfg)
	if provider.ClassOf(err) != provider.Auth {
		t.Fatalf("New with a wrong secret: %v, want class auth", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") || strings.Contains(err.Error(), secret) {
		t.Fatalf("error leaks the secret: %v", err)
	}
}

func TestWrongCARefused(t *testing.T) {
	s := startFake(t, conformanceFleet())
	other := startFake(t, conformanceFleet())
	cfg := cfgFor(s)
	cfg.CAFile = other.CAFile() // a CA that did not sign s's certificate
	_, err := proxmox.New(t.Context(), cfg)
	if provider.ClassOf(err) != provider.Permanent || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New with the wrong CA: %v, want a permanent certificate error", err)
	}
	if n := s.Calls("GET /version"); n != 0 {
		t.Fatalf("request reached the server through an untrusted TLS session (%d calls)", n)
	}
	// System roots do not know the fake's CA either.
	cfg.CAFile = ""
	if _, err := proxmox.New(t.Context(), cfg); provider.ClassOf(err) != provider.Permanent {
		t.Fatalf("New with system roots: %v, want permanent", err)
	}
}

func TestFingerprintPinning(t *testing.T) {
	s := startFake(t, conformanceFleet())
	other := startFake(t, conformanceFleet())
	cfg := cfgFor(s)
	cfg.CAFile = ""
	cfg.Fingerprint = s.Fingerprint()
	p, err := proxmox.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New pinned to the right fingerprint: %v", err)
	}
	p.Close()
	cfg.Fingerprint = other.Fingerprint()
	if _, err := proxmox.New(t.Context(), cfg); provider.ClassOf(err) != provider.Permanent {
		t.Fatalf("New pinned to another fingerprint: %v, want permanent", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	_, err = proxmox.New(t.Context(), proxmox.Config{URL: "https://" + addr, TokenID: tokenID, Secret: secret, Logger: quiet()})
	if provider.ClassOf(err) != provider.Unreachable {
		t.Fatalf("New against a closed port: %v, want unreachable", err)
	}
}

func TestShutdownHostNeedsForceWithRunningGuests(t *testing.T) {
	s := startFake(t, conformanceFleet())
	p := open(t, s)
	defer p.Close()
	err := p.ShutdownHost(t.Context(), "pve1", false)
	if provider.ClassOf(err) != provider.Permanent {
		t.Fatalf("ShutdownHost without force, guests running: %v, want permanent", err)
	}
	if len(s.NodeShutdowns()) != 0 {
		t.Fatalf("node shutdown sent anyway: %v", s.NodeShutdowns())
	}
	if err := p.ShutdownHost(t.Context(), "pve2", true); err != nil {
		t.Fatal(err)
	}
	if got := s.NodeShutdowns(); len(got) != 1 || got[0] != "pve2" {
		t.Fatalf("NodeShutdowns = %v", got)
	}
}

func TestShutdownRequestParameters(t *testing.T) {
	s := startFake(t, conformanceFleet())
	cfg := cfgFor(s)
	cfg.ShutdownTimeout = 90 * time.Second
	p, err := proxmox.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ShutdownGuest(t.Context(), "pve2/lxc/105"); err != nil {
		t.Fatal(err)
	}
	if n := s.Calls("POST /nodes/pve2/lxc/105/status/shutdown"); n != 1 {
		t.Fatalf("shutdown calls = %d", n)
	}
	// A deaf guest's shutdown task fails at the timeout (forceStop=0): the
	// guest stays on, and PowerOffGuest overrules the pending task.
	if err := p.ShutdownGuest(t.Context(), "pve1/qemu/104"); err != nil {
		t.Fatal(err)
	}
	if err := p.PowerOffGuest(t.Context(), "pve1/qemu/104"); err != nil {
		t.Fatalf("PowerOffGuest during a pending shutdown task: %v", err)
	}
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestInsecureIsLoggedAndSecretsAreNot(t *testing.T) {
	s := startFake(t, conformanceFleet())
	var logs syncBuf
	cfg := cfgFor(s)
	cfg.CAFile = ""
	cfg.Insecure = true
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := proxmox.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New with insecure: %v", err)
	}
	defer p.Close()
	if !strings.Contains(logs.String(), "DISABLED") {
		t.Errorf("insecure mode not logged: %q", logs.String())
	}
	ctx := t.Context()
	var errs []error
	errs = append(errs, p.ShutdownGuest(ctx, "pve1/qemu/106"), p.PowerOffGuest(ctx, "pve1/qemu/101"),
		p.PowerOnGuest(ctx, "pve1/qemu/101"), p.ShutdownGuest(ctx, "pve1/qemu/103"), p.ShutdownHost(ctx, "pve1", false))
	_, gerr := p.Guest(ctx, "pve1/qemu/999")
	errs = append(errs, gerr)
	all := logs.String()
	for _, err := range errs {
		if err != nil {
			all += err.Error()
		}
	}
	if strings.Contains(all, secret) {
		t.Fatalf("secret appears in logs or errors:\n%s", all)
	}
	if !strings.Contains(all, "HA resource state set") {
		t.Errorf("HA state change not logged:\n%s", all)
	}
}

func TestNodeFilter(t *testing.T) {
	s := startFake(t, conformanceFleet())
	cfg := cfgFor(s)
	cfg.Node = "pve2"
	p, err := proxmox.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Hosts) != 1 || inv.Hosts[0].ID != "pve2" || len(inv.Guests) != 1 || inv.Guests[0].ID != "pve2/lxc/105" {
		t.Fatalf("inventory with Node=pve2: %+v", inv)
	}
	if g := inv.Guests[0]; g.Power != provider.PowerOn || g.Tools != provider.ToolsRunning || g.HostID != "pve2" || g.Name != "ct" {
		t.Errorf("container: %+v", g)
	}
	if _, err := p.Guest(t.Context(), "pve1/qemu/101"); provider.ClassOf(err) != provider.NotFound {
		t.Errorf("guest on another node: %v, want not-found", err)
	}
	if err := p.SuspendGuest(t.Context(), "pve2/lxc/105"); provider.ClassOf(err) != provider.Unsupported {
		t.Errorf("SuspendGuest(container): %v, want unsupported", err)
	}
}

// TestBareErrorsReadFromStatusLine: the provider classifies errors whose
// message is only in the HTTP status line.
func TestBareErrorsReadFromStatusLine(t *testing.T) {
	f := conformanceFleet()
	f.BareErrors = true
	f.DenyPowerMgmt = []int{101}
	s := startFake(t, f)
	p := open(t, s)
	defer p.Close()
	err := p.PowerOffGuest(t.Context(), "pve1/qemu/101")
	var e *provider.Error
	if !errors.As(err, &e) || e.Class != provider.Permission || e.Privilege != "VM.PowerMgmt" {
		t.Fatalf("PowerOffGuest: %v, want permission VM.PowerMgmt", err)
	}
	if _, err := p.Guest(t.Context(), "pve1/qemu/999"); provider.ClassOf(err) != provider.NotFound {
		t.Fatalf("Guest(999): %v, want not-found", err)
	}
	if err := p.ShutdownGuest(t.Context(), "pve1/qemu/102"); err != nil {
		t.Fatalf("ShutdownGuest(off): %v", err)
	}
}

// TestAgentPingDeniedGivesToolsUnknown: a token without VM.Monitor still
// lists guests (tools unknown) and still asks them to shut down.
func TestAgentPingDeniedGivesToolsUnknown(t *testing.T) {
	f := conformanceFleet()
	f.DenyMonitor = []int{101}
	s := startFake(t, f)
	p := open(t, s)
	defer p.Close()
	if _, err := p.Inventory(t.Context()); err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	g, err := p.Guest(t.Context(), "pve1/qemu/101")
	if err != nil || g.Tools != provider.ToolsUnknown || g.Power != provider.PowerOn {
		t.Fatalf("Guest: %+v, %v; want on with tools unknown", g, err)
	}
	if err := p.ShutdownGuest(t.Context(), "pve1/qemu/101"); err != nil {
		t.Fatalf("ShutdownGuest: %v", err)
	}
	if n := s.Calls("POST /nodes/pve1/qemu/101/status/shutdown"); n != 1 {
		t.Fatalf("shutdown requests = %d", n)
	}
}
