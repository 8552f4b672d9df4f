package nut

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// UPS is one item of LIST UPS.
type UPS struct {
	Name string
	// Description is desc= from ups.conf; upsd sends "Description
	// unavailable" when there is none.
	Description string
}

// Var is one item of LIST VAR or LIST RW.
type Var struct {
	Name  string
	Value string
}

// Cmd is one item of LIST CMD.
type Cmd struct {
	Name string
}

// Range is one item of LIST RANGE: the inclusive bounds of an allowed
// interval, as sent (upsd sends integers).
type Range struct {
	Min, Max string
}

// VarType is the reply to GET TYPE.
type VarType struct {
	RW    bool // writable with SetVar
	Enum  bool // values restricted to ListEnum
	Range bool // values restricted to ListRange
	// StringMax is n of "STRING:n" (a string of at most n bytes), 0 for
	// other types.
	StringMax int
	Number    bool     // "NUMBER": numeric
	Words     []string // the type words as sent, e.g. ["RW", "STRING:64"]
}

// command sends one command and checks its single-line reply with check,
// which sees the reply words in c.tok. ERR replies are returned as *Error.
func (c *Client) command(ctx context.Context, o op, check func() error, words ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commandLocked(ctx, o, check, words...)
}

func (c *Client) commandLocked(ctx context.Context, o op, check func() error, words ...string) error {
	req, err := appendCommand(c.wbuf[:0], words...)
	c.wbuf = req[:0]
	if err != nil {
		return fmt.Errorf("nut: %s: %w", o, err)
	}
	return c.exchange(ctx, o, req, func() error {
		if err := c.readWords(); err != nil {
			return err
		}
		if err := c.errReply(); err != nil {
			return err
		}
		return check()
	})
}

// okReply accepts a reply whose first word is OK ("OK", "OK FSD-SET", …).
func (c *Client) okReply() error {
	if c.tok.is(0, "OK") {
		return nil
	}
	return c.unexpected()
}

// okTracking accepts "OK" or "OK TRACKING <id>" and stores the id.
func (c *Client) okTracking(id *string) func() error {
	return func() error {
		switch {
		case c.tok.n() == 1 && c.tok.is(0, "OK"):
			return nil
		case c.tok.n() == 3 && c.tok.is(0, "OK") && c.tok.is(1, "TRACKING") && len(c.tok.word(2)) > 0:
			*id = string(c.tok.word(2))
			if !sendable(*id) {
				return protoErr("unusable tracking id in %s", excerpt(c.line))
			}
			return nil
		}
		return c.unexpected()
	}
}

// Username sends USERNAME. upsd only checks credentials later, at LOGIN,
// PRIMARY, FSD, SET or INSTCMD.
func (c *Client) Username(ctx context.Context, user string) error {
	return c.command(ctx, op{verb: "USERNAME", a: user}, c.okReply, "USERNAME", user)
}

// Password sends PASSWORD. The password never appears in an error. upsd
// answers OK even to a wrong password; it is refused later with
// ErrAccessDenied.
func (c *Client) Password(ctx context.Context, pass string) error {
	return c.command(ctx, op{verb: "PASSWORD"}, c.okReply, "PASSWORD", pass)
}

// Login sends LOGIN: this machine draws power from ups. The login lasts
// until LOGOUT or the connection closes; it is what NUMLOGINS counts.
func (c *Client) Login(ctx context.Context, ups string) error {
	return c.command(ctx, op{verb: "LOGIN", a: ups}, c.okReply, "LOGIN", ups)
}

// Primary claims primary (formerly "master") rights on ups. It sends
// PRIMARY and, when the server does not know it (upsd before 2.8.0 answers
// ERR UNKNOWN-COMMAND; INVALID-ARGUMENT is also taken as "unknown"), MASTER.
// It accepts "OK", "OK PRIMARY-GRANTED" and "OK MASTER-GRANTED".
func (c *Client) Primary(ctx context.Context, ups string) error {
	err := c.command(ctx, op{verb: "PRIMARY", a: ups}, c.okReply, "PRIMARY", ups)
	if errors.Is(err, ErrUnknownCommand) || errors.Is(err, ErrInvalidArgument) {
		return c.command(ctx, op{verb: "MASTER", a: ups}, c.okReply, "MASTER", ups)
	}
	return err
}

// FSD sets the forced-shutdown flag on ups ("OK FSD-SET"). In upsd the flag
// is a latch: only a restart of upsd clears it.
func (c *Client) FSD(ctx context.Context, ups string) error {
	return c.command(ctx, op{verb: "FSD", a: ups}, c.okReply, "FSD", ups)
}

// Logout sends LOGOUT, accepts "OK Goodbye" (any OK, or the "Goodbye..." of
// old servers) and closes the connection, whatever the reply.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.commandLocked(ctx, op{verb: "LOGOUT"}, func() error {
		if c.tok.is(0, "OK") || c.tok.n() > 0 && bytes.HasPrefix(c.tok.word(0), []byte("Goodbye")) {
			return nil
		}
		return c.unexpected()
	}, "LOGOUT")
	c.shut(errors.New("logged out"))
	return err
}

// Get returns the value of one variable (GET VAR).
func (c *Client) Get(ctx context.Context, ups, name string) (string, error) {
	var val string
	err := c.command(ctx, op{verb: "GET VAR", a: ups, b: name}, func() error {
		if c.tok.n() != 4 || !c.tok.is(0, "VAR") || !c.tok.isFold(1, ups) || !c.tok.isFold(2, name) {
			return c.unexpected()
		}
		val = string(c.tok.word(3))
		return nil
	}, "GET", "VAR", ups, name)
	return val, err
}

// GetVars reads several variables in one round trip: all GET VAR lines go
// out in one write, then the replies are read in order. Variables the UPS
// does not have (ERR VAR-NOT-SUPPORTED) are left out of the map. Any other
// ERR (the first one) is returned, after all replies have been read so the
// connection stays in step. Duplicate names are fine.
func (c *Client) GetVars(ctx context.Context, ups string, names ...string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	if len(names) == 0 {
		return out, nil
	}
	o := op{verb: "GET VAR", a: ups, b: "(pipelined)"}
	c.mu.Lock()
	defer c.mu.Unlock()
	req := c.wbuf[:0]
	for _, n := range names {
		var err error
		if req, err = appendCommand(req, "GET", "VAR", ups, n); err != nil {
			c.wbuf = req[:0]
			return nil, fmt.Errorf("nut: GET VAR %s %s: %w", ups, n, err)
		}
	}
	c.wbuf = req[:0]
	var firstErr error
	err := c.exchange(ctx, o, req, func() error {
		for _, n := range names {
			if err := c.readWords(); err != nil {
				return err
			}
			if c.tok.is(0, "ERR") {
				if c.tok.n() < 2 || len(c.tok.word(1)) == 0 {
					return protoErr("ERR without a code")
				}
				if !c.tok.is(1, "VAR-NOT-SUPPORTED") && firstErr == nil {
					firstErr = fmt.Errorf("nut: GET VAR %s %s: %w", ups, n, parseErr(c.tok.words()))
				}
				continue
			}
			if c.tok.n() != 4 || !c.tok.is(0, "VAR") || !c.tok.isFold(1, ups) || !c.tok.isFold(2, n) {
				return c.unexpected()
			}
			out[n] = string(c.tok.word(3))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// NumLogins returns how many clients are logged in to ups (GET NUMLOGINS).
func (c *Client) NumLogins(ctx context.Context, ups string) (int, error) {
	var n int
	err := c.command(ctx, op{verb: "GET NUMLOGINS", a: ups}, func() error {
		if c.tok.n() != 3 || !c.tok.is(0, "NUMLOGINS") || !c.tok.isFold(1, ups) {
			return c.unexpected()
		}
		v, err := strconv.Atoi(string(c.tok.word(2)))
		if err != nil || v < 0 {
			return protoErr("NUMLOGINS is not a count: %s", excerpt(c.line))
		}
		n = v
		return nil
	}, "GET", "NUMLOGINS", ups)
	return n, err
}

// UPSDesc returns the description of ups (GET UPSDESC); upsd sends
// "Unavailable" when there is none.
func (c *Client) UPSDesc(ctx context.Context, ups string) (string, error) {
	var d string
	err := c.command(ctx, op{verb: "GET UPSDESC", a: ups}, func() error {
		if c.tok.n() != 3 || !c.tok.is(0, "UPSDESC") || !c.tok.isFold(1, ups) {
			return c.unexpected()
		}
		d = string(c.tok.word(2))
		return nil
	}, "GET", "UPSDESC", ups)
	return d, err
}

// VarType returns the type of a variable (GET TYPE).
func (c *Client) VarType(ctx context.Context, ups, name string) (VarType, error) {
	var t VarType
	err := c.command(ctx, op{verb: "GET TYPE", a: ups, b: name}, func() error {
		if c.tok.n() < 4 || !c.tok.is(0, "TYPE") || !c.tok.isFold(1, ups) || !c.tok.isFold(2, name) {
			return c.unexpected()
		}
		t.Words = c.tok.words()[3:]
		for _, w := range t.Words {
			switch {
			case w == "RW":
				t.RW = true
			case w == "ENUM":
				t.Enum = true
			case w == "RANGE":
				t.Range = true
			case w == "NUMBER":
				t.Number = true
			case strings.HasPrefix(w, "STRING:"):
				n, err := strconv.Atoi(w[len("STRING:"):])
				if err != nil || n < 0 {
					return protoErr("bad STRING length in %s", excerpt(c.line))
				}
				t.StringMax = n
			}
		}
		return nil
	}, "GET", "TYPE", ups, name)
	return t, err
}

// VarDesc returns the description of a variable (GET DESC).
func (c *Client) VarDesc(ctx context.Context, ups, name string) (string, error) {
	return c.desc(ctx, "DESC", ups, name)
}

// CmdDesc returns the description of an instant command (GET CMDDESC).
func (c *Client) CmdDesc(ctx context.Context, ups, cmd string) (string, error) {
	return c.desc(ctx, "CMDDESC", ups, cmd)
}

func (c *Client) desc(ctx context.Context, kind, ups, name string) (string, error) {
	var d string
	err := c.command(ctx, op{verb: "GET " + kind, a: ups, b: name}, func() error {
		if c.tok.n() != 4 || !c.tok.is(0, kind) || !c.tok.isFold(1, ups) || !c.tok.isFold(2, name) {
			return c.unexpected()
		}
		d = string(c.tok.word(3))
		return nil
	}, "GET", kind, ups, name)
	return d, err
}

// SetVar sets a writable variable (SET VAR). When TRACKING is on for this
// connection (after an InstCmd), it waits for the driver's result like
// InstCmd does.
func (c *Client) SetVar(ctx context.Context, ups, name, value string) error {
	o := op{verb: "SET VAR", a: ups, b: name}
	var id string
	if err := c.command(ctx, o, c.okTracking(&id), "SET", "VAR", ups, name, value); err != nil {
		return err
	}
	if id == "" {
		return nil
	}
	return c.waitTracking(ctx, o, id)
}

// InstCmd runs an instant command on ups, with an optional parameter
// (value "" sends none). It turns TRACKING on for the connection the first
// time (SET TRACKING ON), then polls GET TRACKING every TrackingInterval
// until the driver reports SUCCESS (nil) or an error (ErrTrackingFailed,
// ErrInvalidArgument, ErrTrackingUnknown, …); PENDING means wait. ctx
// bounds the wait. A server without tracking (one that refuses SET
// TRACKING) gets a plain INSTCMD, and its OK counts as done.
func (c *Client) InstCmd(ctx context.Context, ups, cmd, value string) error {
	o := op{verb: "INSTCMD", a: ups, b: cmd}
	words := []string{"INSTCMD", ups, cmd}
	if value != "" {
		words = append(words, value)
	}
	var id string
	c.mu.Lock()
	if c.tracking == 0 {
		err := c.commandLocked(ctx, op{verb: "SET TRACKING ON"}, c.okReply, "SET", "TRACKING", "ON")
		switch {
		case err == nil:
			c.tracking = trackingOn
		case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrUnknownCommand),
			errors.Is(err, ErrFeatureNotSupported), errors.Is(err, ErrFeatureNotConfigured):
			c.tracking = trackingOff
		default:
			c.mu.Unlock()
			return err
		}
	}
	err := c.commandLocked(ctx, o, c.okTracking(&id), words...)
	c.mu.Unlock()
	if err != nil || id == "" {
		return err
	}
	return c.waitTracking(ctx, o, id)
}

// waitTracking polls GET TRACKING id until the result is known. The lock
// is only held for each poll, so other commands run in between.
func (c *Client) waitTracking(ctx context.Context, o op, id string) error {
	po := op{verb: o.String() + ": GET TRACKING", a: id}
	for {
		pending := false
		err := c.command(ctx, po, func() error {
			switch {
			case c.tok.n() == 1 && c.tok.is(0, "SUCCESS"):
				return nil
			case c.tok.n() == 1 && c.tok.is(0, "PENDING"):
				pending = true
				return nil
			}
			return c.unexpected()
		}, "GET", "TRACKING", id)
		if err != nil || !pending {
			return err
		}
		t := time.NewTimer(c.opts.TrackingInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("nut: %s: waiting for tracking %s: %w", o, id, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// rawLine sends a command whose reply is free text (VER, NETVER, HELP)
// and returns that line.
func (c *Client) rawLine(ctx context.Context, verb string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s string
	o := op{verb: verb}
	err := c.exchange(ctx, o, []byte(verb+"\n"), func() error {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if bytes.HasPrefix(line, []byte("ERR ")) {
			c.line = line
			if err := c.tok.split(line); err != nil {
				return protoErr("%v in %s", err, excerpt(line))
			}
			return c.errReply()
		}
		s = string(line)
		return nil
	})
	return s, err
}

// Version returns the server's version line (VER), e.g. "Network UPS
// Tools upsd 2.8.0 - https://www.networkupstools.org/".
func (c *Client) Version(ctx context.Context) (string, error) { return c.rawLine(ctx, "VER") }

// NetVersion returns the protocol version (NETVER), "1.3" for NUT 2.8.
func (c *Client) NetVersion(ctx context.Context) (string, error) { return c.rawLine(ctx, "NETVER") }

// Help returns the server's HELP line (the commands it knows).
func (c *Client) Help(ctx context.Context) (string, error) { return c.rawLine(ctx, "HELP") }

// list runs LIST <query...> and calls item for each item line. An item
// line is the query echoed (type word, then UPS and variable names) and
// then `fields` words, found in c.tok from index len(query).
func (c *Client) list(ctx context.Context, query []string, fields int, item func(base int)) error {
	o := op{verb: "LIST " + strings.Join(query, " ")}
	c.mu.Lock()
	defer c.mu.Unlock()
	req := append(c.wbuf[:0], "LIST "...)
	var err error
	req, err = appendCommand(req, query...)
	c.wbuf = req[:0]
	if err != nil {
		return fmt.Errorf("nut: %s: %w", o, err)
	}
	return c.exchange(ctx, o, req, func() error {
		if err := c.readWords(); err != nil {
			return err
		}
		if err := c.errReply(); err != nil {
			return err
		}
		if c.tok.n() != 2+len(query) || !c.tok.is(0, "BEGIN") || !c.tok.is(1, "LIST") || !c.matchQuery(2, query, false) {
			return c.unexpected()
		}
		count := 0
		for {
			if err := c.readWords(); err != nil {
				return err
			}
			if c.tok.is(0, "END") {
				if c.tok.n() != 2+len(query) || !c.tok.is(1, "LIST") || !c.matchQuery(2, query, true) {
					return protoErr("BEGIN/END LIST mismatch: %s", excerpt(c.line))
				}
				return nil
			}
			if c.tok.n() != len(query)+fields || !c.matchQuery(0, query, false) {
				return protoErr("unexpected line in LIST %s: %s", query[0], excerpt(c.line))
			}
			count++
			if count > c.opts.MaxListItems {
				return protoErr("LIST %s has more than %d items", query[0], c.opts.MaxListItems)
			}
			item(len(query))
		}
	})
}

// matchQuery reports whether the words from start echo the query: the type
// word exactly, the names case-insensitively. With end set, a RANGE list
// may end with "END LIST ENUM", as upsd did before the fix of that typo.
func (c *Client) matchQuery(start int, query []string, end bool) bool {
	if !c.tok.is(start, query[0]) && !(end && query[0] == "RANGE" && c.tok.is(start, "ENUM")) {
		return false
	}
	for i := 1; i < len(query); i++ {
		if !c.tok.isFold(start+i, query[i]) {
			return false
		}
	}
	return true
}

// ListUPS lists the UPSes the server knows (LIST UPS).
func (c *Client) ListUPS(ctx context.Context) ([]UPS, error) {
	var out []UPS
	err := c.list(ctx, []string{"UPS"}, 2, func(b int) {
		out = append(out, UPS{Name: string(c.tok.word(b)), Description: string(c.tok.word(b + 1))})
	})
	return nilOnErr(out, err)
}

// ListVar lists all variables of ups with their values (LIST VAR).
func (c *Client) ListVar(ctx context.Context, ups string) ([]Var, error) {
	return c.listVars(ctx, "VAR", ups)
}

// ListRW lists the writable variables of ups (LIST RW).
func (c *Client) ListRW(ctx context.Context, ups string) ([]Var, error) {
	return c.listVars(ctx, "RW", ups)
}

func (c *Client) listVars(ctx context.Context, kind, ups string) ([]Var, error) {
	var out []Var
	err := c.list(ctx, []string{kind, ups}, 2, func(b int) {
		out = append(out, Var{Name: string(c.tok.word(b)), Value: string(c.tok.word(b + 1))})
	})
	return nilOnErr(out, err)
}

// ListCmd lists the instant commands of ups (LIST CMD).
func (c *Client) ListCmd(ctx context.Context, ups string) ([]Cmd, error) {
	var out []Cmd
	err := c.list(ctx, []string{"CMD", ups}, 1, func(b int) {
		out = append(out, Cmd{Name: string(c.tok.word(b))})
	})
	return nilOnErr(out, err)
}

// ListClient lists the addresses of the clients logged in to ups, one per
// LOGIN (LIST CLIENT).
func (c *Client) ListClient(ctx context.Context, ups string) ([]string, error) {
	return c.listStrings(ctx, []string{"CLIENT", ups})
}

// ListEnum lists the allowed values of an enumerated variable (LIST ENUM).
func (c *Client) ListEnum(ctx context.Context, ups, name string) ([]string, error) {
	return c.listStrings(ctx, []string{"ENUM", ups, name})
}

func (c *Client) listStrings(ctx context.Context, query []string) ([]string, error) {
	var out []string
	err := c.list(ctx, query, 1, func(b int) {
		out = append(out, string(c.tok.word(b)))
	})
	return nilOnErr(out, err)
}

// ListRange lists the allowed ranges of a variable (LIST RANGE).
func (c *Client) ListRange(ctx context.Context, ups, name string) ([]Range, error) {
	var out []Range
	err := c.list(ctx, []string{"RANGE", ups, name}, 2, func(b int) {
		out = append(out, Range{Min: string(c.tok.word(b)), Max: string(c.tok.word(b + 1))})
	})
	return nilOnErr(out, err)
}

func nilOnErr[T any](v []T, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []T{}
	}
	return v, nil
}
