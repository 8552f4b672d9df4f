package esxissh

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

const (
	cmdGetAllVMs   = "vim-cmd vmsvc/getallvms"
	cmdMaintGet    = "esxcli system maintenanceMode get"
	cmdAutoStop    = "vim-cmd hostsvc/autostartmanager/autostop"
	cmdForceOff    = "poweroff"
	cmdEsxcliOffFn = `esxcli system shutdown poweroff --reason "%s"`
)

// call bundles what one provider method needs to run commands.
type call struct {
	p         *Provider
	ctx       context.Context // tied to Close
	callerCtx context.Context
	op        string
	target    string
}

func (p *Provider) start(ctx context.Context, op, target string) (*call, func(), error) {
	cctx, done, err := p.begin(ctx, op, target)
	if err != nil {
		return nil, nil, err
	}
	return &call{p: p, ctx: cctx, callerCtx: ctx, op: op, target: target}, done, nil
}

func (c *call) run(cmd string) (result, error) {
	return c.p.run(c.ctx, c.callerCtx, c.op, c.target, cmd, c.p.timeout)
}

// read runs a command whose answer the provider needs: the connection
// dropping before the command exited is Unreachable.
func (c *call) read(cmd string) (result, error) {
	r, err := c.run(cmd)
	if err == nil && r.eof {
		err = c.p.failure(c.callerCtx, c.op, c.target, fmt.Errorf("connection dropped while %q ran", cmd))
	}
	return r, err
}

// validVMID reports whether id looks like a vmid (decimal digits).
func validVMID(id string) bool {
	if id == "" || len(id) > 10 {
		return false
	}
	for _, r := range id {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func (p *Provider) checkGuestID(op, id string) error {
	if p.isClosed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	if !validVMID(id) {
		return provider.NewError(op, id, provider.NotFound, "not an ESXi vmid (vmids are decimal numbers)")
	}
	return nil
}

func (p *Provider) checkHostID(op, id string) error {
	if p.isClosed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	if id != p.id {
		return provider.NewError(op, id, provider.NotFound, "unknown host (this provider's host is "+p.id+")")
	}
	return nil
}

// state runs power.getstate for vmid.
func (c *call) state(id string) (provider.PowerState, error) {
	cmd := "vim-cmd vmsvc/power.getstate " + id
	r, err := c.read(cmd)
	if err != nil {
		return "", err
	}
	return stateFrom(c.op, c.target, cmd, r)
}

func stateFrom(op, target, cmd string, r result) (provider.PowerState, error) {
	if st, ok := parsePowerState(r.out); ok {
		return st, nil
	}
	if err := vimError(op, target, cmd, r); err != nil {
		return "", err
	}
	return "", garbage(op, target, cmd, r.out)
}

// tools runs get.guest for vmid.
func (c *call) tools(id string) (provider.ToolsState, error) {
	cmd := "vim-cmd vmsvc/get.guest " + id
	r, err := c.read(cmd)
	if err != nil {
		return "", err
	}
	return toolsFrom(c.op, c.target, cmd, r)
}

func toolsFrom(op, target, cmd string, r result) (provider.ToolsState, error) {
	if t, ok := parseTools(r.out); ok {
		return t, nil
	}
	if err := vimError(op, target, cmd, r); err != nil {
		return "", err
	}
	return "", garbage(op, target, cmd, r.out)
}

var configUUIDRe = regexp.MustCompile(`(?m)^   uuid = "([0-9A-Fa-f-]*)"`)

// uuidFrom reads the BIOS UUID (config.uuid, top level of the ConfigInfo
// dump; disks' backing uuids are nested deeper) from get.config.
func uuidFrom(op, target, cmd string, r result) (string, error) {
	if strings.Contains(r.out, "(vim.vm.ConfigInfo) {") {
		if m := configUUIDRe.FindStringSubmatch(r.out); m != nil {
			return strings.ToLower(m[1]), nil
		}
		return "", nil
	}
	if err := vimError(op, target, cmd, r); err != nil {
		return "", err
	}
	return "", garbage(op, target, cmd, r.out)
}

// marker starts each section of a batched command's output.
const marker = "@@sundown:"

// guests reads the power and tools state of every row with one command
// (a list of power.getstate and get.guest calls separated by markers), as
// one command costs a few round trips.
// With skipGone, a VM unregistered since getallvms is left out instead of
// failing the call (Inventory).
func (c *call) guests(rows []vmRow, skipGone bool) ([]provider.Guest, error) {
	var all []provider.Guest
	for chunk := range slices.Chunk(rows, batchSize) {
		gs, err := c.guestBatch(chunk, skipGone)
		if err != nil {
			return nil, err
		}
		all = append(all, gs...)
	}
	return all, nil
}

// batchSize bounds the VMs read by one command, keeping the command line
// (about 250 bytes per VM) and its output (get.config prints tens of KB per
// VM) well inside the shell's and the provider's limits.
const batchSize = 32

func (c *call) guestBatch(rows []vmRow, skipGone bool) ([]provider.Guest, error) {
	var b strings.Builder
	for i, row := range rows {
		if i > 0 {
			b.WriteString(" ; ")
		}
		fmt.Fprintf(&b, "echo %[1]s%[2]s:state ; vim-cmd vmsvc/power.getstate %[2]s ; echo %[1]s%[2]s:tools ; vim-cmd vmsvc/get.guest %[2]s ; echo %[1]s%[2]s:config ; vim-cmd vmsvc/get.config %[2]s",
			marker, row.ID)
	}
	r, err := c.read(b.String())
	if err != nil {
		return nil, err
	}
	sections := map[string]*strings.Builder{}
	var cur *strings.Builder
	for _, ln := range strings.SplitAfter(r.out, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimRight(ln, "\r\n"), marker); ok {
			cur = &strings.Builder{}
			sections[k] = cur
			continue
		}
		if cur != nil {
			cur.WriteString(ln)
		}
	}
	out := make([]provider.Guest, 0, len(rows))
	for _, row := range rows {
		sc, tc := "vim-cmd vmsvc/power.getstate "+row.ID, "vim-cmd vmsvc/get.guest "+row.ID
		cc := "vim-cmd vmsvc/get.config " + row.ID
		so, ok1 := sections[row.ID+":state"]
		to, ok2 := sections[row.ID+":tools"]
		co, ok3 := sections[row.ID+":config"]
		if !ok1 || !ok2 || !ok3 {
			return nil, garbage(c.op, c.target, "batched "+sc+", "+tc+" and "+cc, r.out)
		}
		st, err := stateFrom(c.op, c.target, sc, result{out: so.String()})
		if skipGone && provider.ClassOf(err) == provider.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		tl, err := toolsFrom(c.op, c.target, tc, result{out: to.String()})
		if skipGone && provider.ClassOf(err) == provider.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		uuid, err := uuidFrom(c.op, c.target, cc, result{out: co.String()})
		if skipGone && provider.ClassOf(err) == provider.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		g := makeGuest(row, c.p.id, st, tl)
		g.UUID = uuid
		out = append(out, g)
	}
	return out, nil
}

func makeGuest(row vmRow, host string, st provider.PowerState, tl provider.ToolsState) provider.Guest {
	g := provider.Guest{ID: row.ID, Name: row.Name, HostID: host, Power: st, Tools: tl}
	if row.Annotation != "" {
		g.Tags = map[string]string{"annotation": row.Annotation}
	}
	return g
}

func (c *call) list() ([]vmRow, error) {
	r, err := c.read(cmdGetAllVMs)
	if err != nil {
		return nil, err
	}
	rows, perr := parseGetAllVMs(r.out)
	if perr != nil {
		if err := vimError(c.op, c.target, cmdGetAllVMs, r); err != nil {
			return nil, err
		}
		return nil, &provider.Error{Op: c.op, Target: c.target, Class: provider.Permanent,
			Err: fmt.Errorf("unexpected output from %q: %v", cmdGetAllVMs, perr)}
	}
	return rows, nil
}

func (c *call) maintenance() (bool, error) {
	r, err := c.read(cmdMaintGet)
	if err != nil {
		return false, err
	}
	if m, ok := parseMaintenance(r.out); ok && r.status == 0 {
		return m, nil
	}
	if err := esxcliError(c.op, c.target, cmdMaintGet, r); err != nil {
		return false, err
	}
	return false, garbage(c.op, c.target, cmdMaintGet, r.out)
}

// esxcliError classifies a failed esxcli command; nil when it succeeded.
func esxcliError(op, target, cmd string, r result) error {
	if r.status == 0 && !strings.Contains(r.all(), "(vim.fault.") {
		return nil
	}
	low := strings.ToLower(r.all())
	class := provider.Permanent
	switch {
	case strings.Contains(low, "permission") || strings.Contains(r.all(), "NoPermission") || strings.Contains(low, "not authorized"):
		class = provider.Permission
	case strings.Contains(low, "timed out") || strings.Contains(low, "timeout") || strings.Contains(low, "busy"):
		class = provider.Transient
	}
	return &provider.Error{Op: op, Target: target, Class: class,
		Err: fmt.Errorf("%s exited with status %d: %s", cmd, r.status, faultText(r.all()))}
}

// Inventory lists the host and its registered VMs (vmid order, as strings).
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	c, done, err := p.start(ctx, "Inventory", p.id)
	if err != nil {
		return provider.Inventory{}, err
	}
	defer done()
	maint, err := c.maintenance()
	if err != nil {
		return provider.Inventory{}, err
	}
	rows, err := c.list()
	if err != nil {
		return provider.Inventory{}, err
	}
	guests, err := c.guests(rows, true)
	if err != nil {
		return provider.Inventory{}, err
	}
	slices.SortFunc(guests, func(a, b provider.Guest) int { return strings.Compare(a.ID, b.ID) })
	return provider.Inventory{
		Hosts:  []provider.Host{{ID: p.id, Name: p.id, Power: provider.PowerOn, Maintenance: maint}},
		Guests: guests,
	}, nil
}

// Guest returns one VM.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	const op = "Guest"
	if err := p.checkGuestID(op, id); err != nil {
		return provider.Guest{}, err
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return provider.Guest{}, err
	}
	defer done()
	rows, err := c.list()
	if err != nil {
		return provider.Guest{}, err
	}
	i := slices.IndexFunc(rows, func(r vmRow) bool { return r.ID == id })
	if i < 0 {
		return provider.Guest{}, provider.NewError(op, id, provider.NotFound, "no VM with this vmid is registered on "+p.id)
	}
	gs, err := c.guests(rows[i:i+1], false)
	if err != nil {
		return provider.Guest{}, err
	}
	return gs[0], nil
}

// powerCmd runs vim-cmd vmsvc/power.VERB id and classifies its answer.
// When ESXi answers InvalidPowerState, the state is re-read: if it is one of
// okStates the call succeeded (someone else got there first).
func (c *call) powerCmd(verb, id string, okStates ...provider.PowerState) error {
	cmd := "vim-cmd vmsvc/power." + verb + " " + id
	r, err := c.read(cmd)
	if err != nil {
		return err
	}
	if err := vimError(c.op, c.target, cmd, r); err != nil {
		if strings.Contains(r.all(), "vim.fault.InvalidPowerState") {
			if st, serr := c.state(id); serr == nil && slices.Contains(okStates, st) {
				return nil
			}
		}
		return err
	}
	return nil
}

// wait polls power.getstate until want or the end of c.ctx.
func (c *call) wait(id string, want provider.PowerState) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			cause := c.ctx.Err()
			if err := c.callerCtx.Err(); err != nil {
				cause = err
			} else if c.p.isClosed() {
				return provider.NewError(c.op, id, provider.Permanent, "provider closed")
			}
			return &provider.Error{Op: c.op, Target: id, Class: provider.Transient,
				Err: fmt.Errorf("waiting for power state %s: %w", want, cause)}
		case <-t.C:
		}
		st, err := c.state(id)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		t.Reset(c.p.poll)
	}
}

// ShutdownGuest runs power.shutdown (a guest OS shutdown through VMware
// Tools). Off → nil; suspended or tools not running → Unsupported.
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	const op = "ShutdownGuest"
	if err := p.checkGuestID(op, id); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.state(id)
	if err != nil {
		return err
	}
	switch st {
	case provider.PowerOff:
		return nil
	case provider.PowerSuspended:
		return provider.NewError(op, id, provider.Unsupported, "guest is suspended; a guest shutdown needs it running")
	}
	if err := c.powerCmd("shutdown", id, provider.PowerOff); err != nil {
		return err
	}
	p.log.Info("esxissh: guest shutdown requested", "host", p.id, "vmid", id)
	return nil
}

// SuspendGuest runs power.suspend and waits for Suspended. Off or suspended
// → nil.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	const op = "SuspendGuest"
	if err := p.checkGuestID(op, id); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.state(id)
	if err != nil {
		return err
	}
	if st == provider.PowerOff || st == provider.PowerSuspended {
		return nil
	}
	if err := c.powerCmd("suspend", id, provider.PowerSuspended, provider.PowerOff); err != nil {
		return err
	}
	return c.wait(id, provider.PowerSuspended)
}

// PowerOffGuest runs power.off and waits for Powered off. Off → nil.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	const op = "PowerOffGuest"
	if err := p.checkGuestID(op, id); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.state(id)
	if err != nil {
		return err
	}
	if st == provider.PowerOff {
		return nil
	}
	if err := c.powerCmd("off", id, provider.PowerOff); err != nil {
		return err
	}
	return c.wait(id, provider.PowerOff)
}

// PowerOnGuest runs power.on (which also resumes a suspended VM) and waits
// for Powered on. On → nil.
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	const op = "PowerOnGuest"
	if err := p.checkGuestID(op, id); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.state(id)
	if err != nil {
		return err
	}
	if st == provider.PowerOn {
		return nil
	}
	if err := c.powerCmd("on", id, provider.PowerOn); err != nil {
		return err
	}
	return c.wait(id, provider.PowerOn)
}

// WaitGuest polls power.getstate every PollInterval until want.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	const op = "WaitGuest"
	if err := p.checkGuestID(op, id); err != nil {
		return err
	}
	switch want {
	case provider.PowerOn, provider.PowerOff, provider.PowerSuspended:
	default:
		return provider.NewError(op, id, provider.Permanent, fmt.Sprintf("cannot wait for power state %q", want))
	}
	c, done, err := p.start(ctx, op, id)
	if err != nil {
		return err
	}
	defer done()
	return c.wait(id, want)
}

// EnterMaintenance runs `esxcli system maintenanceMode set --enable true`
// (with --timeout when opts.Timeout is set) and checks the result. A
// standalone ESXi host enters maintenance mode only once its VMs are off or
// suspended.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	return p.setMaintenance(ctx, "EnterMaintenance", hostID, true, opts.Timeout)
}

// ExitMaintenance runs `esxcli system maintenanceMode set --enable false`.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	return p.setMaintenance(ctx, "ExitMaintenance", hostID, false, 0)
}

func (p *Provider) setMaintenance(ctx context.Context, op, hostID string, enable bool, timeout time.Duration) error {
	if err := p.checkHostID(op, hostID); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, hostID)
	if err != nil {
		return err
	}
	defer done()
	m, err := c.maintenance()
	if err != nil {
		return err
	}
	if m == enable {
		return nil
	}
	cmd := fmt.Sprintf("esxcli system maintenanceMode set --enable %t", enable)
	limit := p.timeout
	if timeout > 0 {
		secs := int(math.Ceil(timeout.Seconds()))
		cmd += fmt.Sprintf(" --timeout %d", secs)
		if t := timeout + 10*time.Second; t > limit {
			limit = t
		}
	}
	r, err := p.run(c.ctx, c.callerCtx, op, hostID, cmd, limit)
	if err == nil && r.eof {
		err = p.failure(c.callerCtx, op, hostID, fmt.Errorf("connection dropped while %q ran", cmd))
	}
	if err != nil {
		return err
	}
	if err := esxcliError(op, hostID, cmd, r); err != nil {
		low := strings.ToLower(r.all())
		if !strings.Contains(low, "already enabled") && !strings.Contains(low, "already disabled") {
			return err
		}
	}
	m, err = c.maintenance()
	if err != nil {
		return err
	}
	if m != enable {
		return provider.NewError(op, hostID, provider.Permanent,
			fmt.Sprintf("%s succeeded but maintenance mode is still %t", cmd, m))
	}
	p.log.Info("esxissh: maintenance mode changed", "host", p.id, "enabled", enable)
	return nil
}

// ShutdownHost powers the host off. Without force the host must be in
// maintenance mode (esxcli refuses otherwise; the provider checks first and
// answers Permanent). With Config.AutoStop it first runs the autostart
// manager's autostop. Then it runs `esxcli system shutdown poweroff --reason
// "sundown: power failure"`, or with force the ESXi shell's `poweroff`,
// which does not need maintenance mode. An exit status 0, or the connection
// dropping after the command started, is success. A host that cannot be
// reached is Unreachable.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = "ShutdownHost"
	if err := p.checkHostID(op, hostID); err != nil {
		return err
	}
	c, done, err := p.start(ctx, op, hostID)
	if err != nil {
		return err
	}
	defer done()
	m, err := c.maintenance()
	if err != nil {
		return err
	}
	if !m && !force {
		return provider.NewError(op, hostID, provider.Permanent,
			"host is not in maintenance mode; esxcli refuses to power it off (enter maintenance mode first, or shut down with force)")
	}
	if p.auto {
		r, err := c.read(cmdAutoStop)
		if err == nil {
			err = vimError(op, hostID, cmdAutoStop, r)
		}
		if err != nil {
			if !force {
				return err
			}
			p.log.Warn("esxissh: autostop failed; powering off anyway (force)", "host", p.id, "err", err)
		}
	}
	cmd := fmt.Sprintf(cmdEsxcliOffFn, ShutdownReason)
	if force {
		cmd = cmdForceOff
	}
	r, err := c.run(cmd)
	if err != nil {
		return err
	}
	if r.eof {
		p.log.Info("esxissh: connection closed after the power-off command; host going down", "host", p.id)
		return nil
	}
	if r.status == 0 && !strings.Contains(r.all(), "(vim.fault.") {
		p.log.Info("esxissh: host power-off accepted", "host", p.id, "force", force)
		return nil
	}
	return esxcliError(op, hostID, cmd, r)
}
