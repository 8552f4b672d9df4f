// Package esxissh is the provider for standalone ESXi hosts reached over SSH,
// for hosts under the free (vSphere Hypervisor) licence whose API refuses
// power operations: vim-cmd and esxcli, run in the ESXi shell, still work.
//
// The provider keeps one SSH connection to the host and opens one session
// per command (at most maxSessions at a time, below OpenSSH's default
// MaxSessions of 10). A dropped connection is dialled again before the next
// command; a command that was already sent is never sent twice. The host key
// is always verified against a known_hosts file.
//
// Commands used (ESXi 7 and 8):
//
//	vim-cmd vmsvc/getallvms                   inventory (Vmid, Name, File, Guest OS, Version, Annotation)
//	vim-cmd vmsvc/power.getstate VMID         "Powered on" / "Powered off" / "Suspended"
//	vim-cmd vmsvc/get.guest VMID              toolsRunningStatus, toolsStatus
//	vim-cmd vmsvc/get.config VMID             uuid (the BIOS UUID)
//	vim-cmd vmsvc/power.shutdown|suspend|off|on VMID
//	esxcli system maintenanceMode get|set --enable true|false [--timeout N]
//	vim-cmd hostsvc/autostartmanager/autostop (only with Config.AutoStop)
//	esxcli system shutdown poweroff --reason "sundown: power failure"
//	poweroff                                  (ShutdownHost with force)
//
// Inventory batches the per-VM reads into one command (a " ; " list with
// "echo @@sundown:ID:…" markers between the parts), since every command
// costs several round trips.
//
// Output that does not look like what ESXi prints yields a Permanent error
// naming the command, never a guess.
package esxissh

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/sshconn"
)

// DefaultTimeout bounds one command (and a dial) when Config.Timeout is zero.
const DefaultTimeout = 60 * time.Second

// DefaultPollInterval is how often WaitGuest and the power calls re-read a
// guest's power state when Config.PollInterval is zero.
const DefaultPollInterval = time.Second

// ShutdownReason is the --reason ShutdownHost gives esxcli.
const ShutdownReason = "sundown: power failure"

// maxSessions bounds concurrent sessions on the one connection.
const maxSessions = 6

// maxOutput bounds what one command may print before it is cut off as
// garbage.
const maxOutput = 4 << 20

// Config configures a Provider.
type Config struct {
	// Address is "host", "host:port" or "[v6addr]:port"; port 22 by default.
	Address string
	// User is the login on the host: root, or a local user whose role
	// allows what the provider does (see README.md).
	User string
	// KeyFile is the client's unencrypted private key.
	KeyFile string
	// KnownHostsFile holds the host's key. Required.
	KnownHostsFile string
	// HostName is the Host.ID and Host.Name in the inventory; Address when
	// empty.
	HostName string
	// AutoStop runs `vim-cmd hostsvc/autostartmanager/autostop` before the
	// host is powered off, so VMs in the host's autostart list are stopped
	// in their configured order and way.
	AutoStop bool
	// Timeout bounds each command and each dial; DefaultTimeout when zero.
	// Waiting calls (WaitGuest, the power calls that wait for a state) are
	// bounded by the caller's context only.
	Timeout time.Duration
	// PollInterval is how often power states are re-read while waiting;
	// DefaultPollInterval when zero.
	PollInterval time.Duration
	// Logger receives the provider's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Provider manages one ESXi host over SSH. It implements provider.Provider.
type Provider struct {
	ep      *sshconn.Endpoint
	id      string
	auto    bool
	timeout time.Duration
	poll    time.Duration
	log     *slog.Logger
	sem     chan struct{}

	base   context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	client *gossh.Client
	wg     sync.WaitGroup // session waiters

	dialMu sync.Mutex // one dial at a time
}

var _ provider.Provider = (*Provider)(nil)

// New checks cfg, loads the key and checks that known_hosts holds a key for
// the host. It does not connect.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	_ = ctx
	const op = "New"
	problems := sshconn.Problems(cfg.Address, cfg.User, cfg.KeyFile, cfg.KnownHostsFile)
	if cfg.Timeout < 0 {
		problems = append(problems, "timeout is negative")
	}
	if cfg.PollInterval < 0 {
		problems = append(problems, "poll interval is negative")
	}
	if len(problems) > 0 {
		return nil, provider.NewError(op, cfg.Address, provider.Permanent, "invalid config: "+strings.Join(problems, "; "))
	}
	id := cfg.HostName
	if id == "" {
		id = cfg.Address
	}
	ep, err := sshconn.NewEndpoint(cfg.Address, cfg.User, cfg.KeyFile, cfg.KnownHostsFile)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: id, Class: provider.Permanent, Err: err}
	}
	p := &Provider{
		ep: ep, id: id,
		auto: cfg.AutoStop, timeout: cfg.Timeout, poll: cfg.PollInterval, log: cfg.Logger,
		sem: make(chan struct{}, maxSessions),
	}
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	if p.poll == 0 {
		p.poll = DefaultPollInterval
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.base, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// ---- connection and commands ----

// begin checks the provider is open and returns ctx tied to Close.
func (p *Provider) begin(ctx context.Context, op, target string) (context.Context, func(), error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, nil, provider.NewError(op, target, provider.Permanent, "provider closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: err}
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.base, cancel)
	return cctx, func() { stop(); cancel() }, nil
}

// failure classifies a connection-level failure (see sshconn.Failure).
func (p *Provider) failure(callerCtx context.Context, op, target string, err error) error {
	return sshconn.Failure(callerCtx, p.isClosed(), op, target, err)
}

// getClient returns the cached connection or dials a new one.
func (p *Provider) getClient(ctx, callerCtx context.Context, op, target string) (*gossh.Client, error) {
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	p.mu.Lock()
	c, closed := p.client, p.closed
	p.mu.Unlock()
	if closed {
		return nil, provider.NewError(op, target, provider.Permanent, "provider closed")
	}
	if c != nil {
		return c, nil
	}
	c, err := p.dial(ctx, callerCtx, op, target)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return nil, provider.NewError(op, target, provider.Permanent, "provider closed")
	}
	p.client = c
	return c, nil
}

// drop forgets c (if still cached) and closes it.
func (p *Provider) drop(c *gossh.Client) {
	p.mu.Lock()
	if p.client == c {
		p.client = nil
	}
	p.mu.Unlock()
	c.Close()
}

// dial connects and logs in, bounded by Timeout (see sshconn.Endpoint.Dial).
func (p *Provider) dial(ctx, callerCtx context.Context, op, target string) (*gossh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return p.ep.Dial(ctx, op, target, func(err error) error { return p.failure(callerCtx, op, target, err) })
}

// result is what one command produced.
type result struct {
	out    string // stdout: what the parsers read
	errOut string // stderr: login-shell noise, warnings, some faults
	status int    // exit status; -1 when the connection dropped after start
	eof    bool   // the connection dropped after the command started
}

// run runs one command and returns its output. ctx is the call's context
// (tied to Close), callerCtx the caller's (to tell its end apart). Errors
// are *provider.Error; a non-zero exit is not an error here (vim-cmd's exit
// status is not reliable, so callers read the output).
func (p *Provider) run(ctx, callerCtx context.Context, op, target, cmd string, limit time.Duration) (result, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return result{}, p.failure(callerCtx, op, target, fmt.Errorf("waiting for a free session: %w", ctx.Err()))
	}
	// The slot is released when the session has ended (by the waiting
	// goroutine once the command started).
	release := true
	defer func() {
		if release {
			<-p.sem
		}
	}()

	var sess *gossh.Session
	var client *gossh.Client
	for attempt := 0; ; attempt++ {
		c, err := p.getClient(ctx, callerCtx, op, target)
		if err != nil {
			return result{}, err
		}
		// NewSession cannot take a context: closing the connection
		// unblocks it if ctx ends or the host does not answer within
		// Timeout (a connection that died silently while idle).
		sctx, scancel := context.WithTimeout(ctx, p.timeout)
		stop := context.AfterFunc(sctx, func() { p.drop(c) })
		s, err := c.NewSession()
		stop()
		scancel()
		if err == nil {
			sess, client = s, c
			break
		}
		p.drop(c)
		// The command was not sent: dialling again once is safe (a
		// cached connection may have died while idle).
		if attempt > 0 || ctx.Err() != nil {
			return result{}, p.failure(callerCtx, op, target, fmt.Errorf("open session: %w", err))
		}
	}
	defer sess.Close()
	// Separate streams: a login shell on the host may print to stderr
	// (seen here: a profile script's warnings), which must not break the
	// parsing of what the command prints.
	buf := &capBuffer{max: maxOutput}
	errBuf := &capBuffer{max: maxOutput}
	sess.Stdout = buf
	sess.Stderr = errBuf
	tctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// Register the waiter before Close can start waiting for waiters.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return result{}, provider.NewError(op, target, provider.Permanent, "provider closed")
	}
	p.wg.Add(1)
	p.mu.Unlock()
	if err := sess.Start(cmd); err != nil {
		p.wg.Done()
		p.drop(client)
		return result{}, p.failure(callerCtx, op, target, fmt.Errorf("start %q: %w", cmd, err))
	}
	// The goroutine belongs to the provider (Close waits for it): when a
	// command outlives its timeout the call returns at once, and the
	// goroutine ends when the host closes the session or the connection
	// is closed.
	release = false
	done := make(chan error, 1)
	go func() {
		defer p.wg.Done()
		err := sess.Wait()
		<-p.sem
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-tctx.Done():
		_ = sess.Signal(gossh.SIGKILL)
		sess.Close()
		if callerCtx.Err() == nil && p.isClosed() {
			return result{}, provider.NewError(op, target, provider.Permanent, "provider closed while "+strconv.Quote(cmd)+" ran (it may still take effect)")
		}
		cause := tctx.Err()
		if callerCtx.Err() != nil {
			cause = callerCtx.Err()
		}
		return result{}, &provider.Error{Op: op, Target: target, Class: provider.Transient,
			Err: fmt.Errorf("%q did not finish (it may still take effect): %w", cmd, cause)}
	}
	if buf.over || errBuf.over {
		return result{}, &provider.Error{Op: op, Target: target, Class: provider.Permanent,
			Err: fmt.Errorf("%q printed more than %d bytes; not what ESXi prints", cmd, maxOutput)}
	}
	res := result{out: buf.String(), errOut: errBuf.String()}
	switch x := sshconn.ExitOf(err); {
	case x.Dropped:
		// ExitMissingError, io.EOF: the connection went away after
		// the command started.
		res.status, res.eof = -1, true
		p.drop(client)
	case x.Signal != "":
		res.status, res.eof = -1, true
	default:
		res.status = x.Status
	}
	return res, nil
}

type capBuffer struct {
	mu   sync.Mutex
	max  int
	b    []byte
	over bool
}

func (c *capBuffer) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.b)+len(b) > c.max {
		// Keep draining (a failed write would stall the channel) but
		// remember the overflow.
		c.over = true
		return len(b), nil
	}
	c.b = append(c.b, b...)
	return len(b), nil
}

// all is everything the command printed, for recognising faults.
func (r result) all() string {
	if r.errOut == "" {
		return r.out
	}
	return r.out + "\n" + r.errOut
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.b)
}

func (p *Provider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close ends in-flight calls, closes the connection, waits for the
// provider's goroutines and makes every later call fail with a Permanent
// error. Idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.cancel()
	}
	c := p.client
	p.client = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
	p.wg.Wait()
	return nil
}

// ---- output parsing ----

// garbage is the error for output the provider does not understand.
func garbage(op, target, cmd, out string) error {
	const keep = 200
	s := strings.TrimSpace(out)
	if len(s) > keep {
		s = s[:keep] + "…"
	}
	return &provider.Error{Op: op, Target: target, Class: provider.Permanent,
		Err: fmt.Errorf("unexpected output from %q: %q", cmd, s)}
}

// faultMsg returns the msg = "…" text of a vim-cmd fault printout, or the
// trimmed output.
var faultMsgRe = regexp.MustCompile(`msg = "([^"]*)"`)

func faultText(out string) string {
	if m := faultMsgRe.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return strings.TrimSpace(out)
}

// vimError classifies what a vim-cmd power command printed. It returns nil
// when the output holds no fault.
func vimError(op, target, cmd string, r result) error {
	out := r.out
	low := strings.ToLower(out)
	mk := func(c provider.Class) error {
		return &provider.Error{Op: op, Target: target, Class: c, Err: fmt.Errorf("%s: %s", cmd, faultText(out))}
	}
	switch {
	case strings.Contains(low, "unable to find a vm corresponding to") || strings.Contains(out, "vim.fault.NotFound") ||
		strings.Contains(out, "vmodl.fault.ManagedObjectNotFound"):
		return mk(provider.NotFound)
	case strings.Contains(out, "vim.fault.ToolsUnavailable") || strings.Contains(low, "vmware tools is not running"):
		return mk(provider.Unsupported)
	case strings.Contains(out, "vim.fault.NoPermission") || strings.Contains(out, "vim.fault.RestrictedVersion") ||
		strings.Contains(low, "permission to perform this operation was denied"):
		e := mk(provider.Permission).(*provider.Error)
		if m := regexp.MustCompile(`privilegeId = "([^"]+)"`).FindStringSubmatch(out); m != nil {
			e.Privilege = m[1]
		}
		return e
	case strings.Contains(out, "vim.fault.TaskInProgress") || strings.Contains(out, "vim.fault.InvalidState"):
		return mk(provider.Transient)
	case strings.Contains(out, "vim.fault.InvalidPowerState"):
		return mk(provider.Transient) // callers re-read the state
	case strings.Contains(out, "(vim.fault.") || strings.Contains(out, "(vmodl.fault.") || strings.Contains(out, "(vim.fault"):
		return mk(provider.Permanent)
	case strings.Contains(low, "not found") && r.status == 127:
		return mk(provider.Permanent)
	}
	if r.status != 0 && !r.eof {
		return &provider.Error{Op: op, Target: target, Class: provider.Permanent,
			Err: fmt.Errorf("%s exited with status %d: %s", cmd, r.status, faultText(out))}
	}
	return nil
}

// vmRow is one line of vim-cmd vmsvc/getallvms.
type vmRow struct {
	ID, Name, File, GuestOS, Version, Annotation string
}

var (
	headerRe = regexp.MustCompile(`^Vmid\s+Name\s+File\s+Guest OS\s+Version\s+Annotation\s*$`)
	// A row starts with the vmid and holds, somewhere after the name, the
	// datastore path "[ds] dir/x.vmx", the guest OS id and the hardware
	// version, then the annotation's first line.
	rowStartRe = regexp.MustCompile(`^(\d+)\s+\S`)
	// tailRe matches from the "[" that opens the File column.
	tailRe = regexp.MustCompile(`^(\[[^\]]*\] .*?\.vmx)\s+(\S+)\s+(vmx-\d+)(?:\s+(.*?))?\s*$`)
)

// parseRow splits one getallvms row. Names may contain spaces and "[", so
// every "[" after whitespace that starts a valid File/Guest OS/Version tail
// is a candidate; the one nearest the header's File column wins (vim-cmd
// pads columns to the widest value).
func parseRow(ln string, fileCol int) (vmRow, bool) {
	m := rowStartRe.FindStringSubmatch(ln)
	if m == nil {
		return vmRow{}, false
	}
	best, bestDist := -1, 0
	var bestTail []string
	// Names and paths are short; bounding where the File column may
	// start and how far a candidate is checked keeps hostile output from
	// costing quadratic time.
	const maxCol, window = 2048, 2048
	for i := len(m[1]) + 1; i < len(ln) && i < maxCol; i++ {
		if ln[i] != '[' || (ln[i-1] != ' ' && ln[i-1] != '\t') {
			continue
		}
		if tailRe.FindStringSubmatchIndex(ln[i:min(len(ln), i+window)]) == nil {
			continue
		}
		t := tailRe.FindStringSubmatch(ln[i:])
		if t == nil {
			continue
		}
		d := i - fileCol
		if d < 0 {
			d = -d
		}
		if best < 0 || d < bestDist {
			best, bestDist, bestTail = i, d, t
		}
	}
	if best < 0 {
		return vmRow{}, false
	}
	name := strings.TrimSpace(ln[len(m[1]):best])
	if name == "" {
		return vmRow{}, false
	}
	return vmRow{ID: m[1], Name: name, File: bestTail[1], GuestOS: bestTail[2], Version: bestTail[3], Annotation: bestTail[4]}, true
}

// parseGetAllVMs parses vim-cmd vmsvc/getallvms. Lines after a row that do
// not start a new row continue its annotation. "Skipping invalid VM" lines
// (unregistered or inaccessible VMs) are ignored.
func parseGetAllVMs(out string) ([]vmRow, error) {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	// The header is the first line that looks like it: anything before it
	// (blank lines, "Skipping invalid VM" notes, a shell warning on
	// stderr, which shares the stream) is not a row.
	i := 0
	for i < len(lines) && !headerRe.MatchString(lines[i]) {
		i++
	}
	if i == len(lines) {
		excerpt := out
		if len(excerpt) > 200 {
			excerpt = excerpt[:200] + "…"
		}
		return nil, fmt.Errorf("no \"Vmid Name File Guest OS Version Annotation\" header in %q", excerpt)
	}
	fileCol := strings.Index(lines[i], "File")
	var rows []vmRow
	seen := map[string]bool{}
	for _, ln := range lines[i+1:] {
		if strings.HasPrefix(ln, "Skipping invalid VM") {
			continue
		}
		if r, ok := parseRow(ln, fileCol); ok {
			if seen[r.ID] {
				return nil, fmt.Errorf("vmid %s listed twice", r.ID)
			}
			seen[r.ID] = true
			rows = append(rows, r)
			continue
		}
		if len(rows) == 0 {
			if strings.TrimSpace(ln) == "" {
				continue
			}
			return nil, fmt.Errorf("line %q is not a VM row", ln)
		}
		r := &rows[len(rows)-1]
		r.Annotation += "\n" + ln
	}
	for i := range rows {
		rows[i].Annotation = strings.TrimRight(rows[i].Annotation, "\n \t")
	}
	return rows, nil
}

// parsePowerState parses vim-cmd vmsvc/power.getstate.
func parsePowerState(out string) (provider.PowerState, bool) {
	lines := nonEmpty(out)
	if len(lines) != 2 || lines[0] != "Retrieved runtime info" {
		return "", false
	}
	switch lines[1] {
	case "Powered on":
		return provider.PowerOn, true
	case "Powered off":
		return provider.PowerOff, true
	case "Suspended":
		return provider.PowerSuspended, true
	}
	return "", false
}

func nonEmpty(out string) []string {
	var r []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			r = append(r, l)
		}
	}
	return r
}

var (
	toolsRunningRe = regexp.MustCompile(`(?m)^\s*toolsRunningStatus = "([^"]*)"`)
	toolsStatusRe  = regexp.MustCompile(`(?m)^\s*toolsStatus = "([^"]*)"`)
)

// parseTools parses vim-cmd vmsvc/get.guest.
func parseTools(out string) (provider.ToolsState, bool) {
	if !strings.Contains(out, "(vim.vm.GuestInfo) {") {
		return "", false
	}
	st := ""
	if m := toolsStatusRe.FindStringSubmatch(out); m != nil {
		st = m[1]
	}
	if st == "toolsNotInstalled" {
		return provider.ToolsNotInstalled, true
	}
	m := toolsRunningRe.FindStringSubmatch(out)
	if m == nil {
		return provider.ToolsUnknown, true
	}
	switch m[1] {
	case "guestToolsRunning":
		return provider.ToolsRunning, true
	case "guestToolsNotRunning":
		return provider.ToolsNotRunning, true
	}
	return provider.ToolsUnknown, true
}

// parseMaintenance parses esxcli system maintenanceMode get.
func parseMaintenance(out string) (bool, bool) {
	lines := nonEmpty(out)
	if len(lines) != 1 {
		return false, false
	}
	switch lines[0] {
	case "Enabled":
		return true, true
	case "Disabled":
		return false, true
	}
	return false, false
}
