package email

import (
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/notify"
	"github.com/sundown-ups/sundown/internal/peer"
)

// smtpSink is postfix's smtp-sink, a real SMTP server process that writes
// one file per message (it offers no STARTTLS).
type smtpSink struct {
	addr string
	dir  string
}

func startSink(t *testing.T) smtpSink {
	t.Helper()
	bin := peer.NeedBinary(t, "/usr/sbin/smtp-sink", "apt-get install -y postfix")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command(bin, "-u", u.Username, "-R", dir, "-d", "%Y%m%d%H/%M.", addr, "100")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start smtp-sink: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("smtp-sink exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink not listening on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // real-peer poll
	}
	return smtpSink{addr: addr, dir: dir}
}

// files returns the contents of the message files written so far.
func (s smtpSink) files(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFiles polls until n complete message files exist.
func (s smtpSink) waitFiles(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		files := s.files(t)
		complete := 0
		for _, f := range files {
			if strings.Contains(f, "\n\n") || strings.Contains(f, "\r\n\r\n") {
				complete++
			}
		}
		if complete >= n {
			return files
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink has %d files, want %d", len(files), n)
		}
		time.Sleep(10 * time.Millisecond) // real-peer poll
	}
}

func TestSMTPSinkRelayVerbose(t *testing.T) {
	sink := startSink(t)
	e := mustNew(t, Config{
		From: "sundown <ups@example.org>", To: []string{"ops@example.org"},
		Relay: sink.addr, TLS: TLSOpportunistic, SubjectPrefix: "[sundown] ", Verbose: true,
	})
	if err := e.Send(sendCtx(t), testMsg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	files := sink.waitFiles(t, 1)
	if len(files) != 1 {
		t.Fatalf("%d files, want 1", len(files))
	}
	h, body := parseMail(t, files[0])
	got := map[string]string{
		"X-Mail-Args": h.Get("X-Mail-Args"), "X-Rcpt-Args": h.Get("X-Rcpt-Args"), // smtp-sink's envelope record
		"From": h.Get("From"), "To": h.Get("To"), "Subject": decodeHeader(t, h, "Subject"),
		"X-Sundown-Type": h.Get("X-Sundown-Type"),
	}
	want := map[string]string{
		"X-Mail-Args": "<ups@example.org> BODY=8BITMIME", "X-Rcpt-Args": "<ops@example.org>",
		"From": `"sundown" <ups@example.org>`, "To": "<ops@example.org>", "Subject": "[sundown] UPS rack-a on battery",
		"X-Sundown-Type": "ONBATT",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers (-want +got):\n%s\nfile:\n%s", diff, files[0])
	}
	for _, line := range []string{"Mains power lost; runtime 12 min.", "UPS variables:\nbattery.charge: 97\nbattery.runtime: 720\nups.status: OB\n"} {
		if !strings.Contains(body, line) {
			t.Errorf("body lacks %q:\n%s", line, body)
		}
	}
}

func TestSMTPSinkPlainAndMandatoryTLS(t *testing.T) {
	sink := startSink(t)
	// tls: none delivers in clear to a server without STARTTLS.
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"a@example.org", "b@example.org"},
		Relay: sink.addr, TLS: TLSNone})
	m := testMsg
	m.Type, m.Subject, m.Body = "SHUTDOWN_DONE", "Shutdown complete", ""
	if err := e.Send(sendCtx(t), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	files := sink.waitFiles(t, 1)
	h, body := parseMail(t, files[0])
	if h.Get("To") != "<a@example.org>, <b@example.org>" || !strings.HasPrefix(body, "Shutdown complete\n") ||
		strings.Contains(body, "UPS variables") {
		t.Errorf("To %q body %q", h.Get("To"), body)
	}

	// The default (mandatory STARTTLS) refuses this server: nothing sent.
	e = mustNew(t, Config{From: "ups@example.org", To: []string{"a@example.org"}, Relay: sink.addr})
	err := e.Send(sendCtx(t), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("mandatory STARTTLS: err = %v", err)
	}
	if n := len(sink.files(t)); n != 1 {
		t.Errorf("%d files after the refused send, want still 1", n)
	}
}
