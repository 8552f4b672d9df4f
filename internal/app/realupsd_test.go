package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/apcupsd/nistest"
	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

func realUPSD(t *testing.T, tls bool) *nutd.Server {
	return nutd.Start(t, nutd.Config{
		TLS: tls,
		UPS: []nutd.UPS{{Name: "ups", Desc: "real", Vars: map[string]string{
			"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3000", "ups.load": "25"}}},
		Users: []nutd.User{
			{Name: "mon", Password: "pw", Upsmon: "primary"},
			{Name: "other", Password: "pw2", Upsmon: "secondary"},
		},
	})
}

// numLogins asks upsd, over a separate connection, how many clients hold a
// LOGIN on the UPS.
func numLogins(t *testing.T, addr string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nut.Dial(ctx, addr, nut.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, err := c.NumLogins(ctx, "ups")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Against the real upsd: the LOGIN is held while watching, taken again
// after upsd restarts, released with LOGOUT when sundown stops; as primary
// it sets FSD on OB+LB and the real upsd latches it.
func TestRealUPSDLoginHeldAndFSD(t *testing.T) {
	srv := realUPSD(t, false)
	r := start(t, testConfig(t, `power: {poll_interval: 200ms, deadtime: 5s}
ups:
  - name: rack
    nut: {address: "`+srv.Addr()+`", ups: ups, username: mon, password_env: NUT_PW, mode: primary}
`), true)
	r.waitFor(t, "first reading", 10*time.Second, func(s app.Snapshot) bool { return status(s, 0) == "OL" })
	if n := numLogins(t, srv.Addr()); n != 1 {
		t.Fatalf("NUMLOGINS = %d while sundown watches, want 1", n)
	}

	srv.KillUPSD(t)
	r.waitFor(t, "comm lost", 10*time.Second, func(s app.Snapshot) bool { return s.UPS[0].Comm == power.CommLost })
	if k := r.Snapshot().Decision.Kind; k == policy.Shutdown {
		t.Fatal("comm loss while on line shut the site down")
	}
	srv.StartUPSD(t)
	srv.WaitReady(t, 15*time.Second)
	r.waitFor(t, "reconnected", 15*time.Second, func(s app.Snapshot) bool { return s.UPS[0].Comm == power.CommOK })
	if n := numLogins(t, srv.Addr()); n != 1 {
		t.Fatalf("NUMLOGINS = %d after upsd restart, want the LOGIN taken again", n)
	}

	srv.Set(t, "ups", map[string]string{"ups.status": "OB LB"})
	s := r.waitFor(t, "shutdown", 10*time.Second, func(s app.Snapshot) bool { return s.Decision.Kind == policy.Shutdown })
	t.Logf("decision: %s", s.Decision)
	srv.WaitServed(t, "ups", "ups.status", "FSD OB LB", 10*time.Second)

	r.stop()
	if n := numLogins(t, srv.Addr()); n != 0 {
		t.Errorf("NUMLOGINS = %d after sundown stopped, want 0 (LOGOUT)", n)
	}
}

// STARTTLS through the config: the CA verifies the real upsd's certificate
// and hostname.
func TestRealUPSDSTARTTLS(t *testing.T) {
	srv := realUPSD(t, true)
	r := start(t, testConfig(t, `power: {poll_interval: 200ms}
ups:
  - name: rack
    nut:
      address: "`+srv.Addr()+`"
      ups: ups
      username: mon
      password_env: NUT_PW
      tls: {ca_file: "`+srv.CAFile()+`"}
`), false)
	r.waitFor(t, "reading over TLS", 10*time.Second, func(s app.Snapshot) bool { return status(s, 0) == "OL" })
	if n := numLogins(t, srv.Addr()); n != 1 {
		t.Fatalf("NUMLOGINS = %d, want the login over TLS", n)
	}
}

// A wrong server name is refused on every attempt: the UPS is never read
// and never read in clear.
func TestRealUPSDWrongHostNeverRead(t *testing.T) {
	srv := realUPSD(t, true)
	r := start(t, testConfig(t, `power: {poll_interval: 200ms}
ups:
  - name: rack
    nut:
      address: "`+srv.Addr()+`"
      ups: ups
      tls: {ca_file: "`+srv.CAFile()+`", server_name: nut.example}
`), false)
	s := r.waitFor(t, "a failed attempt", 10*time.Second, func(s app.Snapshot) bool { return s.UPS[0].CommErr != "" })
	if s.UPS[0].Comm == power.CommOK || !s.UPS[0].LastSeen.IsZero() {
		t.Fatalf("UPS read despite a certificate for another host: %+v", s.UPS[0])
	}
	t.Logf("error shown: %s", s.UPS[0].CommErr)
}

// apcupsd source: an outage seen through NIS gives the same events.
func TestApcupsdSource(t *testing.T) {
	srv := nistest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.Set("ONLINE", nistest.FlagOnline|nistest.FlagBattPresent, 100, 50, 20)
	r := start(t, testConfig(t, `power: {poll_interval: 100ms, deadtime: 2s}
ups:
  - name: apc
    apcupsd: {address: "`+srv.Addr()+`"}
`), false)
	r.waitFor(t, "online", 5*time.Second, func(s app.Snapshot) bool { return s.UPS[0].OnLine() })
	srv.Set("ONBATT", nistest.FlagOnBatt|nistest.FlagBattPresent, 90, 45, 20)
	s := r.waitFor(t, "on battery", 5*time.Second, func(s app.Snapshot) bool { return s.UPS[0].OnBattery() })
	if s.UPS[0].Runtime != 45*time.Minute || s.UPS[0].Charge != 90 {
		t.Errorf("runtime %v charge %v, want 45m and 90", s.UPS[0].Runtime, s.UPS[0].Charge)
	}
	srv.Set("ONBATT LOWBATT", nistest.FlagOnBatt|nistest.FlagBattLow|nistest.FlagBattPresent, 5, 1, 20)
	r.waitFor(t, "shutdown", 5*time.Second, func(s app.Snapshot) bool { return s.Decision.Kind == policy.Shutdown })
	if !containsInOrder(r.eventTypes(), power.EventOnBatt, power.EventLowBatt) {
		t.Errorf("events %v", r.eventTypes())
	}
}
