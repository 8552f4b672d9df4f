package nut_test

// Integration tests of the client against the real NUT 2.8.0 upsd with
// dummy-ups drivers, started by internal/peer/nutd. They skip when the NUT
// binaries are missing and fail instead with SUNDOWN_REQUIRE_PEERS=1.
//
// One server is shared by the subtests of each top-level test (a cold start
// costs about 3 s); every subtest works on its own UPS where its changes
// would disturb another (FSD is a latch in upsd, faults stop a driver).
//
// Not tested here: upsd drops a client that sends nothing for 60 s (too slow
// for a test); a monitor that polls more often never meets it.

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
)

// Users of the real servers. The upsmon password has a space, a quote and a
// backslash, so a successful LOGIN also proves the client's quoting.
const (
	realMon       = "mon"
	realMonPass   = `s3 "cr\et`
	realSec       = "sec"
	realSecPass   = "secpw"
	realAdmin     = "admin"
	realAdminPass = "adminpw"
	realMaxAge    = 3 // upsd MAXAGE for the fault tests, seconds
)

var realUsers = []nutd.User{
	{Name: realMon, Password: realMonPass, Upsmon: "primary"},
	{Name: realSec, Password: realSecPass, Upsmon: "secondary"},
	// No upsmon line: SET, FSD and instant commands, but no LOGIN.
	{Name: realAdmin, Password: realAdminPass, Actions: []string{"SET", "FSD"}, InstCmds: []string{"ALL"}},
}

func fullUPS(name, desc string) nutd.UPS {
	return nutd.UPS{Name: name, Desc: desc, Vars: map[string]string{
		"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800",
	}}
}

// pollUntil calls cond every interval until it returns true and returns how
// long that took; it fails the test after bound.
func pollUntil(t *testing.T, what string, bound, interval time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(interval)
	}
	return time.Since(start)
}

// TestRealUPSD runs the plain-text scenarios against one upsd with five
// dummy-ups drivers.
func TestRealUPSD(t *testing.T) {
	start := time.Now()
	s := nutd.Start(t, nutd.Config{
		UPS: []nutd.UPS{
			fullUPS("ups", `Rack A "main"`), // session, FSD
			{Name: "bare"},                  // no description, never changed
			fullUPS("seq", ""),              // status sequence
			fullUPS("cmd", ""),              // INSTCMD and SET VAR
			fullUPS("fault", ""),            // driver faults
		},
		Users:  realUsers,
		MaxAge: realMaxAge,
	})
	t.Logf("nutd.Start: %s", time.Since(start).Round(time.Millisecond))

	t.Run("session", func(t *testing.T) { testRealSession(t, s) })
	t.Run("status-sequence", func(t *testing.T) { testRealStatusSequence(t, s) })
	t.Run("auth", func(t *testing.T) { testRealAuth(t, s) })
	t.Run("instcmd", func(t *testing.T) { testRealInstCmd(t, s) })
	t.Run("starttls-refused", func(t *testing.T) { testRealSTARTTLSRefused(t, s) })
	t.Run("driver-stale", func(t *testing.T) { testRealDriverStale(t, s) })
	t.Run("driver-killed", func(t *testing.T) { testRealDriverKilled(t, s) })
	t.Run("upsd-killed", func(t *testing.T) { testRealUPSDKilled(t, s) })
}

func testRealSession(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	// obs is a second connection that watches what mon's session does.
	obs := dial(t, s.Addr(), nut.Options{})

	ver, err := obs.Version(ctx)
	if err != nil || !strings.Contains(ver, "upsd 2.8") {
		t.Errorf("VER: %q, %v; want the upsd 2.8 banner", ver, err)
	}
	if nv, err := obs.NetVersion(ctx); err != nil || nv != "1.3" {
		t.Errorf("NETVER: %q, %v; want 1.3", nv, err)
	}

	upses, err := obs.ListUPS(ctx)
	if err != nil {
		t.Fatalf("LIST UPS: %v", err)
	}
	slices.SortFunc(upses, func(a, b nut.UPS) int { return strings.Compare(a.Name, b.Name) })
	wantUPS := []nut.UPS{
		{Name: "bare", Description: "Description unavailable"},
		{Name: "cmd", Description: "Description unavailable"},
		{Name: "fault", Description: "Description unavailable"},
		{Name: "seq", Description: "Description unavailable"},
		{Name: "ups", Description: `Rack A "main"`},
	}
	if d := cmp.Diff(wantUPS, upses); d != "" {
		t.Errorf("LIST UPS (-want +got):\n%s", d)
	}
	if d, err := obs.UPSDesc(ctx, "ups"); err != nil || d != `Rack A "main"` {
		t.Errorf("GET UPSDESC ups: %q, %v", d, err)
	}
	if d, err := obs.UPSDesc(ctx, "bare"); err != nil || d != "Unavailable" {
		t.Errorf("GET UPSDESC bare: %q, %v; want Unavailable", d, err)
	}

	list, err := obs.ListVar(ctx, "ups")
	if err != nil {
		t.Fatalf("LIST VAR: %v", err)
	}
	vars := map[string]string{}
	for _, v := range list {
		vars[v.Name] = v.Value
	}
	for k, want := range map[string]string{
		"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800",
		"driver.name": "dummy-ups", "driver.version": "2.8.0", "driver.parameter.pollinterval": "1",
	} {
		if vars[k] != want {
			t.Errorf("LIST VAR ups: %s = %q, want %q (all: %v)", k, vars[k], want, vars)
		}
	}
	if v, err := obs.Get(ctx, "ups", "battery.charge"); err != nil || v != "100" {
		t.Errorf("GET VAR battery.charge: %q, %v", v, err)
	}
	got, err := obs.GetVars(ctx, "ups", "ups.status", "no.such.var", "battery.charge", "battery.runtime")
	if err != nil {
		t.Fatalf("GetVars: %v", err)
	}
	if d := cmp.Diff(map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800"}, got); d != "" {
		t.Errorf("GetVars with a missing variable (-want +got):\n%s", d)
	}

	// dummy-ups 2.8.0 declares every variable of its .dev file writable:
	// strings as STRING:32, numbers as NUMBER.
	if ty, err := obs.VarType(ctx, "ups", "ups.status"); err != nil || !ty.RW || ty.StringMax != 32 || ty.Number {
		t.Errorf("GET TYPE ups.status: %+v, %v; want RW STRING:32", ty, err)
	}
	if ty, err := obs.VarType(ctx, "ups", "battery.charge"); err != nil || !ty.RW || !ty.Number || ty.StringMax != 0 {
		t.Errorf("GET TYPE battery.charge: %+v, %v; want RW NUMBER", ty, err)
	}
	if _, err := obs.VarType(ctx, "ups", "no.such.var"); !errors.Is(err, nut.ErrVarNotSupported) {
		t.Errorf("GET TYPE of a missing variable: %v, want ErrVarNotSupported", err)
	}
	// Descriptions come from /usr/share/nut/cmdvartab.
	if d, err := obs.VarDesc(ctx, "ups", "ups.status"); err != nil || d != "UPS status" {
		t.Errorf("GET DESC ups.status: %q, %v", d, err)
	}
	if d, err := obs.VarDesc(ctx, "ups", "no.such.var"); err != nil || d != "Description unavailable" {
		t.Errorf("GET DESC of a missing variable: %q, %v", d, err)
	}
	if d, err := obs.CmdDesc(ctx, "ups", "load.off"); err != nil || d != "Turn off the load immediately" {
		t.Errorf("GET CMDDESC load.off: %q, %v", d, err)
	}
	if cmds, err := obs.ListCmd(ctx, "ups"); err != nil || !cmp.Equal(cmds, []nut.Cmd{{Name: "load.off"}}) {
		t.Errorf("LIST CMD: %v, %v; want [load.off] (all dummy-ups 2.8.0 offers)", cmds, err)
	}

	numLogins := func() int {
		t.Helper()
		n, err := obs.NumLogins(ctx, "ups")
		if err != nil {
			t.Fatalf("GET NUMLOGINS: %v", err)
		}
		return n
	}
	clients := func() []string {
		t.Helper()
		cl, err := obs.ListClient(ctx, "ups")
		if err != nil {
			t.Fatalf("LIST CLIENT: %v", err)
		}
		return cl
	}
	if n, cl := numLogins(), clients(); n != 0 || len(cl) != 0 {
		t.Fatalf("before LOGIN: NUMLOGINS %d, LIST CLIENT %v; want 0 and none", n, cl)
	}

	mon := dial(t, s.Addr(), nut.Options{})
	auth(t, mon, realMon, realMonPass)
	if err := mon.Login(ctx, "ups"); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	if n, cl := numLogins(), clients(); n != 1 || !cmp.Equal(cl, []string{"127.0.0.1"}) {
		t.Errorf("after LOGIN, seen by another connection: NUMLOGINS %d, LIST CLIENT %v; want 1 and [127.0.0.1]", n, cl)
	}
	if err := mon.Login(ctx, "ups"); !errors.Is(err, nut.ErrAlreadyLoggedIn) {
		t.Errorf("second LOGIN: %v, want ErrAlreadyLoggedIn", err)
	}
	if v, err := mon.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" || mon.Closed() {
		t.Errorf("after an ERR the connection must stay usable: %q, %v, closed=%v", v, err, mon.Closed())
	}

	// A second login (the secondary) counts too, and dropping the
	// connection without LOGOUT ends it.
	sec := dial(t, s.Addr(), nut.Options{})
	auth(t, sec, realSec, realSecPass)
	if err := sec.Login(ctx, "ups"); err != nil {
		t.Fatalf("LOGIN as secondary: %v", err)
	}
	if n, cl := numLogins(), clients(); n != 2 || len(cl) != 2 {
		t.Errorf("two logins: NUMLOGINS %d, LIST CLIENT %v", n, cl)
	}
	_ = sec.Close()
	took := pollUntil(t, "NUMLOGINS back to 1 after the secondary closed its connection", 3*time.Second, 10*time.Millisecond,
		func() bool { return numLogins() == 1 })
	t.Logf("NUMLOGINS dropped %s after a close without LOGOUT", took.Round(time.Millisecond))

	if err := mon.Primary(ctx, "ups"); err != nil {
		t.Errorf("PRIMARY: %v", err)
	}
	if err := mon.FSD(ctx, "ups"); err != nil {
		t.Fatalf("FSD: %v", err)
	}
	if v, err := obs.Get(ctx, "ups", "ups.status"); err != nil || v != "FSD OL" {
		t.Errorf("ups.status after FSD, read by another connection: %q, %v; want \"FSD OL\"", v, err)
	}

	if err := mon.Logout(ctx); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
	if !mon.Closed() {
		t.Errorf("the client is still open after LOGOUT")
	}
	if _, err := mon.Get(ctx, "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
		t.Errorf("call after LOGOUT: %v, want ErrClosed", err)
	}
	took = pollUntil(t, "NUMLOGINS back to 0 after LOGOUT", 3*time.Second, 10*time.Millisecond,
		func() bool { return numLogins() == 0 })
	t.Logf("NUMLOGINS dropped %s after LOGOUT", took.Round(time.Millisecond))
}

func testRealStatusSequence(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	names := []string{"ups.status", "battery.charge", "battery.runtime"}
	prev := map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800"}
	if got, err := c.GetVars(ctx, "seq", names...); err != nil || !cmp.Equal(got, prev) {
		t.Fatalf("initial state: %v, %v; want %v", got, err, prev)
	}
	steps := []map[string]string{
		{"ups.status": "OB", "battery.charge": "80", "battery.runtime": "900"},
		{"ups.status": "OB LB", "battery.charge": "15", "battery.runtime": "120"},
	}
	for _, want := range steps {
		s.Set(t, "seq", want)
		var last map[string]string
		took := pollUntil(t, "status "+want["ups.status"], 5*time.Second, 50*time.Millisecond, func() bool {
			got, err := c.GetVars(ctx, "seq", names...)
			if err != nil {
				t.Fatalf("GetVars while waiting for %s: %v", want["ups.status"], err)
			}
			if st := got["ups.status"]; st != prev["ups.status"] && st != want["ups.status"] {
				t.Fatalf("ups.status %q on the way from %q to %q", st, prev["ups.status"], want["ups.status"])
			}
			last = got
			return cmp.Equal(got, want)
		})
		t.Logf("%-5s seen %s after Set (%v)", want["ups.status"], took.Round(time.Millisecond), last)
		prev = want
	}
}

func testRealAuth(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)

	t.Run("wrong-password", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		if err := c.Username(ctx, realMon); err != nil {
			t.Fatal(err)
		}
		// upsd 2.8.0 answers OK to any PASSWORD and refuses only at LOGIN.
		if err := c.Password(ctx, "wrong"); err != nil {
			t.Fatalf("PASSWORD wrong: %v, want OK", err)
		}
		err := c.Login(ctx, "ups")
		if !errors.Is(err, nut.ErrAccessDenied) {
			t.Fatalf("LOGIN with a wrong password: %v, want ErrAccessDenied", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("the error shows the password: %v", err)
		}
		if v, err := c.Get(ctx, "ups", "battery.charge"); err != nil || v != "100" {
			t.Errorf("connection unusable after ACCESS-DENIED: %q, %v", v, err)
		}
	})
	t.Run("unknown-user", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, "ghost", "boo")
		if err := c.Login(ctx, "ups"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("LOGIN as an unknown user: %v, want ErrAccessDenied", err)
		}
	})
	t.Run("no-username", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		if err := c.Login(ctx, "ups"); !errors.Is(err, nut.ErrUsernameRequired) {
			t.Errorf("LOGIN without USERNAME: %v, want ErrUsernameRequired", err)
		}
	})
	t.Run("username-twice", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, realMon, realMonPass)
		if err := c.Username(ctx, realSec); !errors.Is(err, nut.ErrAlreadySetUsername) {
			t.Errorf("second USERNAME: %v, want ErrAlreadySetUsername", err)
		}
	})
	t.Run("unknown-ups", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		if _, err := c.Get(ctx, "nope", "ups.status"); !errors.Is(err, nut.ErrUnknownUPS) {
			t.Errorf("GET VAR nope: %v, want ErrUnknownUPS", err)
		}
		if _, err := c.GetVars(ctx, "nope", "ups.status", "battery.charge"); !errors.Is(err, nut.ErrUnknownUPS) {
			t.Errorf("GetVars nope: %v, want ErrUnknownUPS", err)
		}
		if _, err := c.NumLogins(ctx, "nope"); !errors.Is(err, nut.ErrUnknownUPS) {
			t.Errorf("GET NUMLOGINS nope: %v, want ErrUnknownUPS", err)
		}
		auth(t, c, realMon, realMonPass)
		if err := c.Login(ctx, "nope"); !errors.Is(err, nut.ErrUnknownUPS) {
			t.Errorf("LOGIN nope: %v, want ErrUnknownUPS", err)
		}
		// The refused LOGIN left no login behind.
		if err := c.Login(ctx, "bare"); err != nil {
			t.Errorf("LOGIN bare after a refused LOGIN: %v", err)
		}
		if err := c.Primary(ctx, "nope"); !errors.Is(err, nut.ErrUnknownUPS) {
			t.Errorf("PRIMARY nope: %v, want ErrUnknownUPS", err)
		}
	})
	t.Run("no-upsmon-rights", func(t *testing.T) {
		// upsd 2.8.0 grants LOGIN only with an upsmon line in upsd.users;
		// FSD/SET/INSTCMD rights do not imply it. It answers ACCESS-DENIED
		// (not USERNAME-REQUIRED or the like).
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, realAdmin, realAdminPass)
		if err := c.Login(ctx, "ups"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("LOGIN without upsmon rights: %v, want ErrAccessDenied", err)
		}
		if err := c.Primary(ctx, "ups"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("PRIMARY without upsmon rights: %v, want ErrAccessDenied", err)
		}
	})
	t.Run("secondary", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, realSec, realSecPass)
		if err := c.Login(ctx, "bare"); err != nil {
			t.Fatalf("LOGIN as secondary: %v", err)
		}
		if err := c.Primary(ctx, "bare"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("PRIMARY as secondary: %v, want ErrAccessDenied", err)
		}
		if err := c.FSD(ctx, "bare"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("FSD as secondary: %v, want ErrAccessDenied", err)
		}
	})
}

func testRealInstCmd(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	auth(t, c, realAdmin, realAdminPass)

	// dummy-ups 2.8.0 lists load.off, and upsd accepts the command with
	// "OK TRACKING <id>" and passes it on; but the driver's instcmd handler
	// answers STAT_INSTCMD_UNKNOWN for everything (its log says
	// "instcmd: unknown command [load.off]"), which upsd reports as
	// "ERR UNKNOWN" on GET TRACKING after one or more PENDING. The client
	// returns that as ErrTrackingUnknown. A real driver would answer
	// SUCCESS or FAILED here.
	start := time.Now()
	err := c.InstCmd(ctx, "cmd", "load.off", "")
	took := time.Since(start)
	if !errors.Is(err, nut.ErrTrackingUnknown) {
		t.Errorf("INSTCMD cmd load.off on dummy-ups: %v, want ErrTrackingUnknown", err)
	}
	t.Logf("INSTCMD load.off with tracking: %v after %s", err, took.Round(time.Millisecond))
	logFile := filepath.Join(s.Dir(), "logs", "dummy-ups-cmd.log")
	pollUntil(t, "the driver logging the command", 3*time.Second, 20*time.Millisecond, func() bool {
		b, err := os.ReadFile(logFile)
		return err == nil && strings.Contains(string(b), "instcmd: unknown command [load.off]")
	})

	if err := c.InstCmd(ctx, "cmd", "shutdown.return", ""); !errors.Is(err, nut.ErrCmdNotSupported) {
		t.Errorf("INSTCMD of a command the driver lacks: %v, want ErrCmdNotSupported", err)
	}
	if err := c.InstCmd(ctx, "nope", "load.off", ""); !errors.Is(err, nut.ErrUnknownUPS) {
		t.Errorf("INSTCMD on an unknown UPS: %v, want ErrUnknownUPS", err)
	}
	// With tracking on (turned on by InstCmd), SET VAR is tracked too and
	// dummy-ups reports SUCCESS.
	if err := c.SetVar(ctx, "cmd", "battery.charge", "42"); err != nil {
		t.Errorf("SET VAR battery.charge 42 with tracking: %v", err)
	} else if v, err := c.Get(ctx, "cmd", "battery.charge"); err != nil || v != "42" {
		t.Errorf("battery.charge after SET VAR: %q, %v", v, err)
	}

	mon := dial(t, s.Addr(), nut.Options{})
	auth(t, mon, realMon, realMonPass)
	if err := mon.InstCmd(ctx, "cmd", "load.off", ""); !errors.Is(err, nut.ErrAccessDenied) {
		t.Errorf("INSTCMD by a user without instcmds: %v, want ErrAccessDenied", err)
	}
}

// recorder is a loopback TCP proxy for one connection that records every
// byte the client sends, to check what went out in clear text.
type recorder struct {
	ln   net.Listener
	wg   sync.WaitGroup
	done chan struct{} // closed when the client connection has ended

	mu   sync.Mutex
	sent []byte
}

func startRecorder(t *testing.T, upstream string) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.done)
		cc, err := ln.Accept()
		if err != nil {
			return
		}
		defer cc.Close()
		uc, err := net.DialTimeout("tcp", upstream, 2*time.Second)
		if err != nil {
			return
		}
		defer uc.Close()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			_, _ = io.Copy(cc, uc)
		}()
		buf := make([]byte, 4096)
		for {
			n, err := cc.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.sent = append(r.sent, buf[:n]...)
				r.mu.Unlock()
				if _, werr := uc.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) Addr() string { return r.ln.Addr().String() }

func (r *recorder) Sent() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.sent)
}

func testRealSTARTTLSRefused(t *testing.T, s *nutd.Server) {
	// This upsd has no CERTPATH: it answers ERR FEATURE-NOT-CONFIGURED.
	proxy := startRecorder(t, s.Addr())
	ca := newPKI(t, "unused-ca")
	c, err := nut.Dial(ctxT(t), proxy.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: ca.caFile}})
	if c != nil {
		_ = c.Close()
		t.Fatalf("Dial with TLS required to a server without TLS returned a client")
	}
	if !errors.Is(err, nut.ErrTLS) || !errors.Is(err, nut.ErrFeatureNotConfigured) {
		t.Errorf("Dial: %v, want ErrTLS and ErrFeatureNotConfigured", err)
	}
	if nut.IsSilence(err) {
		t.Errorf("IsSilence(%v) = true; a TLS refusal is a configuration problem", err)
	}
	select {
	case <-proxy.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the client did not close its connection after the refusal")
	}
	if got := proxy.Sent(); got != "STARTTLS\n" {
		t.Errorf("the client sent %q; want only \"STARTTLS\\n\" (nothing in clear text after the refusal)", got)
	}
}

func testRealDriverStale(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	if v, err := c.Get(ctx, "fault", "ups.status"); err != nil || v != "OL" {
		t.Fatalf("before: %q, %v", v, err)
	}
	s.StopDriver(t, "fault")
	stopped := true
	t.Cleanup(func() {
		if stopped {
			s.ContDriver(t, "fault")
		}
	})
	var staleErr error
	took := pollUntil(t, "ERR DATA-STALE from a frozen driver", realMaxAge*time.Second+5*time.Second, 100*time.Millisecond, func() bool {
		v, err := c.Get(ctx, "fault", "ups.status")
		switch {
		case err == nil && v == "OL":
			return false
		case errors.Is(err, nut.ErrDataStale):
			staleErr = err
			return true
		}
		t.Fatalf("while the driver is frozen: %q, %v; want OL, then ErrDataStale", v, err)
		return false
	})
	t.Logf("DATA-STALE %s after SIGSTOP (MAXAGE %d s)", took.Round(time.Millisecond), realMaxAge)
	if !nut.IsSilence(staleErr) {
		t.Errorf("IsSilence(%v) = false", staleErr)
	}
	if _, err := c.GetVars(ctx, "fault", "ups.status", "battery.charge"); !errors.Is(err, nut.ErrDataStale) {
		t.Errorf("GetVars on stale data: %v, want ErrDataStale", err)
	}
	if v, err := c.Get(ctx, "bare", "ups.status"); err != nil || v != "OL" || c.Closed() {
		t.Errorf("the connection must stay usable after ERR DATA-STALE: %q, %v", v, err)
	}

	s.ContDriver(t, "fault")
	stopped = false
	took = pollUntil(t, "data again after SIGCONT", 5*time.Second, 50*time.Millisecond, func() bool {
		v, err := c.Get(ctx, "fault", "ups.status")
		if err != nil && !errors.Is(err, nut.ErrDataStale) {
			t.Fatalf("after SIGCONT: %v", err)
		}
		return err == nil && v == "OL"
	})
	t.Logf("data again %s after SIGCONT", took.Round(time.Millisecond))
}

func testRealDriverKilled(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	if v, err := c.Get(ctx, "fault", "ups.status"); err != nil || v != "OL" {
		t.Fatalf("before: %q, %v", v, err)
	}
	s.KillDriver(t, "fault") // returns once the driver has exited
	// upsd 2.8.0 usually reconnects to the dying driver (its socket still
	// accepts while it shuts down: "Connected to UPS [fault]" a second time
	// in upsd's log) and serves ups.status "WAIT" for about 10 ms before
	// it notices the driver is gone; sometimes the first GET already gets
	// the error. Anything but OL or WAIT, then
	// ERR DRIVER-NOT-CONNECTED within a second fails.
	var err error
	var seen []string
	took := pollUntil(t, "ERR DRIVER-NOT-CONNECTED after the driver died", time.Second, 5*time.Millisecond, func() bool {
		var v string
		v, err = c.Get(ctx, "fault", "ups.status")
		switch {
		case errors.Is(err, nut.ErrDriverNotConnected):
			return true
		case err == nil && (v == "OL" || v == "WAIT"):
			if len(seen) == 0 || seen[len(seen)-1] != v {
				seen = append(seen, v)
			}
			return false
		}
		t.Fatalf("after the driver died: %q, %v; want OL or WAIT, then ErrDriverNotConnected", v, err)
		return false
	})
	t.Logf("DRIVER-NOT-CONNECTED %s after the driver exited (served before: %v)", took.Round(time.Millisecond), seen)
	if !nut.IsSilence(err) {
		t.Errorf("IsSilence(%v) = false", err)
	}
	if _, err := c.GetVars(ctx, "fault", "ups.status", "battery.charge"); !errors.Is(err, nut.ErrDriverNotConnected) {
		t.Errorf("GetVars with the driver gone: %v, want ErrDriverNotConnected", err)
	}
	if v, err := c.Get(ctx, "bare", "ups.status"); err != nil || v != "OL" || c.Closed() {
		t.Errorf("the connection must stay usable after ERR DRIVER-NOT-CONNECTED: %q, %v", v, err)
	}

	start := time.Now()
	s.StartDriver(t, "fault")
	pollUntil(t, "data again after the driver restarted", 10*time.Second, 50*time.Millisecond, func() bool {
		v, err := c.Get(ctx, "fault", "ups.status")
		if err != nil && !errors.Is(err, nut.ErrDriverNotConnected) && !errors.Is(err, nut.ErrDataStale) {
			t.Fatalf("after the driver restarted: %v", err)
		}
		return err == nil && v == "OL"
	})
	t.Logf("data again %s after restarting the driver", time.Since(start).Round(time.Millisecond))
}

func testRealUPSDKilled(t *testing.T, s *nutd.Server) {
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	if v, err := c.Get(ctx, "bare", "ups.status"); err != nil || v != "OL" {
		t.Fatalf("before: %q, %v", v, err)
	}
	s.KillUPSD(t)

	_, err := c.Get(ctx, "bare", "ups.status")
	t.Logf("first GET after upsd was killed: %v", err)
	if !errors.Is(err, nut.ErrTransport) && !errors.Is(err, nut.ErrClosed) {
		t.Errorf("GET after upsd died: %v, want ErrTransport or ErrClosed", err)
	}
	if !nut.IsSilence(err) {
		t.Errorf("IsSilence(%v) = false", err)
	}
	if _, err := c.Get(ctx, "bare", "ups.status"); !errors.Is(err, nut.ErrClosed) || !c.Closed() {
		t.Errorf("second GET after upsd died: %v (closed=%v), want ErrClosed", err, c.Closed())
	}

	start := time.Now()
	c2, err := nut.Dial(ctx, s.Addr(), nut.Options{DialTimeout: 3 * time.Second})
	took := time.Since(start)
	if c2 != nil {
		_ = c2.Close()
		t.Fatalf("Dial with upsd down returned a client")
	}
	if !errors.Is(err, nut.ErrTransport) || !errors.Is(err, syscall.ECONNREFUSED) || !nut.IsSilence(err) {
		t.Errorf("Dial with upsd down: %v, want ErrTransport, ECONNREFUSED", err)
	}
	t.Logf("Dial with upsd down: %v after %s", err, took.Round(time.Microsecond))
	if took > time.Second {
		t.Errorf("Dial with upsd down took %s; a refusal must be quick", took)
	}

	start = time.Now()
	s.StartUPSD(t)
	s.WaitReady(t, 10*time.Second)
	t.Logf("upsd serving again %s after restart", time.Since(start).Round(time.Millisecond))
	c3 := dial(t, s.Addr(), nut.Options{})
	if v, err := c3.Get(ctx, "bare", "ups.status"); err != nil || v != "OL" {
		t.Errorf("after restarting upsd: %q, %v", v, err)
	}
	// The FSD set in the session subtest was a latch in upsd; the restart
	// cleared it.
	if v, err := c3.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
		t.Errorf("ups.status after restarting upsd: %q, %v; want OL (FSD cleared)", v, err)
	}
}

// TestRealUPSDTLS runs STARTTLS against upsd with a certificate for
// 127.0.0.1 and localhost signed by a CA made for the test.
func TestRealUPSDTLS(t *testing.T) {
	start := time.Now()
	s := nutd.Start(t, nutd.Config{UPS: []nutd.UPS{fullUPS("ups", "")}, Users: realUsers, TLS: true})
	t.Logf("nutd.Start with TLS: %s", time.Since(start).Round(time.Millisecond))
	ctx := ctxT(t)

	c := dial(t, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: s.CAFile()}})
	st, ok := c.TLSConnectionState()
	if !ok || !st.HandshakeComplete || st.Version < tls.VersionTLS12 || len(st.PeerCertificates) == 0 {
		t.Fatalf("TLS state: ok=%v complete=%v version=%x certs=%d", ok, st.HandshakeComplete, st.Version, len(st.PeerCertificates))
	}
	t.Logf("STARTTLS: %s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	leaf := st.PeerCertificates[0]
	sum := sha256.Sum256(leaf.Raw)
	pin := "sha256:" + hex.EncodeToString(sum[:])

	t.Run("session-over-tls", func(t *testing.T) {
		auth(t, c, realMon, realMonPass)
		if err := c.Login(ctx, "ups"); err != nil {
			t.Fatalf("LOGIN over TLS: %v", err)
		}
		if n, err := c.NumLogins(ctx, "ups"); err != nil || n != 1 {
			t.Errorf("NUMLOGINS over TLS: %d, %v", n, err)
		}
		if err := c.Primary(ctx, "ups"); err != nil {
			t.Errorf("PRIMARY over TLS: %v", err)
		}
		got, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "no.such.var")
		if d := cmp.Diff(map[string]string{"ups.status": "OL", "battery.charge": "100"}, got); err != nil || d != "" {
			t.Errorf("GetVars over TLS: %v (-want +got):\n%s", err, d)
		}
	})
	t.Run("pin-only", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{TLS: &nut.TLSOptions{Fingerprint: strings.ToUpper(pin)}})
		st, ok := c.TLSConnectionState()
		if !ok || len(st.PeerCertificates) == 0 || !st.PeerCertificates[0].Equal(leaf) {
			t.Fatalf("pinned connection: not the same server certificate")
		}
		if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
			t.Errorf("GET over a pinned connection: %q, %v", v, err)
		}
	})
	t.Run("pin-and-ca", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: s.CAFile(), Fingerprint: pin}})
		if _, ok := c.TLSConnectionState(); !ok {
			t.Fatalf("no TLS")
		}
	})
	t.Run("wrong-pin", func(t *testing.T) {
		wrong := sum
		wrong[31] ^= 1
		c, err := nut.Dial(ctx, s.Addr(), nut.Options{TLS: &nut.TLSOptions{Fingerprint: "sha256:" + hex.EncodeToString(wrong[:])}})
		if c != nil {
			_ = c.Close()
			t.Fatalf("Dial with a wrong pin returned a client")
		}
		if !errors.Is(err, nut.ErrFingerprintMismatch) || !errors.Is(err, nut.ErrTLS) || nut.IsSilence(err) {
			t.Errorf("Dial with a wrong pin: %v, want ErrFingerprintMismatch", err)
		}
	})
	t.Run("wrong-ca", func(t *testing.T) {
		other := newPKI(t, "not-upsd-ca")
		c, err := nut.Dial(ctx, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: other.caFile}})
		if c != nil {
			_ = c.Close()
			t.Fatalf("Dial with the wrong CA returned a client")
		}
		var ua x509.UnknownAuthorityError
		if !errors.Is(err, nut.ErrTLS) || !errors.As(err, &ua) {
			t.Errorf("Dial with the wrong CA: %v, want ErrTLS with x509.UnknownAuthorityError", err)
		}
	})
	t.Run("dns-name", func(t *testing.T) {
		c := dial(t, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: s.CAFile(), ServerName: "localhost"}})
		if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
			t.Errorf("GET with ServerName localhost: %q, %v", v, err)
		}
	})
}

// TestRealUPSDTLSOtherHost runs STARTTLS against upsd whose certificate
// is valid only for other.example.
func TestRealUPSDTLSOtherHost(t *testing.T) {
	start := time.Now()
	s := nutd.Start(t, nutd.Config{UPS: []nutd.UPS{fullUPS("ups", "")}, Users: realUsers, TLS: true, CertHost: "other.example"})
	t.Logf("nutd.Start with TLS: %s", time.Since(start).Round(time.Millisecond))
	ctx := ctxT(t)

	c, err := nut.Dial(ctx, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: s.CAFile()}})
	if c != nil {
		_ = c.Close()
		t.Fatalf("Dial 127.0.0.1 to a server with a certificate for other.example returned a client")
	}
	var he x509.HostnameError
	if !errors.Is(err, nut.ErrTLS) || !errors.As(err, &he) {
		t.Errorf("Dial 127.0.0.1: %v, want ErrTLS with x509.HostnameError", err)
	}

	c = dial(t, s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: s.CAFile(), ServerName: "other.example"}})
	auth(t, c, realMon, realMonPass)
	if err := c.Login(ctx, "ups"); err != nil {
		t.Errorf("LOGIN with ServerName other.example: %v", err)
	}
}
