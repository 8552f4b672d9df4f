package site

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// Scenario 10: no secret in any output. Every scenario of this package
// scans what it captured (daemon logs, journal, audit log, API answers,
// webhook bodies, command output) for its distinctive secrets when it
// ends (site.scanSecrets). This scenario adds the paths where a credential
// is most likely to slip into a message: debug logging, a vCenter session
// lost and re-established (the password is sent again), an SMTP relay and
// webhooks that fail (errors that quote the URL), an API call with a wrong
// token, and the one-shot commands check and plan.
func TestSecretsNeverPrinted(t *testing.T) {
	smtpPass := newSecret("smtppw")
	passFile := filepath.Join(t.TempDir(), "smtp.pass")
	if err := os.WriteFile(passFile, []byte(smtpPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	failing := newReceiver(t, "500")
	const settings = "  timeout: 1s\n  retries: 1\n  backoff: 100ms\n  flush_timeout: 1s\n"
	c := siteConfig{
		Fleet:          oneHost(vcsim.VM{Name: "v-1", ShutdownDelay: quick}, vcsim.VM{Name: "v-2", ShutdownDelay: quick}),
		VCPasswordFile: true,
		LogLevel:       "debug",
	}
	c.addChannel("{name: mail, email: {from: sundown@chaos.test, to: [ops@chaos.test], relay: \"127.0.0.1:"+
		strconv.Itoa(closedPort(t))+"\", tls: none, username: sundown, password_file: "+strconv.Quote(passFile)+"}}", settings)
	c.addSecretValue("SMTP password", smtpPass)
	c.addWebhook("hook-500", failing, settings)
	c.addWebhookURL("hook-refused", "http://127.0.0.1:"+strconv.Itoa(closedPort(t)), settings)
	s := newSite(t, c)

	// The scan finds what it looks for: the password files hold them.
	for _, f := range []string{filepath.Join(s.dir, "vc.pass"), passFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.leaks("control", b)) == 0 {
			t.Fatalf("the secret scan does not find the secret in %s: the scan is broken", f)
		}
	}
	if b, _ := os.ReadFile(s.cfg); len(s.leaks("config", b)) > 0 {
		t.Fatal("the config holds a secret itself: the scenario would prove nothing")
	}

	for _, args := range [][]string{{"check", "-c", s.cfg}, {"plan", "-c", s.cfg}} {
		out, err := s.runCommand(90*time.Second, args...)
		t.Logf("sundown %s: exit %v, %d bytes of output", args[0], err, len(out))
		if strings.Contains(out, "panic:") {
			// Found by this scenario: app.ReadOnce reads every UPS that is
			// not NUT as apcupsd, and a trigger UPS has no apcupsd
			// address.
			t.Errorf("BUG: `sundown %s` panics with a trigger UPS in the config:\n%s", args[0], firstLines(out[strings.Index(out, "panic:"):], 8))
		}
	}

	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	if code := postWithToken(t, s, d.api()+"/api/v1/trigger", "wrong-token-for-the-audit-log"); code != http.StatusUnauthorized {
		t.Errorf("trigger with a wrong token answered %d, want 401", code)
	}
	terminateSundownSessions(t, s)
	d.trigger("shutdown")
	d.waitRunDone(40 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)
	if !strings.Contains(d.output(), "vsphere: session re-established") {
		t.Error("the daemon did not log in again: the re-login path was not exercised")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := d.status()
		down := 0
		for _, name := range []string{"mail", "hook-500", "hook-refused"} {
			if ch, ok := channel(st, name); ok && ch.Down && ch.Failed > 0 {
				down++
			}
		}
		if down == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the failing channels did not all give up a notification within 30s: %+v", st.Channels)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.terminate(15 * time.Second)
	// site.scanSecrets runs at cleanup, over everything above.
}

// firstLines returns the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// postWithToken posts an empty trigger with a bearer token and returns
// the status code; the answer is kept for the scan.
func postWithToken(t *testing.T, s *site, url, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(`{"kind":"shutdown"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.keep("POST "+url+" (wrong token)", b)
	return resp.StatusCode
}
