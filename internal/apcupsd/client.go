package apcupsd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultPort is the TCP port apcupsd's NIS listens on (IANA "apcupsd").
const DefaultPort = "3551"

// MaxRecordLen is the longest record accepted. apcupsd formats each status
// line into a 256-byte buffer and the whole answer into 4096 bytes.
const MaxRecordLen = 4096

// Defaults applied to zero Options fields.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultReadTimeout = 5 * time.Second
	DefaultMaxRecords  = 500
)

// ErrProtocol is matched (errors.Is) by every error caused by an answer that
// does not follow the NIS protocol. Retrying the same server rarely helps.
var ErrProtocol = errors.New("apcupsd protocol error")

// ErrEventsUnavailable is returned by [Events] when apcupsd has no events
// file ("Not available").
var ErrEventsUnavailable = errors.New("apcupsd events not available")

// Options tune one query. The zero value uses the defaults.
type Options struct {
	// DialTimeout bounds the TCP connect (default 5 s).
	DialTimeout time.Duration
	// ReadTimeout bounds sending the command and receiving each record of
	// the answer, header and payload together (default 5 s). A server that
	// keeps trickling can make a query last up to MaxRecords × ReadTimeout:
	// give ctx a deadline to bound the whole query.
	ReadTimeout time.Duration
	// MaxRecords is the most records an answer may have (default 500; a
	// real status answer has about 60).
	MaxRecords int
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	return o
}

// Status asks the NIS server at addr (host:port) for the UPS status, over a
// connection of its own that it closes before returning. A report whose
// CommLost is true is returned without error: apcupsd answered, but has lost
// its UPS. Errors wrap addr; protocol violations match [ErrProtocol]; a
// cancelled or expired ctx gives an error matching ctx.Err().
func Status(ctx context.Context, addr string, opts Options) (*Report, error) {
	recs, err := query(ctx, addr, "status", opts)
	if err != nil {
		return nil, fmt.Errorf("apcupsd status %s: %w", addr, err)
	}
	r, err := parseRecords(recs)
	if err != nil {
		return nil, fmt.Errorf("apcupsd status %s: %w", addr, err)
	}
	return r, nil
}

// Events returns apcupsd's recent event log lines, oldest first, without
// their line ends. It matches [ErrEventsUnavailable] when apcupsd keeps no
// events file.
func Events(ctx context.Context, addr string, opts Options) ([]string, error) {
	recs, err := query(ctx, addr, "events", opts)
	if err != nil {
		return nil, fmt.Errorf("apcupsd events %s: %w", addr, err)
	}
	var lines []string
	for _, rec := range recs {
		for line := range strings.Lines(string(rec)) {
			line = trimLineEnd(line)
			if line == "" {
				continue
			}
			if err := checkText(line); err != nil {
				return nil, fmt.Errorf("apcupsd events %s: %w", addr, err)
			}
			lines = append(lines, line)
		}
	}
	if len(lines) == 1 {
		switch lines[0] {
		case "Not available":
			return nil, fmt.Errorf("apcupsd events %s: %w", addr, ErrEventsUnavailable)
		case "Invalid command":
			return nil, fmt.Errorf("apcupsd events %s: server refused the command: %w", addr, ErrProtocol)
		}
	}
	return lines, nil
}

// query sends one command on a new connection and returns the records of
// the answer, without the terminating empty record.
func query(ctx context.Context, addr, cmd string, opts Options) (recs [][]byte, err error) {
	opts = opts.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: opts.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := newCtxConn(ctx, conn)
	defer c.close()

	if err := c.setDeadline(opts.ReadTimeout); err != nil {
		return nil, err
	}
	if _, err := conn.Write(frame(cmd)); err != nil {
		return nil, c.cause(err)
	}
	recs, err = readRecords(c, opts)
	if err != nil {
		return nil, c.cause(err)
	}
	return recs, nil
}

// frame encodes one message: 2-byte big-endian length, then the bytes.
func frame(msg string) []byte {
	b := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// recordReader is what readRecords needs: a stream, and a way to start each
// record's deadline.
type recordReader interface {
	io.Reader
	setDeadline(d time.Duration) error
}

// readRecords reads records until the zero-length terminator. Framing
// problems match ErrProtocol; transport errors are returned as they are.
func readRecords(r recordReader, opts Options) ([][]byte, error) {
	var recs [][]byte
	var hdr [2]byte
	for {
		if err := r.setDeadline(opts.ReadTimeout); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("connection closed after %d records, before the end of the answer: %w", len(recs), ErrProtocol)
			}
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n == 0 {
			return recs, nil
		}
		if n > MaxRecordLen {
			return nil, fmt.Errorf("record %d: length %d exceeds %d: %w", len(recs)+1, n, MaxRecordLen, ErrProtocol)
		}
		if len(recs) >= opts.MaxRecords {
			return nil, fmt.Errorf("answer has more than %d records: %w", opts.MaxRecords, ErrProtocol)
		}
		buf := make([]byte, n)
		if got, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("record %d truncated: %d of %d bytes: %w", len(recs)+1, got, n, ErrProtocol)
			}
			return nil, err
		}
		recs = append(recs, buf)
	}
}

// ctxConn makes a context's cancellation interrupt blocked reads and writes:
// when ctx ends, the connection's deadline is moved to the past, and no
// later setDeadline can move it forward again.
type ctxConn struct {
	net.Conn
	ctx  context.Context
	stop func() bool
	done chan struct{} // closed when the AfterFunc has run

	mu       sync.Mutex
	canceled bool
}

func newCtxConn(ctx context.Context, conn net.Conn) *ctxConn {
	c := &ctxConn{Conn: conn, ctx: ctx, done: make(chan struct{})}
	c.stop = context.AfterFunc(ctx, func() {
		defer close(c.done)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.canceled = true
		_ = c.Conn.SetDeadline(time.Unix(1, 0))
	})
	return c
}

// setDeadline starts a new read/write deadline d from now, unless ctx has
// already ended.
func (c *ctxConn) setDeadline(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled {
		return c.ctx.Err()
	}
	return c.Conn.SetDeadline(time.Now().Add(d))
}

// cause prefers the context's error when ctx ended the I/O.
func (c *ctxConn) cause(err error) error {
	c.mu.Lock()
	canceled := c.canceled
	c.mu.Unlock()
	if canceled {
		return fmt.Errorf("%w (%v)", c.ctx.Err(), err)
	}
	return err
}

// close stops the AfterFunc (waiting for it if it already started), then
// closes the connection.
func (c *ctxConn) close() {
	if !c.stop() {
		<-c.done
	}
	_ = c.Conn.Close()
}
