package nut

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitLine(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  bool
	}{
		{"", []string{}, false},
		{"   ", []string{}, false},
		{"OK", []string{"OK"}, false},
		{"VAR ups ups.status \"OL CHRG\"", []string{"VAR", "ups", "ups.status", "OL CHRG"}, false},
		{`VAR u v "a \"b\" \\ c"`, []string{"VAR", "u", "v", `a "b" \ c`}, false},
		{`VAR u v "hash \# kept"`, []string{"VAR", "u", "v", "hash # kept"}, false},
		{`VAR u v "#in quotes"`, []string{"VAR", "u", "v", "#in quotes"}, false},
		{`a\ b`, []string{"a b"}, false},
		{`a"b c"`, []string{`a"b`, `c"`}, false},
		{`"a"b`, []string{"a", "b"}, false},
		{`""`, []string{""}, false},
		{`x "" y`, []string{"x", "", "y"}, false},
		{"tab\tsep  spaces", []string{"tab", "sep", "spaces"}, false},
		{"word # comment \"x", []string{"word"}, false},
		{"word#comment", []string{"word"}, false},
		{"a=b", []string{"a", "=", "b"}, false},
		{`"a=b"`, []string{"a=b"}, false},
		{`"open`, nil, true},
		{`"open\"`, nil, true},
		{`trailing\`, nil, true},
		{`"ends with backslash\`, nil, true},
	}
	for _, tc := range cases {
		got, err := SplitLine(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("SplitLine(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && !slices.Equal(got, tc.want) {
			t.Errorf("SplitLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestQuote(t *testing.T) {
	cases := map[string]string{
		"plain":        "plain",
		"ups.status":   "ups.status",
		"":             `""`,
		"two words":    `"two words"`,
		`say "hi"`:     `"say \"hi\""`,
		`back\slash`:   `"back\\slash"`,
		"#hash":        `"\#hash"`,
		"a # b":        `"a \# b"`,
		"a=b":          `"a=b"`,
		"tab\tinside":  "\"tab\tinside\"",
		"ünïcode-only": "ünïcode-only",
	}
	for in, want := range cases {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %q, want %q", in, got, want)
		}
		if words, err := SplitLine(Quote(in)); err != nil || len(words) != 1 || words[0] != in {
			t.Errorf("SplitLine(Quote(%q)) = %q, %v", in, words, err)
		}
	}
}

func TestAppendCommandRefusesControlCharacters(t *testing.T) {
	for _, bad := range []string{"a\nb", "a\rb", "nul\x00", "bell\x07", "del\x7f", "tab\t"} {
		if _, err := appendCommand(nil, "SET", "VAR", "ups", "x", bad); !errors.Is(err, ErrBadArgument) {
			t.Errorf("appendCommand(%q): %v", bad, err)
		}
	}
	got, err := appendCommand(nil, "SET", "VAR", "ups", "ups.id", `new "id"`)
	if err != nil || string(got) != "SET VAR ups ups.id \"new \\\"id\\\"\"\n" {
		t.Errorf("appendCommand = %q, %v", got, err)
	}
}

func TestParseFingerprint(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	good := []string{
		"sha256:" + hex64,
		"SHA256:" + strings.ToUpper(hex64),
		hex64,
		"sha256:" + strings.Repeat("AB:", 31) + "AB",
		"  sha256:" + hex64 + " ",
	}
	for _, f := range good {
		b, err := parseFingerprint(f)
		if err != nil || len(b) != 32 || b[0] != 0xab {
			t.Errorf("parseFingerprint(%q) = %x, %v", f, b, err)
		}
	}
	for _, f := range []string{"", "sha1:" + hex64, "sha256:abcd", "sha256:" + hex64 + "00", "sha256:zz" + hex64[2:]} {
		if _, err := parseFingerprint(f); err == nil {
			t.Errorf("parseFingerprint(%q) accepted", f)
		}
	}
}

func TestSplitAddr(t *testing.T) {
	cases := []struct{ in, host, hostport string }{
		{"127.0.0.1:3494", "127.0.0.1", "127.0.0.1:3494"},
		{"ups.example", "ups.example", "ups.example:3493"},
		{"[::1]:3493", "::1", "[::1]:3493"},
		{"::1", "::1", "[::1]:3493"},
		{"[::1]", "::1", "[::1]:3493"},
	}
	for _, tc := range cases {
		h, hp := splitAddr(tc.in)
		if h != tc.host || hp != tc.hostport {
			t.Errorf("splitAddr(%q) = %q, %q; want %q, %q", tc.in, h, hp, tc.host, tc.hostport)
		}
	}
}

func TestErrorIs(t *testing.T) {
	e := &Error{Code: "DATA-STALE", Extra: "x"}
	if !errors.Is(e, ErrDataStale) || errors.Is(e, ErrDriverNotConnected) {
		t.Error("Is compares codes")
	}
	if e.Error() != "ERR DATA-STALE x" || ErrDataStale.Error() != "ERR DATA-STALE" {
		t.Errorf("Error() = %q", e.Error())
	}
	if !errors.Is(ErrTimeout, ErrTransport) || errors.Is(ErrTransport, ErrTimeout) {
		t.Error("ErrTimeout is a transport error")
	}
	if !errors.Is(ErrFingerprintMismatch, ErrTLS) {
		t.Error("ErrFingerprintMismatch is a TLS error")
	}
	if IsSilence(nil) || IsSilence(ErrAccessDenied) || IsSilence(context.Canceled) || IsSilence(ErrTLS) {
		t.Error("IsSilence too broad")
	}
}

// memConn is a net.Conn that plays a scripted server: each command line
// written releases the next reply line of data (a whole BEGIN … END block
// for a LIST). A read with nothing released times out, like a server that
// does not answer; a read past the end of data is EOF.
type memConn struct {
	data    []byte
	pending []byte
}

func (m *memConn) Read(p []byte) (int, error) {
	if len(m.pending) == 0 {
		if len(m.data) == 0 {
			return 0, io.EOF
		}
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p, m.pending)
	m.pending = m.pending[n:]
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error) {
	for range bytes.Count(p, []byte("\n")) {
		m.release()
	}
	return len(p), nil
}

func (m *memConn) release() {
	inList := false
	for len(m.data) > 0 {
		line := m.data
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		m.data = m.data[len(line):]
		m.pending = append(m.pending, line...)
		if bytes.HasPrefix(line, []byte("BEGIN ")) {
			inList = true
		}
		if !inList || bytes.HasPrefix(line, []byte("END ")) {
			return
		}
	}
}

func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

func newMemClient(reply []byte, opts Options) *Client {
	nc := &memConn{data: reply}
	c := &Client{nc: nc, raw: nc, opts: opts.withDefaults()}
	c.br = bufio.NewReaderSize(nc, c.bufSize())
	return c
}

// replyOps run every reply parser of the client.
var replyOps = []func(context.Context, *Client) error{
	func(ctx context.Context, c *Client) error { _, err := c.Get(ctx, "ups", "ups.status"); return err },
	func(ctx context.Context, c *Client) error {
		_, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "x")
		return err
	},
	func(ctx context.Context, c *Client) error { _, err := c.ListVar(ctx, "ups"); return err },
	func(ctx context.Context, c *Client) error { _, err := c.ListUPS(ctx); return err },
	func(ctx context.Context, c *Client) error { _, err := c.ListRange(ctx, "ups", "v"); return err },
	func(ctx context.Context, c *Client) error { _, err := c.ListClient(ctx, "ups"); return err },
	func(ctx context.Context, c *Client) error { _, err := c.NumLogins(ctx, "ups"); return err },
	func(ctx context.Context, c *Client) error { _, err := c.VarType(ctx, "ups", "v"); return err },
	func(ctx context.Context, c *Client) error { _, err := c.Version(ctx); return err },
	func(ctx context.Context, c *Client) error { return c.Primary(ctx, "ups") },
	func(ctx context.Context, c *Client) error { return c.InstCmd(ctx, "ups", "load.off", "") },
	func(ctx context.Context, c *Client) error { return c.Logout(ctx) },
}

func TestReplyParsersOnMemConn(t *testing.T) {
	ctx := context.Background()
	ok := "BEGIN LIST RANGE ups v\nRANGE ups v \"1\" \"2\"\nEND LIST ENUM ups v\n"
	c := newMemClient([]byte(ok), Options{})
	r, err := c.ListRange(ctx, "ups", "v")
	if err != nil || len(r) != 1 || r[0] != (Range{"1", "2"}) {
		t.Errorf("LIST RANGE ending with END LIST ENUM (old upsd typo): %v, %v", r, err)
	}
	c = newMemClient([]byte("VAR ups ups.status \"OL\"\r\n"), Options{})
	if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
		t.Errorf("CRLF line: %q, %v", v, err)
	}
	c = newMemClient([]byte("VAR ups ups.status \"OL\""), Options{})
	if _, err := c.Get(ctx, "ups", "ups.status"); !errors.Is(err, ErrTransport) {
		t.Errorf("line cut by EOF: %v", err)
	}
	c = newMemClient([]byte("OK\nOK TRACKING 1234\nPENDING\nPENDING\nERR FAILED\n"), Options{TrackingInterval: time.Nanosecond})
	if err := c.InstCmd(ctx, "ups", "load.off", ""); !errors.Is(err, ErrTrackingFailed) {
		t.Errorf("scripted tracking: %v", err)
	}
	c = newMemClient([]byte("ERR UNKNOWN-COMMAND\nOK MASTER-GRANTED\n"), Options{})
	if err := c.Primary(ctx, "ups"); err != nil {
		t.Errorf("scripted MASTER fallback: %v", err)
	}
	c = newMemClient([]byte("Goodbye...\n"), Options{})
	if err := c.Logout(ctx); err != nil || !c.Closed() {
		t.Errorf("old LOGOUT reply: %v", err)
	}
}

// checkReply runs one parser over data and checks the error classes and
// the connection state that follow.
func checkReply(t *testing.T, data []byte, run func(context.Context, *Client) error) {
	c := newMemClient(data, Options{MaxListItems: 50, TrackingInterval: time.Nanosecond})
	err := run(context.Background(), c)
	var e *Error
	switch {
	case err == nil:
	case errors.As(err, &e):
		if e.Code == "" {
			t.Fatalf("*Error without a code: %v", err)
		}
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrTransport), errors.Is(err, ErrClosed):
		if !c.Closed() {
			t.Fatalf("connection open after %v", err)
		}
	default:
		t.Fatalf("unclassified error %v", err)
	}
}

var fuzzSeeds = []string{
	"VAR ups ups.status \"OL\"\n",
	"VAR ups ups.status \"OL CHRG\"\nVAR ups battery.charge \"90\"\nERR VAR-NOT-SUPPORTED\n",
	"ERR DATA-STALE\n",
	"ERR ACCESS-DENIED extra words\n",
	"BEGIN LIST VAR ups\nVAR ups a \"1\"\nVAR ups b \"x \\\"y\\\" \\\\ z\"\nEND LIST VAR ups\n",
	"BEGIN LIST UPS\nUPS ups \"Rack\"\nEND LIST UPS\n",
	"BEGIN LIST CLIENT ups\nCLIENT ups 127.0.0.1\nEND LIST CLIENT ups\n",
	"NUMLOGINS ups 2\n",
	"TYPE ups v RW STRING:64\n",
	"OK PRIMARY-GRANTED\n",
	"OK\nOK TRACKING 1234\nPENDING\nSUCCESS\n",
	"OK\nOK TRACKING 1234\nERR FAILED\n",
	"OK Goodbye\n",
	"Network UPS Tools upsd 2.8.0 - https://www.networkupstools.org/\n",
	"\"unterminated\n",
	"VAR ups ups.status OL\\\n",
	"BEGIN LIST VAR ups\nEND LIST RW ups\n",
	"ERR\n",
	"",
	"\n\n\n",
}

func FuzzReply(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, run := range replyOps {
			checkReply(t, data, run)
		}
	})
}

func FuzzSplitLine(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(strings.TrimSuffix(s, "\n"))
	}
	f.Add(`a\ b "c \" d" # e`)
	f.Add("x=y=\"=\"")
	f.Fuzz(func(t *testing.T, line string) {
		// Any string survives Quote then SplitLine unchanged.
		if words, err := SplitLine(Quote(line)); err != nil || len(words) != 1 || words[0] != line {
			t.Fatalf("SplitLine(Quote(%q)) = %q, %v", line, words, err)
		}
		words, err := SplitLine(line)
		if err != nil {
			return
		}
		// Re-encoding the words gives a line that splits the same way.
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = Quote(w)
		}
		again, err := SplitLine(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("words %q re-encoded as %q split into %q, %v", words, strings.Join(quoted, " "), again, err)
		}
		// The allocation-free tokenizer agrees with SplitLine.
		var tk tokenizer
		if err := tk.split([]byte(line)); err != nil || !slices.Equal(tk.words(), words) {
			t.Fatalf("tokenizer disagrees on %q", line)
		}
	})
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0 }}
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("sequence %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 100*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}

	// Jitter takes at most Jitter of each wait, from the injected source.
	j := Backoff{Min: time.Second, Max: 10 * time.Second, Jitter: 0.5, Rand: func() float64 { return 0.5 }}
	if d := j.Next(); d != 750*time.Millisecond {
		t.Errorf("jittered first wait %v, want 750ms", d)
	}
	// Default jitter (0.2) with the largest random value stays above 80%.
	r := Backoff{Min: time.Second, Max: time.Second, Rand: func() float64 { return 0.999999 }}
	if d := r.Next(); d < 800*time.Millisecond || d > time.Second {
		t.Errorf("default jitter: %v", d)
	}
	// Zero value: defaults, real randomness, never beyond Max.
	var z Backoff
	for range 100 {
		if d := z.Next(); d <= 0 || d > 30*time.Second {
			t.Fatalf("zero Backoff gave %v", d)
		}
	}
	// A huge number of attempts does not overflow.
	big := Backoff{Min: time.Hour, Max: 1 << 62, Factor: 1000, Rand: func() float64 { return 0 }}
	for range 200 {
		if d := big.Next(); d <= 0 {
			t.Fatalf("overflow: %v", d)
		}
	}
}
