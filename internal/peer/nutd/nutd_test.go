package nutd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func twoUPS() Config {
	return Config{
		UPS: []UPS{
			{Name: "ups1", Desc: "rack \"A\" UPS", Vars: map[string]string{
				"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800",
				"ups.load": "30", "device.mfr": "Acme Power Co",
			}},
			{Name: "ups2", Vars: map[string]string{"ups.status": "OL CHRG", "battery.charge": "87"}},
		},
		Users: []User{
			{Name: "monpri", Password: `p"w\1`, Upsmon: "primary"},
			{Name: "admin", Password: "secret", Actions: []string{"SET", "FSD"}, InstCmds: []string{"ALL"}},
		},
	}
}

func dial(t *testing.T, s *Server) *wire {
	t.Helper()
	w, err := dialWire(s.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w
}

func mustCmd(t *testing.T, w *wire, line, want string) {
	t.Helper()
	got, err := w.cmd(line, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", verb(line), err)
	}
	if got != want {
		t.Fatalf("%s: got %q, want %q", verb(line), got, want)
	}
}

func mustVar(t *testing.T, w *wire, ups, name, want string) {
	t.Helper()
	got, err := w.getVar(ups, name, 2*time.Second)
	if err != nil {
		t.Fatalf("GET VAR %s %s: %v", ups, name, err)
	}
	if got != want {
		t.Fatalf("GET VAR %s %s = %q, want %q", ups, name, got, want)
	}
}

func TestStartServesInitialData(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	s := Start(t, twoUPS())
	t.Logf("cold start until both UPSes serve data: %.2fs", time.Since(begin).Seconds())
	w := dial(t, s)
	mustVar(t, w, "ups1", "ups.status", "OL")
	mustVar(t, w, "ups1", "battery.runtime", "1800")
	mustVar(t, w, "ups1", "device.mfr", "Acme Power Co")
	mustVar(t, w, "ups2", "ups.status", "OL CHRG")
	mustVar(t, w, "ups2", "battery.charge", "87")
	mustCmd(t, w, "GET UPSDESC ups1", `UPSDESC ups1 "rack \"A\" UPS"`)
	mustCmd(t, w, "NETVER", "1.3")
	mustCmd(t, w, "STARTTLS", "ERR FEATURE-NOT-CONFIGURED")
	if s.CAFile() != "" {
		t.Errorf("CAFile = %q without TLS", s.CAFile())
	}
	if st, err := os.Stat(s.state); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state folder %s: %v; want mode 700", s.state, err)
	}
}

// TestSetFlipsStatus measures Set → served. The driver checks the file once
// a second, so the latency depends on where in that cycle the write lands:
// right after a served change (0 ms) it is about a full second.
func TestSetFlipsStatus(t *testing.T) {
	t.Parallel()
	s := Start(t, twoUPS())
	s.WaitServed(t, "ups1", "ups.status", "OL", time.Second) // align with a served value
	var worst time.Duration
	for i, step := range []struct {
		status string
		offset time.Duration
	}{{"OB DISCHRG", 0}, {"OL", 300 * time.Millisecond}, {"OB DISCHRG LB", 600 * time.Millisecond}} {
		// Real peer: de-align the write from the driver's poll on purpose.
		time.Sleep(step.offset)
		set := time.Now()
		s.Set(t, "ups1", map[string]string{"ups.status": step.status, "battery.charge": strconv.Itoa(90 - i)})
		seen := s.WaitServed(t, "ups1", "ups.status", step.status, 3*time.Second)
		lat := seen.Sub(set)
		worst = max(worst, lat)
		t.Logf("Set %q %v after a served change → served after %.3fs", step.status, step.offset, lat.Seconds())
		if lat > 2*time.Second {
			t.Errorf("Set %q served after %v, want ≤ ~1s", step.status, lat)
		}
		w := dial(t, s)
		mustVar(t, w, "ups1", "battery.charge", strconv.Itoa(90-i))
		mustVar(t, w, "ups2", "ups.status", "OL CHRG") // the other UPS is untouched
	}
	t.Logf("worst Set → served latency: %.3fs", worst.Seconds())
}

// TestRapidSetsServedInOrder writes a change every 150 ms, several per wall-
// clock second, so without strictly increasing mtimes most would be missed.
// The driver polls once a second, so it skips intermediate values, but it
// must end on the last one and never go back to an older one.
func TestRapidSetsServedInOrder(t *testing.T) {
	t.Parallel()
	s := Start(t, twoUPS())
	const n = 10
	w := dial(t, s)
	prev := 100
	var seq []int
	observe := func() {
		v, err := w.getVar("ups1", "battery.charge", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		if c > prev {
			t.Fatalf("battery.charge went back from %d to %d (seen %v)", prev, c, seq)
		}
		if c != prev {
			seq = append(seq, c)
			prev = c
		}
	}
	begin := time.Now()
	next := begin
	for i := 1; i <= n; i++ {
		for time.Now().Before(next) { // real peer: observe while pacing the writes
			observe()
			time.Sleep(10 * time.Millisecond)
		}
		s.Set(t, "ups1", map[string]string{"battery.charge": strconv.Itoa(100 - i), "ups.test.seq" + strconv.Itoa(i): "x"})
		next = next.Add(150 * time.Millisecond)
	}
	lastSet := time.Now()
	deadline := lastSet.Add(5 * time.Second)
	for prev != 100-n {
		if time.Now().After(deadline) {
			t.Fatalf("battery.charge stuck at %d; seen %v", prev, seq)
		}
		observe()
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d Sets in %.2fs; served sequence %v; last value served %.2fs after the last Set",
		n, lastSet.Sub(begin).Seconds(), seq, time.Since(lastSet).Seconds())
	if len(seq) < 2 {
		t.Errorf("served only %v over %d Sets spanning >1s", seq, n)
	}
	for i := 1; i <= n; i++ {
		mustVar(t, w, "ups1", "ups.test.seq"+strconv.Itoa(i), "x")
	}
}

func TestKillDriverThenStart(t *testing.T) {
	t.Parallel()
	s := Start(t, twoUPS())
	s.KillDriver(t, "ups2")
	w := dial(t, s)
	_, err := w.getVar("ups2", "ups.status", 2*time.Second)
	var ae *answerError
	if !errors.As(err, &ae) || ae.Answer != "ERR DRIVER-NOT-CONNECTED" {
		t.Fatalf("after KillDriver: %v, want ERR DRIVER-NOT-CONNECTED", err)
	}
	mustVar(t, w, "ups1", "ups.status", "OL")
	begin := time.Now()
	s.StartDriver(t, "ups2")
	s.WaitServed(t, "ups2", "ups.status", "OL CHRG", 10*time.Second)
	t.Logf("StartDriver → data served again after %.2fs", time.Since(begin).Seconds())
	s.KillDriver(t, "ups1")
	s.StartDriver(t, "ups1")
	s.WaitReady(t, 10*time.Second)
	s.WaitServed(t, "ups1", "device.mfr", "Acme Power Co", 3*time.Second)
}

func TestStopDriverGoesStale(t *testing.T) {
	t.Parallel()
	cfg := twoUPS()
	cfg.MaxAge = 3
	s := Start(t, cfg)
	w := dial(t, s)
	stopped := time.Now()
	s.StopDriver(t, "ups1")
	var answer string
	for {
		_, err := w.getVar("ups1", "ups.status", time.Second)
		var ae *answerError
		if errors.As(err, &ae) {
			answer = ae.Answer
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if time.Since(stopped) > 10*time.Second {
			t.Fatal("still served 10s after SIGSTOP with MAXAGE 3")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stale := time.Since(stopped)
	if answer != "ERR DATA-STALE" {
		t.Fatalf("frozen driver: %q, want ERR DATA-STALE", answer)
	}
	t.Logf("SIGSTOP → ERR DATA-STALE after %.2fs (MAXAGE 3)", stale.Seconds())
	if stale < 2*time.Second {
		t.Errorf("stale after %v, before MAXAGE", stale)
	}
	mustVar(t, w, "ups2", "ups.status", "OL CHRG")
	cont := time.Now()
	s.ContDriver(t, "ups1")
	s.WaitServed(t, "ups1", "ups.status", "OL", 5*time.Second)
	t.Logf("SIGCONT → data served again after %.2fs", time.Since(cont).Seconds())
}

func TestRestartUPSD(t *testing.T) {
	t.Parallel()
	s := Start(t, twoUPS())
	w := dial(t, s)
	mustCmd(t, w, "USERNAME admin", "OK")
	mustCmd(t, w, "PASSWORD secret", "OK")
	mustCmd(t, w, "FSD ups1", "OK FSD-SET")
	mustVar(t, w, "ups1", "ups.status", "FSD OL")
	// The latch survives a status change from the driver.
	s.Set(t, "ups1", map[string]string{"ups.status": "OB"})
	s.WaitServed(t, "ups1", "ups.status", "FSD OB", 3*time.Second)

	s.KillUPSD(t)
	if _, err := dialWire(s.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial with upsd stopped: %v, want connection refused", err)
	}
	begin := time.Now()
	s.StartUPSD(t)
	listening := time.Since(begin)
	s.WaitReady(t, 5*time.Second)
	t.Logf("StartUPSD: listening after %.2fs, data served after %.2fs", listening.Seconds(), time.Since(begin).Seconds())
	mustVar(t, dial(t, s), "ups1", "ups.status", "OB") // FSD cleared
}

func TestLogin(t *testing.T) {
	t.Parallel()
	s := Start(t, twoUPS())
	w := dial(t, s)
	mustCmd(t, w, "USERNAME monpri", "OK")
	mustCmd(t, w, "PASSWORD wrong", "OK") // a wrong password is refused only at LOGIN
	mustCmd(t, w, "LOGIN ups1", "ERR ACCESS-DENIED")

	w2 := dial(t, s)
	mustCmd(t, w2, "USERNAME monpri", "OK")
	mustCmd(t, w2, `PASSWORD "p\"w\\1"`, "OK")
	mustCmd(t, w2, "LOGIN ups1", "OK")
	mustCmd(t, w2, "PRIMARY ups1", "OK PRIMARY-GRANTED")
	mustCmd(t, w2, "GET NUMLOGINS ups1", "NUMLOGINS ups1 1")
	mustCmd(t, w2, "FSD ups1", "OK FSD-SET")
	mustVar(t, w2, "ups1", "ups.status", "FSD OL")
}

func tlsConfig(t *testing.T, s *Server) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	cfg := twoUPS()
	cfg.TLS = true
	begin := time.Now()
	s := Start(t, cfg)
	t.Logf("cold start with TLS: %.2fs", time.Since(begin).Seconds())
	w := dial(t, s)
	if err := w.startTLS(tlsConfig(t, s), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st := w.conn.(*tls.Conn).ConnectionState()
	t.Logf("negotiated %s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	mustVar(t, w, "ups1", "ups.status", "OL")
	mustCmd(t, w, "USERNAME monpri", "OK")
	mustCmd(t, w, `PASSWORD "p\"w\\1"`, "OK")
	mustCmd(t, w, "LOGIN ups1", "OK")

	// The same CA with another expected name must fail.
	w2 := dial(t, s)
	cfg2 := tlsConfig(t, s)
	cfg2.ServerName = "ups.example"
	err := w2.startTLS(cfg2, 5*time.Second)
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Fatalf("handshake expecting another name: %v, want a hostname error", err)
	}
	// Without the CA the chain is unknown.
	w3 := dial(t, s)
	err = w3.startTLS(&tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, 5*time.Second)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("handshake without the CA: %v, want unknown authority", err)
	}
}

func TestSTARTTLSWrongHostCert(t *testing.T) {
	t.Parallel()
	cfg := Config{UPS: []UPS{{Name: "u"}}, TLS: true, CertHost: "other.example"}
	s := Start(t, cfg)
	w := dial(t, s)
	err := w.startTLS(tlsConfig(t, s), 5*time.Second)
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Fatalf("handshake with a cert for other.example: %v, want a hostname error", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q does not name the expected host", err)
	}
	// The certificate is otherwise valid: verifying for its own name works.
	w2 := dial(t, s)
	c := tlsConfig(t, s)
	c.ServerName = "other.example"
	if err := w2.startTLS(c, 5*time.Second); err != nil {
		t.Fatalf("handshake for other.example: %v", err)
	}
	mustVar(t, w2, "u", "ups.status", "OL") // default status
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	err := validate(Config{
		UPS:      []UPS{{Name: "a b"}, {Name: "x", Vars: map[string]string{"k": "v\n"}}, {Name: "x"}},
		Users:    []User{{Name: "u", Upsmon: "master"}},
		CertHost: "h",
		MaxAge:   -1,
	})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{`invalid name "a b"`, `invalid variable "k"`, `duplicate name "x"`, `upsmon "master"`, "CertHost", "MaxAge"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
