package nut_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
)

func TestReadCommands(t *testing.T) {
	s := newServer(t)
	s.AddUPS("ups2", "", map[string]string{"ups.status": "OB LB"})
	s.SetRW("ups", "ups.id", 32)
	s.SetRW("ups", "input.transfer.low", 0)
	s.SetVar("ups", "input.transfer.low", "100")
	s.SetEnum("ups", "input.transfer.low", "100", "103")
	s.AddRange("ups", "input.transfer.low", 90, 100)
	s.AddRange("ups", "input.transfer.low", 102, 105)
	s.SetCmds("ups", "test.battery.start", "load.off")
	c := dial(t, s.Addr(), nut.Options{})
	ctx := ctxT(t)

	if v, err := c.Version(ctx); err != nil || v != nuttest.Version {
		t.Errorf("Version = %q, %v", v, err)
	}
	if v, err := c.NetVersion(ctx); err != nil || v != "1.3" {
		t.Errorf("NetVersion = %q, %v", v, err)
	}
	if v, err := c.Help(ctx); err != nil || !strings.HasPrefix(v, "Commands: HELP VER GET LIST") {
		t.Errorf("Help = %q, %v", v, err)
	}
	ups, err := c.ListUPS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]nut.UPS{{"ups", `Rack "A" \ main`}, {"ups2", "Description unavailable"}}, ups); diff != "" {
		t.Errorf("ListUPS (-want +got):\n%s", diff)
	}
	if d, err := c.UPSDesc(ctx, "ups"); err != nil || d != `Rack "A" \ main` {
		t.Errorf("UPSDesc = %q, %v", d, err)
	}
	if d, err := c.UPSDesc(ctx, "ups2"); err != nil || d != "Unavailable" {
		t.Errorf("UPSDesc ups2 = %q, %v", d, err)
	}
	if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
		t.Errorf("Get = %q, %v", v, err)
	}
	if v, err := c.Get(ctx, "UPS2", "UPS.STATUS"); err != nil || v != "OB LB" {
		t.Errorf("Get with other case = %q, %v", v, err)
	}
	if v, err := c.Get(ctx, "ups", "server.version"); err != nil || v != "2.8.0" {
		t.Errorf("Get server.version = %q, %v", v, err)
	}
	vars, err := c.ListVar(ctx, "ups")
	if err != nil {
		t.Fatal(err)
	}
	wantVars := []nut.Var{
		{"battery.charge", "100"}, {"battery.runtime", "1800"}, {"input.transfer.low", "100"},
		{"input.voltage", "230.0"}, {"ups.id", "rack-a"}, {"ups.mfr", "Dummy Power"}, {"ups.status", "OL"},
	}
	if diff := cmp.Diff(wantVars, vars); diff != "" {
		t.Errorf("ListVar (-want +got):\n%s", diff)
	}
	rw, err := c.ListRW(ctx, "ups")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]nut.Var{{"input.transfer.low", "100"}, {"ups.id", "rack-a"}}, rw); diff != "" {
		t.Errorf("ListRW (-want +got):\n%s", diff)
	}
	cmds, err := c.ListCmd(ctx, "ups")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]nut.Cmd{{"load.off"}, {"test.battery.start"}}, cmds); diff != "" {
		t.Errorf("ListCmd (-want +got):\n%s", diff)
	}
	enum, err := c.ListEnum(ctx, "ups", "input.transfer.low")
	if err != nil || !cmp.Equal(enum, []string{"100", "103"}) {
		t.Errorf("ListEnum = %q, %v", enum, err)
	}
	ranges, err := c.ListRange(ctx, "ups", "input.transfer.low")
	if err != nil || !cmp.Equal(ranges, []nut.Range{{"90", "100"}, {"102", "105"}}) {
		t.Errorf("ListRange = %v, %v", ranges, err)
	}
	typ, err := c.VarType(ctx, "ups", "ups.id")
	if err != nil || !typ.RW || typ.StringMax != 32 || typ.Number || !cmp.Equal(typ.Words, []string{"RW", "STRING:32"}) {
		t.Errorf("VarType ups.id = %+v, %v", typ, err)
	}
	typ, err = c.VarType(ctx, "ups", "input.transfer.low")
	if err != nil || !typ.RW || !typ.Enum || !typ.Range || !typ.Number || typ.StringMax != 0 {
		t.Errorf("VarType input.transfer.low = %+v, %v", typ, err)
	}
	if d, err := c.VarDesc(ctx, "ups", "ups.status"); err != nil || d != "UPS status" {
		t.Errorf("VarDesc = %q, %v", d, err)
	}
	if d, err := c.CmdDesc(ctx, "ups", "load.off"); err != nil || d != "Turn off the load immediately" {
		t.Errorf("CmdDesc = %q, %v", d, err)
	}
	if n, err := c.NumLogins(ctx, "ups"); err != nil || n != 0 {
		t.Errorf("NumLogins = %d, %v", n, err)
	}
	if cl, err := c.ListClient(ctx, "ups"); err != nil || len(cl) != 0 || cl == nil {
		t.Errorf("ListClient = %#v, %v (want an empty, non-nil list)", cl, err)
	}
}

func TestLoginPrimaryFSDLogout(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	prim := dial(t, s.Addr(), nut.Options{})
	auth(t, prim, monUser, monPass)
	if err := prim.Login(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	if err := prim.Primary(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	sec := dial(t, s.Addr(), nut.Options{})
	auth(t, sec, secUser, secPass)
	if err := sec.Login(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	if err := sec.Primary(ctx, "ups"); !errors.Is(err, nut.ErrAccessDenied) {
		t.Errorf("Primary as secondary: %v, want ErrAccessDenied", err)
	}
	if err := sec.FSD(ctx, "ups"); !errors.Is(err, nut.ErrAccessDenied) {
		t.Errorf("FSD as secondary: %v, want ErrAccessDenied", err)
	}
	if n, err := prim.NumLogins(ctx, "ups"); err != nil || n != 2 {
		t.Errorf("NumLogins = %d, %v; want 2", n, err)
	}
	if cl, err := prim.ListClient(ctx, "ups"); err != nil || !cmp.Equal(cl, []string{"127.0.0.1", "127.0.0.1"}) {
		t.Errorf("ListClient = %q, %v", cl, err)
	}
	if got := s.Logins("ups"); !cmp.Equal(got, []string{monUser, secUser}) {
		t.Errorf("server Logins = %q", got)
	}

	if err := prim.FSD(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	if !s.FSDSet("ups") {
		t.Error("FSD flag not set on the server")
	}
	if v, err := sec.Get(ctx, "ups", "ups.status"); err != nil || v != "FSD OL" {
		t.Errorf("status after FSD = %q, %v", v, err)
	}
	s.SetStatus("ups", "OB")
	if v, err := sec.Get(ctx, "ups", "ups.status"); err != nil || v != "FSD OB" {
		t.Errorf("FSD is a latch: status = %q, %v", v, err)
	}

	if err := sec.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if !sec.Closed() {
		t.Error("not closed after Logout")
	}
	if _, err := sec.Get(ctx, "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
		t.Errorf("Get after Logout: %v, want ErrClosed", err)
	}
	if n, err := prim.NumLogins(ctx, "ups"); err != nil || n != 1 {
		t.Errorf("NumLogins after Logout = %d, %v; want 1", n, err)
	}
	// A connection that just closes also ends its login.
	_ = prim.Close()
	waitFor(t, "the login of the closed connection to end", func() bool { return len(s.Logins("ups")) == 0 })
}

func TestAuthErrors(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)

	c := dial(t, s.Addr(), nut.Options{})
	if err := c.Login(ctx, "ups"); !errors.Is(err, nut.ErrUsernameRequired) {
		t.Errorf("LOGIN before USERNAME: %v", err)
	}
	if err := c.Username(ctx, monUser); err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, "ups"); !errors.Is(err, nut.ErrPasswordRequired) {
		t.Errorf("LOGIN before PASSWORD: %v", err)
	}
	if err := c.Username(ctx, monUser); !errors.Is(err, nut.ErrAlreadySetUsername) {
		t.Errorf("second USERNAME: %v", err)
	}
	const wrong = "not-the-password"
	if err := c.Password(ctx, wrong); err != nil {
		t.Fatalf("a wrong PASSWORD is accepted by upsd: %v", err)
	}
	if err := c.Password(ctx, wrong); !errors.Is(err, nut.ErrAlreadySetPassword) {
		t.Errorf("second PASSWORD: %v", err)
	} else if strings.Contains(err.Error(), wrong) {
		t.Errorf("password in error %q", err)
	}
	err := c.Login(ctx, "ups")
	if !errors.Is(err, nut.ErrAccessDenied) {
		t.Errorf("LOGIN with a wrong password: %v, want ErrAccessDenied", err)
	}
	if err != nil && strings.Contains(err.Error(), wrong) {
		t.Errorf("password in error %q", err)
	}
	if err := c.Login(ctx, "nosuch"); !errors.Is(err, nut.ErrUnknownUPS) {
		t.Errorf("LOGIN unknown UPS: %v", err)
	}
	// ERR replies leave the connection usable.
	if c.Closed() {
		t.Fatal("an ERR reply closed the connection")
	}
	if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
		t.Errorf("Get after ERRs = %q, %v", v, err)
	}

	good := dial(t, s.Addr(), nut.Options{})
	auth(t, good, monUser, monPass)
	if err := good.Login(ctx, "ups"); err != nil {
		t.Fatal(err)
	}
	if err := good.Login(ctx, "ups"); !errors.Is(err, nut.ErrAlreadyLoggedIn) {
		t.Errorf("second LOGIN: %v", err)
	}
}

func TestPasswordNeverInErrors(t *testing.T) {
	s := newServer(t)
	s.SetHook(func(_ int, line string) (string, bool) {
		if strings.HasPrefix(line, "PASSWORD ") {
			return "ERR INVALID-PASSWORD\n", true
		}
		return "", false
	})
	c := dial(t, s.Addr(), nut.Options{})
	ctx := ctxT(t)
	const pass = "hunter2 hunter2"
	err := c.Password(ctx, pass)
	if !errors.Is(err, nut.ErrInvalidPassword) {
		t.Fatalf("Password: %v", err)
	}
	if got, want := err.Error(), "nut: PASSWORD: ERR INVALID-PASSWORD"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	err = c.Password(ctx, "line\nbreak-secret")
	if !errors.Is(err, nut.ErrBadArgument) || strings.Contains(err.Error(), "secret") {
		t.Errorf("Password with a newline: %v", err)
	}
	if c.Closed() {
		t.Error("a refused argument closed the connection")
	}
}

func TestErrMapping(t *testing.T) {
	sentinels := map[string]error{
		"ACCESS-DENIED":          nut.ErrAccessDenied,
		"UNKNOWN-UPS":            nut.ErrUnknownUPS,
		"VAR-NOT-SUPPORTED":      nut.ErrVarNotSupported,
		"CMD-NOT-SUPPORTED":      nut.ErrCmdNotSupported,
		"INVALID-ARGUMENT":       nut.ErrInvalidArgument,
		"INSTCMD-FAILED":         nut.ErrInstCmdFailed,
		"SET-FAILED":             nut.ErrSetFailed,
		"READONLY":               nut.ErrReadOnly,
		"TOO-LONG":               nut.ErrTooLong,
		"FEATURE-NOT-SUPPORTED":  nut.ErrFeatureNotSupported,
		"FEATURE-NOT-CONFIGURED": nut.ErrFeatureNotConfigured,
		"ALREADY-SSL-MODE":       nut.ErrAlreadySSLMode,
		"DRIVER-NOT-CONNECTED":   nut.ErrDriverNotConnected,
		"DATA-STALE":             nut.ErrDataStale,
		"ALREADY-LOGGED-IN":      nut.ErrAlreadyLoggedIn,
		"INVALID-PASSWORD":       nut.ErrInvalidPassword,
		"ALREADY-SET-PASSWORD":   nut.ErrAlreadySetPassword,
		"INVALID-USERNAME":       nut.ErrInvalidUsername,
		"ALREADY-SET-USERNAME":   nut.ErrAlreadySetUsername,
		"USERNAME-REQUIRED":      nut.ErrUsernameRequired,
		"PASSWORD-REQUIRED":      nut.ErrPasswordRequired,
		"UNKNOWN-COMMAND":        nut.ErrUnknownCommand,
		"INVALID-VALUE":          nut.ErrInvalidValue,
		"UNKNOWN":                nut.ErrTrackingUnknown,
		"FAILED":                 nut.ErrTrackingFailed,
		"VAR-UNKNOWN":            nut.ErrVarUnknown,
		"UNKNOWN-TYPE":           nut.ErrUnknownType,
		"UNKNOWN-INSTCMD":        nut.ErrUnknownInstCmd,
		"MISSING-ARGUMENT":       nut.ErrMissingArgument,
	}
	if got := len(nut.KnownCodes()); got != len(sentinels) {
		t.Errorf("KnownCodes has %d codes, the test knows %d", got, len(sentinels))
	}
	for _, code := range nut.KnownCodes() {
		if sentinels[code] == nil {
			t.Errorf("no sentinel tested for %s", code)
		}
	}

	s := newServer(t)
	var reply string
	var mu sync.Mutex
	s.SetHook(func(_ int, line string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		return reply, strings.HasPrefix(line, "GET VAR ")
	})
	c := dial(t, s.Addr(), nut.Options{})
	ctx := ctxT(t)
	for code, sentinel := range sentinels {
		mu.Lock()
		reply = "ERR " + code + " some extra\n"
		mu.Unlock()
		_, err := c.Get(ctx, "ups", "ups.status")
		if !errors.Is(err, sentinel) {
			t.Errorf("ERR %s: %v does not match its sentinel", code, err)
		}
		var e *nut.Error
		if !errors.As(err, &e) || e.Code != code || e.Extra != "some extra" {
			t.Errorf("ERR %s: As *Error = %+v", code, e)
		}
		for other, os := range sentinels {
			if other != code && errors.Is(err, os) {
				t.Errorf("ERR %s also matches %s", code, other)
			}
		}
		wantSilence := code == "DATA-STALE" || code == "DRIVER-NOT-CONNECTED"
		if nut.IsSilence(err) != wantSilence {
			t.Errorf("IsSilence(ERR %s) = %v", code, !wantSilence)
		}
	}
	mu.Lock()
	reply = "ERR BRAND-NEW-CODE\n"
	mu.Unlock()
	_, err := c.Get(ctx, "ups", "ups.status")
	var e *nut.Error
	if !errors.As(err, &e) || e.Code != "BRAND-NEW-CODE" || e.Extra != "" {
		t.Errorf("unknown code: %v", err)
	}
	if c.Closed() {
		t.Error("ERR replies closed the connection")
	}
}

func TestErrorsFromServerState(t *testing.T) {
	s := newServer(t)
	s.SetRW("ups", "ups.id", 8)
	s.SetRW("ups", "input.transfer.low", 0)
	s.SetEnum("ups", "input.transfer.low", "100", "103")
	s.SetRW("ups", "ups.delay.shutdown", 0)
	s.AddRange("ups", "ups.delay.shutdown", 0, 600)
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	auth(t, c, adminUser, adminPass)

	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	_, err := c.Get(ctx, "ups", "no.such")
	check("GET unknown var", err, nut.ErrVarNotSupported)
	_, err = c.Get(ctx, "nosuch", "ups.status")
	check("GET unknown UPS", err, nut.ErrUnknownUPS)
	_, err = c.ListVar(ctx, "nosuch")
	check("LIST VAR unknown UPS", err, nut.ErrUnknownUPS)
	check("SET read-only", c.SetVar(ctx, "ups", "ups.mfr", "x"), nut.ErrReadOnly)
	check("SET too long", c.SetVar(ctx, "ups", "ups.id", "123456789"), nut.ErrTooLong)
	check("SET not in enum", c.SetVar(ctx, "ups", "input.transfer.low", "101"), nut.ErrInvalidValue)
	check("SET out of range", c.SetVar(ctx, "ups", "ups.delay.shutdown", "601"), nut.ErrInvalidValue)
	check("SET unknown var", c.SetVar(ctx, "ups", "no.such", "1"), nut.ErrVarNotSupported)
	check("INSTCMD unknown", c.InstCmd(ctx, "ups", "no.such.cmd", ""), nut.ErrCmdNotSupported)
	if err := c.SetVar(ctx, "ups", "ups.delay.shutdown", "600"); err != nil {
		t.Errorf("SET in range: %v", err)
	}
	if err := c.SetVar(ctx, "ups", "input.transfer.low", "103"); err != nil {
		t.Errorf("SET in enum: %v", err)
	}

	mon := dial(t, s.Addr(), nut.Options{})
	auth(t, mon, monUser, monPass)
	check("INSTCMD without the right", mon.InstCmd(ctx, "ups", "load.off", ""), nut.ErrAccessDenied)
	check("SET without the right", mon.SetVar(ctx, "ups", "ups.id", "x"), nut.ErrAccessDenied)

	for _, code := range []string{"DATA-STALE", "DRIVER-NOT-CONNECTED"} {
		s.SetError("ups", code)
		want := &nut.Error{Code: code}
		_, err := c.Get(ctx, "ups", "ups.status")
		check("GET "+code, err, want)
		if !nut.IsSilence(err) {
			t.Errorf("IsSilence(%v) = false", err)
		}
		_, err = c.GetVars(ctx, "ups", "ups.status", "battery.charge")
		check("GetVars "+code, err, want)
		_, err = c.ListVar(ctx, "ups")
		check("LIST VAR "+code, err, want)
		_, err = c.NumLogins(ctx, "ups")
		check("NUMLOGINS "+code, err, want)
		check("INSTCMD "+code, c.InstCmd(ctx, "ups", "load.off", ""), want)
	}
	s.SetError("ups", "")
	if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
		t.Errorf("after clearing the error: %q, %v", v, err)
	}
}

func TestQuotingRoundTrip(t *testing.T) {
	s := newServer(t)
	s.SetRW("ups", "ups.id", 200)
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{})
	auth(t, c, adminUser, adminPass)
	values := []string{
		"plain", "two words", `say "hi"`, `back\slash`, `\`, `"`, `\"`, `""`,
		"hash # not a comment", "#first", "a=b", "=", "", "  lead and trail  ",
		`mix "of" \all\ # = things`, "tab-free 'single' quotes",
	}
	for _, v := range values {
		if err := c.SetVar(ctx, "ups", "ups.id", v); err != nil {
			t.Errorf("SetVar %q: %v", v, err)
			continue
		}
		if got := s.Vars("ups")["ups.id"]; got != v {
			t.Errorf("server stored %q, sent %q", got, v)
		}
		if got, err := c.Get(ctx, "ups", "ups.id"); err != nil || got != v {
			t.Errorf("Get = %q, %v; want %q", got, err, v)
		}
		got, err := c.GetVars(ctx, "ups", "ups.id")
		if err != nil || got["ups.id"] != v {
			t.Errorf("GetVars = %q, %v; want %q", got, err, v)
		}
		rw, err := c.ListRW(ctx, "ups")
		if err != nil || len(rw) != 1 || rw[0].Value != v {
			t.Errorf("ListRW = %q, %v; want %q", rw, err, v)
		}
	}
}

func TestPrimaryFallsBackToMaster(t *testing.T) {
	for _, refusal := range []string{"UNKNOWN-COMMAND", "INVALID-ARGUMENT"} {
		t.Run(refusal, func(t *testing.T) {
			s := newServer(t)
			var mu sync.Mutex
			var seen []string
			s.SetHook(func(_ int, line string) (string, bool) {
				mu.Lock()
				seen = append(seen, line)
				mu.Unlock()
				if strings.HasPrefix(line, "PRIMARY ") {
					return "ERR " + refusal + "\n", true
				}
				return "", false
			})
			c := dial(t, s.Addr(), nut.Options{})
			auth(t, c, monUser, monPass)
			if err := c.Primary(ctxT(t), "ups"); err != nil {
				t.Fatalf("Primary: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []string{"USERNAME " + monUser, "PASSWORD " + nut.Quote(monPass), "PRIMARY ups", "MASTER ups"}
			if diff := cmp.Diff(want, seen); diff != "" {
				t.Errorf("lines sent (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("plain OK and MASTER-GRANTED", func(t *testing.T) {
		s := newServer(t)
		s.SetHook(func(_ int, line string) (string, bool) {
			if strings.HasPrefix(line, "PRIMARY ") {
				return "OK\n", true
			}
			return "", false
		})
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, monUser, monPass)
		if err := c.Primary(ctxT(t), "ups"); err != nil {
			t.Errorf("Primary answered OK: %v", err)
		}
	})
	t.Run("access denied is not a fallback", func(t *testing.T) {
		s := newServer(t)
		c := dial(t, s.Addr(), nut.Options{})
		auth(t, c, secUser, secPass)
		if err := c.Primary(ctxT(t), "ups"); !errors.Is(err, nut.ErrAccessDenied) {
			t.Errorf("Primary as secondary: %v", err)
		}
	})
}

func TestGetVars(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.Addr(), nut.Options{})
	ctx := ctxT(t)
	got, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "no.such.var", "battery.runtime")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetVars (-want +got):\n%s", diff)
	}
	if got, err := c.GetVars(ctx, "ups"); err != nil || len(got) != 0 {
		t.Errorf("GetVars without names = %v, %v", got, err)
	}
	if _, err := c.GetVars(ctx, "nosuch", "ups.status", "battery.charge"); !errors.Is(err, nut.ErrUnknownUPS) {
		t.Errorf("GetVars unknown UPS: %v", err)
	}
	// All replies were consumed: the connection is still in step.
	if v, err := c.Get(ctx, "ups", "battery.charge"); err != nil || v != "100" {
		t.Errorf("Get after a failed GetVars = %q, %v", v, err)
	}
	if _, err := c.GetVars(ctx, "ups", "ups.status", "bad\nname"); !errors.Is(err, nut.ErrBadArgument) {
		t.Errorf("GetVars with a newline in a name: %v", err)
	}
}

func TestInstCmdTracking(t *testing.T) {
	s := newServer(t)
	s.SetTrackingPending(2)
	s.SetInstCmdResult("ups", "shutdown.return", "FAILED")
	s.SetInstCmdResult("ups", "load.on", "INVALID-ARGUMENT")
	var mu sync.Mutex
	trackingOn := 0
	s.SetHook(func(_ int, line string) (string, bool) {
		if line == "SET TRACKING ON" {
			mu.Lock()
			trackingOn++
			mu.Unlock()
		}
		return "", false
	})
	ctx := ctxT(t)
	c := dial(t, s.Addr(), nut.Options{TrackingInterval: 1})
	auth(t, c, adminUser, adminPass)

	if err := c.InstCmd(ctx, "ups", "load.off", ""); err != nil {
		t.Errorf("InstCmd load.off: %v", err)
	}
	if err := c.InstCmd(ctx, "ups", "test.battery.start", "quick test"); err != nil {
		t.Errorf("InstCmd with a value: %v", err)
	}
	err := c.InstCmd(ctx, "ups", "shutdown.return", "")
	if !errors.Is(err, nut.ErrTrackingFailed) {
		t.Errorf("InstCmd that fails: %v, want ErrTrackingFailed", err)
	}
	if err := c.InstCmd(ctx, "ups", "load.on", ""); !errors.Is(err, nut.ErrInvalidArgument) {
		t.Errorf("InstCmd rejected by the driver: %v", err)
	}
	recs := s.InstCmds()
	if len(recs) != 4 {
		t.Fatalf("server saw %d commands: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.TrackingID == "" || r.User != adminUser || r.UPS != "ups" {
			t.Errorf("record %+v", r)
		}
	}
	if r := recs[1]; !r.HasValue || r.Value != "quick test" || recs[0].HasValue {
		t.Errorf("values: %+v / %+v", recs[0], r)
	}
	mu.Lock()
	if trackingOn != 1 {
		t.Errorf("SET TRACKING ON sent %d times, want once per connection", trackingOn)
	}
	mu.Unlock()

	// With tracking on, SET VAR is tracked too.
	s.SetRW("ups", "ups.id", 20)
	if err := c.SetVar(ctx, "ups", "ups.id", "new id"); err != nil {
		t.Errorf("tracked SetVar: %v", err)
	}
	if got := s.Vars("ups")["ups.id"]; got != "new id" {
		t.Errorf("ups.id = %q", got)
	}

	// A result that never comes is bounded by ctx.
	s.SetTrackingPending(1 << 30)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.InstCmd(short, "ups", "load.off", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("pending for ever: %v", err)
	}
}

func TestInstCmdWithoutTracking(t *testing.T) {
	s := newServer(t)
	s.SetInstCmdResult("ups", "load.off", "FAILED") // only visible through tracking
	s.SetHook(func(_ int, line string) (string, bool) {
		if line == "SET TRACKING ON" {
			return "ERR INVALID-ARGUMENT\n", true // an upsd older than 2.8.0
		}
		return "", false
	})
	c := dial(t, s.Addr(), nut.Options{})
	auth(t, c, adminUser, adminPass)
	if err := c.InstCmd(ctxT(t), "ups", "load.off", ""); err != nil {
		t.Fatalf("InstCmd without tracking: %v", err)
	}
	if recs := s.InstCmds(); len(recs) != 1 || recs[0].TrackingID != "" {
		t.Errorf("records %+v", recs)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.Addr(), nut.Options{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				switch (g + i) % 4 {
				case 0:
					v, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime", "input.voltage")
					if err == nil && len(v) != 4 {
						err = fmt.Errorf("GetVars returned %v", v)
					}
					if err != nil {
						errs <- err
						return
					}
				case 1:
					if v, err := c.Get(ctx, "ups", "battery.charge"); err != nil || v != "100" {
						errs <- fmt.Errorf("Get = %q, %v", v, err)
						return
					}
				case 2:
					if _, err := c.ListVar(ctx, "ups"); err != nil {
						errs <- err
						return
					}
				case 3:
					if n, err := c.NumLogins(ctx, "ups"); err != nil || n != 0 {
						errs <- fmt.Errorf("NumLogins = %d, %v", n, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDialErrors(t *testing.T) {
	s := newServer(t)
	addr := s.Addr()
	_ = s.Close()
	_, err := nut.Dial(ctxT(t), addr, nut.Options{})
	if !errors.Is(err, nut.ErrTransport) || !nut.IsSilence(err) {
		t.Errorf("Dial to a closed port: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := nut.Dial(ctx, addr, nut.Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled context: %v", err)
	}
}

func TestServerGoneIsSilence(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.Addr(), nut.Options{})
	if _, err := c.NetVersion(ctxT(t)); err != nil { // the server has the connection now
		t.Fatal(err)
	}
	s.DropConnections()
	_, err := c.Get(ctxT(t), "ups", "ups.status")
	if !errors.Is(err, nut.ErrTransport) || !nut.IsSilence(err) {
		t.Errorf("Get on a dropped connection: %v", err)
	}
	if _, err := c.Get(ctxT(t), "ups", "ups.status"); !errors.Is(err, nut.ErrClosed) {
		t.Errorf("next Get: %v, want ErrClosed", err)
	}
}
