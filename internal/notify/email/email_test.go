package email

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

var testMsg = notify.Message{
	At:       time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	Type:     "ONBATT",
	UPS:      "rack-a",
	Severity: notify.SeverityWarning,
	Subject:  "UPS rack-a on battery",
	Body:     "Mains power lost; runtime 12 min.",
	Vars:     map[string]string{"ups.status": "OB", "battery.charge": "97", "battery.runtime": "720"},
}

const password = "pa55-w0rd-SECRET"

func mustNew(t *testing.T, c Config) *Email {
	t.Helper()
	e, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func sendCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// parseMail splits a delivered message into headers and decoded body.
func parseMail(t *testing.T, data string) (mail.Header, string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, data)
	}
	var r io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header, strings.ReplaceAll(string(b), "\r\n", "\n")
}

func decodeHeader(t *testing.T, h mail.Header, name string) string {
	t.Helper()
	v, err := new(mime.WordDecoder).DecodeHeader(h.Get(name))
	if err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return v
}

func TestStartTLSAuthPlainDelivers(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki, user: "ups", pass: password})
	e := mustNew(t, Config{
		From: "sundown <ups@example.org>", To: []string{"ops@example.org", "Boss <boss@example.net>"},
		Relay: srv.addr, Username: "ups", Password: config.NewSecret(password), CAFile: pki.caFile,
		SubjectPrefix: "[sundown] ", Verbose: true, HELO: "sundown.test",
	})
	if err := e.Send(sendCtx(t), testMsg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.From != "ups@example.org" || !cmp.Equal(got.To, []string{"ops@example.org", "boss@example.net"}) ||
		got.AuthUser != "ups" || !got.TLS {
		t.Errorf("envelope: from %q to %v user %q tls %v", got.From, got.To, got.AuthUser, got.TLS)
	}
	h, body := parseMail(t, got.Data)
	if s := decodeHeader(t, h, "Subject"); s != "[sundown] UPS rack-a on battery" {
		t.Errorf("Subject = %q", s)
	}
	if f := h.Get("From"); !strings.Contains(f, "ups@example.org") {
		t.Errorf("From = %q", f)
	}
	if to := h.Get("To"); !strings.Contains(to, "ops@example.org") || !strings.Contains(to, "boss@example.net") {
		t.Errorf("To = %q", to)
	}
	if h.Get("Auto-Submitted") != "auto-generated" || h.Get("X-Sundown-Type") != "ONBATT" || h.Get("X-Sundown-UPS") != "rack-a" {
		t.Errorf("headers: %v", h)
	}
	if d, err := h.Date(); err != nil || !d.Equal(testMsg.At) {
		t.Errorf("Date = %v (%v)", d, err)
	}
	want := "Mains power lost; runtime 12 min.\n\n" +
		"Type:     ONBATT\nUPS:      rack-a\nSeverity: warning\nTime:     2026-03-04T05:06:07Z\n\n" +
		"UPS variables:\nbattery.charge: 97\nbattery.runtime: 720\nups.status: OB\n"
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
}

func TestAuthLogin(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki, user: "ups", pass: password, login: true})
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@example.org"}, Relay: srv.addr,
		Username: "ups", Password: config.NewSecret(password), Auth: AuthLogin, CAFile: pki.caFile})
	if err := e.Send(sendCtx(t), testMsg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if msgs := srv.messages(); len(msgs) != 1 || msgs[0].AuthUser != "ups" {
		t.Errorf("messages: %+v", msgs)
	}
}

func TestImplicitTLS(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki, implicit: true, user: "ups", pass: password})
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@example.org"}, Relay: srv.addr, TLS: TLSImplicit,
		Username: "ups", Password: config.NewSecret(password), CAFile: pki.caFile})
	if err := e.Send(sendCtx(t), testMsg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if msgs := srv.messages(); len(msgs) != 1 || !msgs[0].TLS {
		t.Errorf("messages: %+v", msgs)
	}
}

func TestBadCredentialsArePermanentAndNotRetried(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki, user: "ups", pass: "right"})
	e := mustNew(t, Config{Name: "mail", From: "ups@example.org", To: []string{"ops@example.org"}, Relay: srv.addr,
		Username: "ups", Password: config.NewSecret(password), CAFile: pki.caFile})

	err := e.Send(sendCtx(t), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "535") {
		t.Fatalf("err = %v, want a permanent 535", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatalf("password in error: %v", err)
	}

	// Through the Notifier: one attempt, given up, visible in stats.
	n, err := notify.New([]notify.Route{{Channel: e}}, notify.Options{Retries: 5, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	n.Notify(testMsg)
	s := waitStats(t, n, func(s notify.ChannelStats) bool { return s.GaveUp == 1 })
	if s.Failed != 1 || !s.Down || strings.Contains(s.LastError, password) {
		t.Errorf("stats: %+v", s)
	}
	if mails, tries := srv.counts(); mails != 0 || tries != 2 {
		t.Errorf("server saw %d MAIL and %d AUTH attempts, want 0 and 2 (one per Send)", mails, tries)
	}
}

func TestMandatoryStartTLSWithoutServerSupport(t *testing.T) {
	srv := startServer(t, serverOpts{user: "ups", pass: password}) // no TLS; AUTH offered in clear
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@example.org"}, Relay: srv.addr,
		Username: "ups", Password: config.NewSecret(password)})
	err := e.Send(sendCtx(t), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "does not offer STARTTLS") ||
		!strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("err = %v", err)
	}
	if mails, tries := srv.counts(); mails != 0 || tries != 0 {
		t.Errorf("server saw %d MAIL and %d AUTH in clear", mails, tries)
	}
}

func TestUntrustedCertificateIsPermanent(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki})
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@example.org"}, Relay: srv.addr})
	err := e.Send(sendCtx(t), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a permanent certificate error", err)
	}
	if len(srv.messages()) != 0 {
		t.Error("message delivered over an unverified connection")
	}
}

// fakeResolver answers MX lookups from a map; missing names are NXDOMAIN.
type fakeResolver struct{ mx map[string][]*net.MX }

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if mx, ok := r.mx[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func TestDirectMXDelivery(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, serverOpts{pki: &pki})
	res := &fakeResolver{mx: map[string][]*net.MX{
		// The preferred MX refuses connections (nothing listens on
		// 127.0.0.2 at that port); the second one is the test server.
		"a.example": {{Host: "localhost.", Pref: 20}, {Host: "127.0.0.2.", Pref: 10}},
		"b.example": {{Host: "127.0.0.2.", Pref: 10}},
	}}
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@a.example", "x@b.example", "dev@A.example"},
		CAFile: pki.caFile, Resolver: res, MXPort: srv.port})
	err := e.Send(sendCtx(t), testMsg)
	if err == nil || notify.IsPermanent(err) || !strings.Contains(err.Error(), "email to b.example via MX 127.0.0.2:") {
		t.Fatalf("first send: err = %v, want a retryable failure for b.example", err)
	}
	msgs := srv.messages()
	if len(msgs) != 1 || !cmp.Equal(msgs[0].To, []string{"ops@a.example", "dev@A.example"}) || !msgs[0].TLS {
		t.Fatalf("after first send: %+v", msgs)
	}

	// b.example's MX comes back: the retry delivers to b.example only.
	res.mx["b.example"] = []*net.MX{{Host: "localhost", Pref: 10}}
	if err := e.Send(sendCtx(t), testMsg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	msgs = srv.messages()
	if len(msgs) != 2 || !cmp.Equal(msgs[1].To, []string{"x@b.example"}) {
		t.Fatalf("after retry: %+v", msgs)
	}
	h0, _ := parseMail(t, msgs[0].Data)
	h1, _ := parseMail(t, msgs[1].Data)
	if h0.Get("Message-Id") == "" || h0.Get("Message-Id") != h1.Get("Message-Id") {
		t.Errorf("Message-ID differs across the retry: %q vs %q", h0.Get("Message-Id"), h1.Get("Message-Id"))
	}
}

func TestDirectMXNullAndNoRecord(t *testing.T) {
	res := &fakeResolver{mx: map[string][]*net.MX{"nomail.example": {{Host: ".", Pref: 0}}}}
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"a@nomail.example"}, Resolver: res})
	err := e.Send(sendCtx(t), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "null MX") {
		t.Errorf("null MX: err = %v", err)
	}
	hosts, err := e.mxHosts(context.Background(), "plain.example")
	if err != nil || !cmp.Equal(hosts, []string{"plain.example"}) {
		t.Errorf("no MX record: hosts %v, err %v; want the domain itself", hosts, err)
	}
}

func TestStalledServerBoundedByContext(t *testing.T) {
	// A server that accepts and never greets.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	e := mustNew(t, Config{From: "ups@example.org", To: []string{"ops@example.org"}, Relay: l.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = e.Send(ctx, testMsg)
	took := time.Since(start)
	if c := <-accepted; c != nil {
		c.Close()
	}
	if err == nil || notify.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable timeout", err)
	}
	if took > 5*time.Second {
		t.Errorf("Send took %s with a 300ms context", took)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, c := range map[string]Config{
		"from":     {From: "not an address", To: []string{"a@b.c"}},
		"to":       {From: "a@b.c"},
		"to parse": {From: "a@b.c", To: []string{"nope"}},
		"tls":      {From: "a@b.c", To: []string{"a@b.c"}, TLS: "ssl"},
		"auth":     {From: "a@b.c", To: []string{"a@b.c"}, Auth: "cram-md5"},
		"relay":    {From: "a@b.c", To: []string{"a@b.c"}, Relay: "smtp.example.org"},
		"port":     {From: "a@b.c", To: []string{"a@b.c"}, Relay: "smtp.example.org:99999"},
		"password": {From: "a@b.c", To: []string{"a@b.c"}, Password: config.NewSecret(password)},
		"ca":       {From: "a@b.c", To: []string{"a@b.c"}, CAFile: "/nonexistent.pem"},
	} {
		_, err := New(c)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("%s: password in error", name)
		}
	}
	if got := fmt.Sprintf("%v %+v", mustNew(t, Config{From: "a@b.c", To: []string{"x@y.z"}, Password: config.NewSecret(password), Username: "u"}).cfg,
		Config{Password: config.NewSecret(password)}); strings.Contains(got, password) {
		t.Errorf("config prints the password: %s", got)
	}
}

func TestBodyWithoutVerbose(t *testing.T) {
	got := Body(notify.Message{Subject: "Shutdown done", Type: "SHUTDOWN_DONE", Vars: map[string]string{"a": "b"}}, false)
	if want := "Shutdown done\n\nType:     SHUTDOWN_DONE\n"; got != want {
		t.Errorf("Body = %q, want %q", got, want)
	}
}

func waitStats(t *testing.T, n *notify.Notifier, cond func(notify.ChannelStats) bool) notify.ChannelStats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := n.Stats()[0]
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out; stats %+v", s)
		}
		time.Sleep(5 * time.Millisecond) // real-peer poll
	}
}
