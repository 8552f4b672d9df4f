package wake

import (
	"context"
	"errors"
	"fmt"
	"github.com/sundown-ups/sundown/internal/peer/ipmisim"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/peer"
)

func secret(s string) config.Secret { return config.NewSecret(s) }

func newIPMI(t *testing.T, cfg IPMIConfig) *IPMI {
	t.Helper()
	b, err := NewIPMI(cfg)
	if err != nil {
		t.Fatalf("NewIPMI: %v", err)
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestIPMISimPowerSequence drives the chassis through a restore and a
// shutdown against the real ipmi_sim, checking what reached the chassis.
func TestIPMISimPowerSequence(t *testing.T) {
	sim := ipmisim.Start(t, false)
	ctx := ctxT(t)
	b := newIPMI(t, simConfig(sim, ipmisim.Operator, ipmisim.OperatorPass)) // operator is enough

	on, err := b.PowerStatus(ctx)
	if err != nil || on {
		t.Fatalf("PowerStatus on a powered-off chassis = %v, %v; want false, nil", on, err)
	}
	if got, err := b.Awake(ctx); err != nil || got {
		t.Fatalf("Awake = %v, %v; want false, nil", got, err)
	}

	if err := b.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	if diff := cmp.Diff([]string{"set power 1"}, sim.Record(t)); diff != "" {
		t.Fatalf("chassis commands after PowerOn (-want +got):\n%s", diff)
	}
	if on, err := b.PowerStatus(ctx); err != nil || !on {
		t.Fatalf("PowerStatus after PowerOn = %v, %v; want true, nil", on, err)
	}

	// Wake on a running chassis must not send anything.
	if err := b.Wake(ctx); err != nil {
		t.Fatalf("Wake (already on): %v", err)
	}
	if n := len(sim.Record(t)); n != 1 {
		t.Fatalf("Wake on a running chassis sent a command: %q", sim.Record(t))
	}

	if err := b.SoftOff(ctx); err != nil {
		t.Fatalf("SoftOff: %v", err)
	}
	if err := b.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	if on, err := b.Awake(ctx); err != nil || on {
		t.Fatalf("Awake after PowerOff = %v, %v; want false, nil", on, err)
	}
	if err := b.Wake(ctx); err != nil {
		t.Fatalf("Wake (off): %v", err)
	}
	if on, err := b.Awake(ctx); err != nil || !on {
		t.Fatalf("Awake after Wake = %v, %v; want true, nil", on, err)
	}
	want := []string{"set power 1", "set shutdown 1", "set power 0", "set power 1"}
	if diff := cmp.Diff(want, sim.Record(t)); diff != "" {
		t.Fatalf("chassis commands (-want +got):\n%s", diff)
	}
	if got := sim.Power(t); got != "1" {
		t.Fatalf("chassis state file = %q, want 1", got)
	}
}

// TestIPMISimSessionsAreClosed: each call closes its session and stops the
// library's keep-alive goroutine. The simulated users may hold 10 sessions
// each, so 25 calls fail if sessions leak.
func TestIPMISimSessionsAreClosed(t *testing.T) {
	sim := ipmisim.Start(t, true)
	ctx := ctxT(t)
	b := newIPMI(t, simConfig(sim, ipmisim.Operator, ipmisim.OperatorPass))
	before := runtime.NumGoroutine()
	for i := range 25 {
		if on, err := b.PowerStatus(ctx); err != nil || !on {
			t.Fatalf("call %d: PowerStatus = %v, %v", i, on, err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after 25 calls", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond) // waiting for goroutines of a real peer exchange to end
	}
}

func TestIPMISimAdministratorPrivilege(t *testing.T) {
	sim := ipmisim.Start(t, true)
	cfg := simConfig(sim, ipmisim.Admin, ipmisim.AdminPass)
	cfg.Privilege = "administrator"
	b := newIPMI(t, cfg)
	if on, err := b.PowerStatus(ctxT(t)); err != nil || !on {
		t.Fatalf("PowerStatus = %v, %v; want true, nil", on, err)
	}
}

// TestIPMISimAuthErrors checks that refused credentials are KindAuth, fail
// fast, and never show the password.
func TestIPMISimAuthErrors(t *testing.T) {
	sim := ipmisim.Start(t, false)
	ctx := ctxT(t)
	const wrong = "Wr0ng-Passw0rd"
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", ipmisim.Operator, wrong},
		{"unknown user", "nobody", wrong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newIPMI(t, simConfig(sim, tc.user, tc.pass))
			start := time.Now()
			err := b.PowerOn(ctx)
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("PowerOn with bad credentials succeeded")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrAuth) || KindOf(err) != KindAuth {
				t.Fatalf("error kind = %v (%v); want %v", KindOf(err), err, KindAuth)
			}
			if errors.Is(err, ErrUnreachable) || KindOf(err).Retryable() {
				t.Fatalf("auth error claims to be retryable: %v", err)
			}
			if strings.Contains(err.Error(), wrong) {
				t.Fatalf("error shows the password: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "ipmi power-on 127.0.0.1:"+strconv.Itoa(sim.Port)+": authentication failed: ") {
				t.Fatalf("error text = %q", err)
			}
			if elapsed > 3*time.Second {
				t.Fatalf("auth failure took %s; the BMC answers at once", elapsed)
			}
		})
	}
	if rec := sim.Record(t); len(rec) != 0 {
		t.Fatalf("refused sessions reached the chassis: %q", rec)
	}
}

// TestIPMISimPrivilegeTooLow: chassis control in a user-level session is
// refused by the BMC with "insufficient privilege" (completion code 0xD4),
// which must come back as KindPermission. ipmi_sim does not enforce a
// user's own privilege limit when the session is set up (a user-level
// account gets an operator session), so the test requests a user-level
// session itself, which NewIPMI never does.
func TestIPMISimPrivilegeTooLow(t *testing.T) {
	sim := ipmisim.Start(t, false)
	b := newIPMI(t, simConfig(sim, ipmisim.Viewer, ipmisim.ViewerPass))
	b.priv = types.PrivilegeLevelUser
	ctx := ctxT(t)
	if on, err := b.PowerStatus(ctx); err != nil || on {
		t.Fatalf("PowerStatus in a user session = %v, %v; want false, nil", on, err)
	}
	err := b.PowerOn(ctx)
	if !errors.Is(err, ErrPermission) || KindOf(err).Retryable() {
		t.Fatalf("PowerOn in a user-level session: %v; want %v", err, ErrPermission)
	}
	t.Logf("error: %v", err)
	if rec := sim.Record(t); len(rec) != 0 {
		t.Fatalf("chassis received %q", rec)
	}
}

// TestIPMIUnreachable: a closed port on loopback is refused at once.
func TestIPMIUnreachable(t *testing.T) {
	b := newIPMI(t, IPMIConfig{Host: "127.0.0.1", Port: ipmisim.FreeUDPPort(t), User: "op", Password: secret("s3cret-pw"), Timeout: 3 * time.Second})
	_, err := b.PowerStatus(ctxT(t))
	if !errors.Is(err, ErrUnreachable) || !KindOf(err).Retryable() {
		t.Fatalf("PowerStatus on a closed port: %v; want %v", err, ErrUnreachable)
	}
	t.Logf("error: %v", err)
}

// TestIPMISilentBMC: a UDP socket that never answers is unreachable once
// the per-call timeout passes, and the call does not outlive it by much.
func TestIPMISilentBMC(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	b := newIPMI(t, IPMIConfig{Host: "127.0.0.1", Port: port, User: "op", Password: secret("s3cret-pw"), Timeout: 400 * time.Millisecond})
	start := time.Now()
	err = b.Wake(ctxT(t))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Wake on a silent BMC: %v; want %v", err, ErrUnreachable)
	}
	t.Logf("error after %s: %v", elapsed, err)
	// No session was set up, so no Close Session is waited for.
	if elapsed > 400*time.Millisecond+500*time.Millisecond {
		t.Fatalf("Wake on a silent BMC took %s", elapsed)
	}
}

// TestIPMISimIpmitoolAgrees cross-checks against the real ipmitool: it
// sees what we did, and we see what it did.
func TestIPMISimIpmitoolAgrees(t *testing.T) {
	tool := peer.NeedBinary(t, "ipmitool", "apt-get install -y ipmitool")
	sim := ipmisim.Start(t, false)
	ctx := ctxT(t)
	b := newIPMI(t, simConfig(sim, ipmisim.Operator, ipmisim.OperatorPass))
	ipmitool := func(args ...string) string {
		t.Helper()
		base := []string{"-I", "lanplus", "-C", "3", "-L", "OPERATOR", "-H", sim.Host, "-p", strconv.Itoa(sim.Port),
			"-U", ipmisim.Operator, "-P", ipmisim.OperatorPass}
		// ipmitool complains on stderr that an operator session may not
		// ask for HPM capabilities; only stdout is the answer.
		var stderr strings.Builder
		cmd := exec.CommandContext(ctx, tool, append(base, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ipmitool %s: %v: %s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}

	if err := b.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ipmitool("chassis", "power", "status"); got != "Chassis Power is on" {
		t.Fatalf("ipmitool after our PowerOn: %q", got)
	}
	ipmitool("chassis", "power", "off")
	if on, err := b.PowerStatus(ctx); err != nil || on {
		t.Fatalf("PowerStatus after ipmitool power off = %v, %v", on, err)
	}
}

func TestNewIPMIValidation(t *testing.T) {
	ok := IPMIConfig{Host: "bmc1", User: "op", Password: secret("pw")}
	b, err := NewIPMI(ok)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != "ipmi bmc1:623" || b.priv != 3 || b.suite != 3 || b.timeout != DefaultIPMITimeout {
		t.Fatalf("defaults: %s priv=%d suite=%d timeout=%s", b, b.priv, b.suite, b.timeout)
	}
	const pw = "this-password-is-far-too-long-for-ipmi"
	_, err = NewIPMI(IPMIConfig{Port: 70000, User: strings.Repeat("u", 17), Password: secret(pw), Privilege: "root", CipherSuite: 99, Timeout: -1})
	if err == nil {
		t.Fatal("NewIPMI accepted a bad config")
	}
	for _, want := range []string{"host: required", "port 70000", "user: longer than 16", "password: longer than 20",
		`privilege "root"`, "cipher suite 99", "timeout -1ns"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error shows the password: %v", err)
	}
	if _, err := NewIPMI(IPMIConfig{Host: "h"}); err == nil || !strings.Contains(err.Error(), "user: required") {
		t.Fatalf("missing user: %v", err)
	}
}

func TestErrorFormatAndKinds(t *testing.T) {
	cause := fmt.Errorf("boom")
	e := &Error{Op: "ipmi power-on", Target: "10.0.0.5:623", Kind: KindAuth, Err: cause}
	if got, want := e.Error(), "ipmi power-on 10.0.0.5:623: authentication failed: boom"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("restore host1: %w", e)
	if !errors.Is(wrapped, ErrAuth) || errors.Is(wrapped, ErrUnreachable) || !errors.Is(wrapped, cause) {
		t.Fatal("errors.Is does not see through the wrapping")
	}
	other := &Error{Op: "wol", Kind: KindOther, Err: cause}
	if got := other.Error(); got != "wol: boom" {
		t.Fatalf("Error() = %q", got)
	}
	if KindOf(cause) != KindOther || KindOf(wrapped) != KindAuth {
		t.Fatal("KindOf")
	}
}

func TestClean(t *testing.T) {
	s := secret("hunter2")
	base := errors.New("login hunter2 refused,\nerrs:\n  bad")
	err := clean(base, s)
	if got, want := err.Error(), "login <secret> refused, errs: bad"; got != want || !errors.Is(err, base) {
		t.Fatalf("clean = %q (Is: %v), want %q", got, errors.Is(err, base), want)
	}
	plain := errors.New("plain")
	if clean(plain, secret("")) != plain || clean(plain, s) != plain {
		t.Fatal("clean changed an error that needed nothing")
	}
}

func TestClassifyIPMI(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Kind
	}{
		{"RAKP mismatch, flattened by Connect", errors.New("connect20 failed: rakp1 failed: RAKP2 authentication code mismatch: " + client.ErrRAKPAuthentication.Error()), KindAuth},
		{"RAKP mismatch, wrapped", fmt.Errorf("x: %w", client.ErrRAKPAuthentication), KindAuth},
		{"unauthorized name", fmt.Errorf("x: %w", types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName)), KindAuth},
		{"unauthorized name, flattened", errors.New("errs: " + types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName).Error()), KindAuth},
		{"role refused", fmt.Errorf("x: %w", types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedRoleOfPriLevel)), KindPermission},
		{"insufficient privilege", fmt.Errorf("x: %w", types.NewResponseError(types.CodeInsufficientPrivilege, "")), KindPermission},
		{"session privilege refused", fmt.Errorf("SetSessionPrivilegeLevel to (OPERATOR) failed, err: %w", types.NewResponseError(0x81, "")), KindPermission},
		{"other completion code", fmt.Errorf("x: %w", types.NewResponseError(0xCC, "invalid data field")), KindOther},
		{"refused", fmt.Errorf("x: %w", syscall.ECONNREFUSED), KindUnreachable},
		{"no datagram", errors.New("IPMI LAN: no matching IPMI response after 5 attempt(s): udp exchange: " + noDatagramMatched), KindUnreachable},
		{"dns", &net.DNSError{Err: "no such host", Name: "bmc", IsNotFound: true}, KindUnreachable},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), KindUnreachable},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), KindOther},
	} {
		if got := classifyIPMI(tc.err); got != tc.want {
			t.Errorf("%s: classifyIPMI(%q) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// simConfig is an IPMIConfig for the simulated BMC and a user.
func simConfig(s *ipmisim.Sim, user, pass string) IPMIConfig {
	return IPMIConfig{Host: s.Host, Port: s.Port, User: user, Password: secret(pass), Timeout: 5 * time.Second}
}
