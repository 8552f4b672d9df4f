package nut

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPort is the IANA port of the NUT network protocol.
const DefaultPort = "3493"

// Defaults used for zero Options fields.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultReadTimeout      = 5 * time.Second
	DefaultMaxLineLength    = 1024
	DefaultMaxListItems     = 100000
	DefaultTrackingInterval = 200 * time.Millisecond
)

// Options configure a Client. The zero value is usable: plain TCP and the
// defaults above.
type Options struct {
	// DialTimeout bounds the TCP connect plus, with TLS, STARTTLS and the
	// handshake. The context passed to Dial bounds it too.
	DialTimeout time.Duration
	// ReadTimeout bounds each command: writing it and reading its whole
	// reply (all lines of a LIST). A server that never answers, or
	// trickles bytes, fails the command after this long. A context
	// deadline that comes earlier wins.
	ReadTimeout time.Duration
	// MaxLineLength is the longest reply line accepted, in bytes without
	// the line ending; a longer line is a protocol error.
	MaxLineLength int
	// MaxListItems is the most items accepted in one LIST reply.
	MaxListItems int
	// TrackingInterval is the pause between GET TRACKING polls of InstCmd
	// and SetVar.
	TrackingInterval time.Duration
	// TLS, when set, makes Dial send STARTTLS first and require TLS.
	TLS *TLSOptions
}

// TLSOptions configure STARTTLS. With TLS configured, any refusal by the
// server is an error: the client never falls back to plain text.
type TLSOptions struct {
	// CAFile is a PEM file with the CA certificate(s) that must have
	// signed the server certificate. Empty: the system roots, unless
	// Fingerprint is set.
	CAFile string
	// ServerName is the name the certificate must be valid for. Empty:
	// the host part of the address given to Dial. An IP address is checked
	// against the certificate's IP SANs.
	ServerName string
	// Fingerprint pins the server's leaf certificate: "sha256:" followed
	// by 64 hex digits, colons allowed, any case. With a pin and no
	// CAFile, the pin replaces chain and name verification; with both,
	// both are checked.
	Fingerprint string
	// Certificates are client certificates, for servers that request one
	// (upsd CERTREQUEST).
	Certificates []tls.Certificate
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.MaxListItems <= 0 {
		o.MaxListItems = DefaultMaxListItems
	}
	if o.TrackingInterval <= 0 {
		o.TrackingInterval = DefaultTrackingInterval
	}
	return o
}

// Client is one connection to a NUT server. It is safe for concurrent use:
// commands are serialized, one at a time on the wire.
//
// An ERR reply is returned as an *Error and leaves the connection usable. A
// transport or protocol error closes the connection; every later call then
// returns an error matching ErrClosed, and the caller dials again (see
// Backoff).
type Client struct {
	mu   sync.Mutex // serializes commands; guards the fields below it
	nc   net.Conn   // *tls.Conn after STARTTLS
	br   *bufio.Reader
	tok  tokenizer
	line []byte // the last line read, valid until the next read
	wbuf []byte
	// tracking is the connection's TRACKING state: 0 not asked yet,
	// trackingOn, or trackingOff when the server refused it.
	tracking int
	tlsState *tls.ConnectionState

	raw       net.Conn // the TCP connection, closed by Close
	opts      Options
	closed    atomic.Bool
	closeOnce sync.Once
	cause     atomic.Pointer[error] // why the connection was closed
}

const (
	trackingOn  = 1
	trackingOff = -1
)

// Dial connects to the NUT server at addr ("host:port"; the port defaults
// to 3493) and, when opts.TLS is set, upgrades the connection with
// STARTTLS before anything else is sent.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	host, hostport := splitAddr(addr)

	var tlsConfig *tls.Config
	if opts.TLS != nil {
		cfg, err := opts.TLS.config(host)
		if err != nil {
			return nil, fmt.Errorf("nut: STARTTLS %s: %w: %w", hostport, ErrTLS, err)
		}
		tlsConfig = cfg
	}

	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", hostport)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("nut: dial %s: %w", hostport, context.Cause(ctx))
		}
		return nil, fmt.Errorf("nut: dial %s: %w: %w", hostport, ErrTransport, err)
	}
	c := &Client{nc: nc, raw: nc, opts: opts}
	c.br = bufio.NewReaderSize(nc, c.bufSize())
	if tlsConfig != nil {
		if err := c.startTLS(dctx, hostport, tlsConfig); err != nil {
			c.shut(err)
			return nil, err
		}
	}
	return c, nil
}

// splitAddr returns the host and a host:port with the default port added
// when addr has none.
func splitAddr(addr string) (host, hostport string) {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h, addr
	}
	h := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	return h, net.JoinHostPort(h, DefaultPort)
}

func (c *Client) bufSize() int {
	return max(c.opts.MaxLineLength+2, 16)
}

func (t *TLSOptions) config(host string) (*tls.Config, error) {
	name := t.ServerName
	if name == "" {
		name = host
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ServerName:   name,
		Certificates: t.Certificates,
	}
	var roots *x509.CertPool
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", t.CAFile)
		}
		cfg.RootCAs = roots
	}
	if t.Fingerprint == "" {
		return cfg, nil
	}
	want, err := parseFingerprint(t.Fingerprint)
	if err != nil {
		return nil, err
	}
	// The pin replaces the standard verification, which is therefore
	// switched off here and redone in VerifyConnection: the pin always,
	// the chain and name too when a CA file is given.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		leaf := cs.PeerCertificates[0]
		got := sha256.Sum256(leaf.Raw)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: server certificate is sha256:%s", ErrFingerprintMismatch, strings.ToUpper(hex.EncodeToString(got[:])))
		}
		if roots == nil {
			return nil
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
		return err
	}
	return cfg, nil
}

// parseFingerprint parses "sha256:AB:CD:..." (prefix optional, colons
// optional, any case) into 32 bytes.
func parseFingerprint(s string) ([]byte, error) {
	f := strings.TrimSpace(s)
	if len(f) >= 7 && strings.EqualFold(f[:7], "sha256:") {
		f = f[7:]
	} else if i := strings.IndexByte(f, ':'); i > 0 && !isHex(f[:i]) {
		return nil, fmt.Errorf("fingerprint: only sha256 is supported")
	}
	f = strings.ReplaceAll(f, ":", "")
	b, err := hex.DecodeString(f)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("fingerprint: want sha256: and 64 hex digits")
	}
	return b, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func (c *Client) startTLS(ctx context.Context, hostport string, cfg *tls.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := op{verb: "STARTTLS"}
	err := c.exchange(ctx, o, []byte("STARTTLS\n"), func() error {
		if err := c.readWords(); err != nil {
			return err
		}
		if e := c.errReply(); e != nil {
			return e
		}
		if c.tok.n() != 2 || !c.tok.is(0, "OK") || !c.tok.is(1, "STARTTLS") {
			return c.unexpected()
		}
		if c.br.Buffered() > 0 {
			// Bytes after "OK STARTTLS" and before the handshake would be
			// read as if they had come over TLS: refuse them.
			return protoErr("data after OK STARTTLS before the TLS handshake")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w (%w: not falling back to plain text)", err, ErrTLS)
	}
	tc := tls.Client(c.raw, cfg)
	if d, ok := ctx.Deadline(); ok {
		_ = c.raw.SetDeadline(d)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nut: STARTTLS %s: %w: handshake: %w", hostport, ErrTLS, err)
	}
	_ = c.raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tlsState = &st
	c.nc = tc
	c.br = bufio.NewReaderSize(tc, c.bufSize())
	return nil
}

// TLSConnectionState returns the TLS state, and false for a plain-text
// connection.
func (c *Client) TLSConnectionState() (tls.ConnectionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tlsState, true
}

// RemoteAddr returns the server's address.
func (c *Client) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// Close closes the connection at once, without LOGOUT (use Logout for a
// graceful end). A command in progress fails. Close is idempotent.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		e := error(errors.New("closed by the client"))
		c.cause.Store(&e)
		c.closed.Store(true)
		err = c.raw.Close()
	})
	return err
}

// Closed reports whether the connection is closed.
func (c *Client) Closed() bool { return c.closed.Load() }

// shut closes the connection after a fatal error.
func (c *Client) shut(cause error) {
	c.closeOnce.Do(func() {
		c.cause.Store(&cause)
		c.closed.Store(true)
		_ = c.raw.Close()
	})
}

// op names a command in error messages. It never holds a password.
type op struct {
	verb string
	a, b string
}

func (o op) String() string {
	s := o.verb
	if o.a != "" {
		s += " " + o.a
	}
	if o.b != "" {
		s += " " + o.b
	}
	return s
}

type protocolError struct{ msg string }

func (e *protocolError) Error() string        { return ErrProtocol.Error() + ": " + e.msg }
func (e *protocolError) Is(target error) bool { return target == ErrProtocol }

func protoErr(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// exchange writes req and runs read to consume the reply, under the
// command deadline and ctx. The caller holds c.mu. ERR replies (an *Error
// returned by read) keep the connection; any other error closes it.
func (c *Client) exchange(ctx context.Context, o op, req []byte, read func() error) error {
	if c.closed.Load() {
		return c.closedErr(o)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nut: %s: %w", o, context.Cause(ctx))
	}
	deadline := time.Now().Add(c.opts.ReadTimeout)
	ctxDeadline := false // the deadline is the context's, not ReadTimeout
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		if c.closed.Load() {
			return c.closedErr(o)
		}
		err = fmt.Errorf("nut: %s: %w: %w", o, ErrTransport, err)
		c.shut(err)
		return err
	}
	if c.br.Buffered() > 0 {
		// Every reply has been read in full, so these bytes came unasked:
		// reading them as the next reply would pair answers with the wrong
		// questions.
		err := fmt.Errorf("nut: %s: %w", o, protoErr("unsolicited data from the server: %s", excerpt(peek(c.br))))
		c.shut(err)
		return err
	}
	var fired chan struct{}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			_ = c.raw.SetDeadline(aLongTimeAgo)
			close(fired)
		})
	}

	_, err := c.nc.Write(req)
	if err == nil {
		err = read()
	}

	interrupted := false
	if !stop() {
		<-fired // the deadline was moved into the past; wait until it is done
		interrupted = true
	}
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return fmt.Errorf("nut: %s: %w", o, err)
	}
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		err = fmt.Errorf("nut: %s: %w", o, err)
	case interrupted || ctx.Err() != nil && isTimeout(err):
		err = fmt.Errorf("nut: %s: interrupted: %w", o, context.Cause(ctx))
	case ctxDeadline && isTimeout(err):
		// The context's deadline passed, a moment before its timer fired.
		err = fmt.Errorf("nut: %s: interrupted: %w", o, context.DeadlineExceeded)
	case isTimeout(err):
		err = fmt.Errorf("nut: %s: %w after %s", o, ErrTimeout, c.opts.ReadTimeout)
	case c.closed.Load():
		return c.closedErr(o)
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("nut: %s: %w: server closed the connection", o, ErrTransport)
	default:
		err = fmt.Errorf("nut: %s: %w: %w", o, ErrTransport, err)
	}
	c.shut(err)
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func (c *Client) closedErr(o op) error {
	if p := c.cause.Load(); p != nil {
		return fmt.Errorf("nut: %s: %w (%v)", o, ErrClosed, *p)
	}
	return fmt.Errorf("nut: %s: %w", o, ErrClosed)
}

// readLine returns the next line without its line ending. The slice is
// valid until the next read.
func (c *Client) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, protoErr("line longer than %d bytes", c.opts.MaxLineLength)
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > c.opts.MaxLineLength {
		return nil, protoErr("line longer than %d bytes", c.opts.MaxLineLength)
	}
	return line, nil
}

// readWords reads the next line and splits it into c.tok.
func (c *Client) readWords() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	c.line = line
	if err := c.tok.split(line); err != nil {
		return protoErr("%v in %s", err, excerpt(line))
	}
	return nil
}

// errReply returns the *Error when the current line is an ERR reply. An
// ERR line without a code is a protocol error.
func (c *Client) errReply() error {
	if !c.tok.is(0, "ERR") {
		return nil
	}
	e := parseErr(c.tok.words())
	if e == nil {
		return protoErr("ERR without a code")
	}
	return e
}

func (c *Client) unexpected() error {
	return protoErr("unexpected reply %s", excerpt(c.line))
}

func peek(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// excerpt quotes at most 80 bytes of a line for an error message.
func excerpt(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q...", b[:80])
	}
	return fmt.Sprintf("%q", b)
}
