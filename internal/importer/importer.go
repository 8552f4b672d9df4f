// Package importer turns the configuration of another UPS client into a
// sundown config: NUT's upsmon.conf, or the UserVars of NutClient-ESXi (the
// NUT client packaged for VMware ESXi) as `esxcli system settings advanced
// list` or `esxcfg-advcfg -g` print them.
//
// What maps onto sundown is written to the YAML, each key with a comment
// naming the line it came from. What does not is returned as a Warning with
// its line number, never dropped silently. Passwords in the input are never
// written anywhere: the YAML names a password_file the admin fills in, and
// warnings name directives, never the lines' text.
package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Format is the kind of input.
type Format string

// Formats.
const (
	// Auto recognises NutClient-ESXi UserVars by their names, else reads upsmon.conf.
	Auto   Format = "auto"
	Upsmon Format = "upsmon"
	ESXi   Format = "esxi"
)

// DefaultPasswordDir is where the generated config expects password files.
const DefaultPasswordDir = "/etc/sundown"

// Options tune an import.
type Options struct {
	Format Format // Auto when empty
	// PasswordDir is the folder of the password files the YAML names
	// (DIR/UPS.password). DefaultPasswordDir when empty.
	PasswordDir string
	// Source names the input in the YAML's header comment (a file name).
	Source string
}

// Warning is something of the input sundown's config does not express.
type Warning struct {
	Line      int    // 1-based; 0 when it concerns the whole input
	Directive string // e.g. "NOTIFYCMD" or "NutMailTo"
	Msg       string
}

func (w Warning) String() string {
	var b strings.Builder
	if w.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", w.Line)
	}
	if w.Directive != "" {
		b.WriteString(w.Directive + ": ")
	}
	b.WriteString(w.Msg)
	return b.String()
}

// PasswordFile is a file the admin must create for the config to load.
type PasswordFile struct {
	UPS  string
	Path string
}

// Result is an import's outcome.
type Result struct {
	Format        Format // the format read (never Auto)
	YAML          []byte
	Warnings      []Warning
	PasswordFiles []PasswordFile
}

// ErrNoUPS means the input named no UPS to monitor.
var ErrNoUPS = errors.New("no UPS found")

// Import reads a config of another client from r and returns the sundown
// config it amounts to.
func Import(r io.Reader, opts Options) (*Result, error) {
	data, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("import: read: %w", err)
	}
	if opts.PasswordDir == "" {
		opts.PasswordDir = DefaultPasswordDir
	}
	f := opts.Format
	switch f {
	case "", Auto:
		f = Detect(data)
	case Upsmon, ESXi:
	default:
		return nil, fmt.Errorf("import: unknown format %q (want auto, upsmon or esxi)", f)
	}
	var d *draft
	switch f {
	case ESXi:
		d, err = fromESXi(data)
	default:
		d, err = fromUpsmon(data)
	}
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", f, err)
	}
	if len(d.ups) == 0 {
		return &Result{Format: f, Warnings: d.warnings}, fmt.Errorf("import %s: %w", f, ErrNoUPS)
	}
	d.nameUPSes()
	res := &Result{Format: f, Warnings: d.warnings}
	for i := range d.ups {
		u := &d.ups[i]
		if u.hasPassword {
			u.passwordFile = strings.TrimRight(opts.PasswordDir, "/") + "/" + u.name + ".password"
			res.PasswordFiles = append(res.PasswordFiles, PasswordFile{UPS: u.name, Path: u.passwordFile})
		}
	}
	res.YAML, err = d.render(f, opts.Source)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", f, err)
	}
	return res, nil
}

var esxiRE = regexp.MustCompile(`(?i)(/UserVars/|UserVars\.|Value of )Nut[A-Za-z]+`)

// Detect tells NutClient-ESXi UserVars from an upsmon.conf.
func Detect(data []byte) Format {
	if esxiRE.Match(data) {
		return ESXi
	}
	return Upsmon
}

// lines splits the input into numbered lines without their line ends.
// Lines that are not UTF-8 text (control characters other than tab) come
// back empty, their numbers in bad.
func lines(data []byte) (out []string, bad []int, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if !isText(l) {
			bad = append(bad, len(out)+1)
			l = ""
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("line %d: %w", len(out)+1, err)
	}
	return out, bad, nil
}

func isText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r != '\t' && unicode.IsControl(r) {
			return false
		}
	}
	return true
}

const badLineMsg = "not UTF-8 text (control characters); line skipped"
