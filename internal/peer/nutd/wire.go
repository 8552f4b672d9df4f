package nutd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// wire is the harness's own minimal line reader over a NUT connection, used
// for readiness checks and the harness tests. It is deliberately not a NUT
// client: one command, one answer line. The real client is internal/nut.
type wire struct {
	conn net.Conn
	r    *bufio.Reader
}

const maxLine = 64 << 10

func dialWire(addr string, timeout time.Duration) (*wire, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &wire{conn: c, r: bufio.NewReader(c)}, nil
}

func (w *wire) close() { _ = w.conn.Close() }

// cmd sends one line and reads one answer line (without the newline).
func (w *wire) cmd(line string, timeout time.Duration) (string, error) {
	if err := w.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", fmt.Errorf("%s: %w", verb(line), err)
	}
	if _, err := w.conn.Write([]byte(line + "\n")); err != nil {
		return "", fmt.Errorf("%s: %w", verb(line), err)
	}
	ans, err := w.readLine()
	if err != nil {
		return "", fmt.Errorf("%s: %w", verb(line), err)
	}
	return ans, nil
}

func (w *wire) readLine() (string, error) {
	var b strings.Builder
	for {
		frag, more, err := w.r.ReadLine()
		if err != nil {
			return "", err
		}
		b.Write(frag)
		if b.Len() > maxLine {
			return "", errors.New("answer line too long")
		}
		if !more {
			return b.String(), nil
		}
	}
}

// startTLS sends STARTTLS and, on "OK STARTTLS", runs the TLS handshake with
// cfg; the wire then speaks over TLS.
func (w *wire) startTLS(cfg *tls.Config, timeout time.Duration) error {
	ans, err := w.cmd("STARTTLS", timeout)
	if err != nil {
		return err
	}
	if ans != "OK STARTTLS" {
		return fmt.Errorf("STARTTLS: server answered %q", ans)
	}
	if w.r.Buffered() > 0 {
		return errors.New("STARTTLS: unexpected data before the handshake")
	}
	tc := tls.Client(w.conn, cfg)
	if err := tc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	w.conn = tc
	w.r = bufio.NewReader(tc)
	return nil
}

// getVar asks GET VAR and returns the value, or the server's answer as an
// error (e.g. "ERR DATA-STALE").
func (w *wire) getVar(ups, name string, timeout time.Duration) (string, error) {
	ans, err := w.cmd("GET VAR "+ups+" "+name, timeout)
	if err != nil {
		return "", err
	}
	prefix := "VAR " + ups + " " + name + " "
	if !strings.HasPrefix(ans, prefix) {
		return "", &answerError{Answer: ans}
	}
	v, ok := unquote(ans[len(prefix):])
	if !ok {
		return "", fmt.Errorf("GET VAR %s %s: malformed answer %q", ups, name, ans)
	}
	return v, nil
}

// answerError is an answer other than the one expected (typically "ERR …").
type answerError struct{ Answer string }

func (e *answerError) Error() string { return "server answered " + e.Answer }

// unquote reads a NUT quoted string ("…" with \" and \\ escapes).
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	s = s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			if i+1 == len(s) {
				return "", false
			}
			i++
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// verb names a command line in errors, hiding a PASSWORD's argument.
func verb(line string) string {
	if strings.HasPrefix(line, "PASSWORD") {
		return "PASSWORD"
	}
	return line
}
