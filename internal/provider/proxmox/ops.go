package proxmox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// ctxErr is the error for a context that ended while we waited.
func ctxErr(op, target string, ctx context.Context) error {
	return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: ctx.Err()}
}

// sleep waits one poll interval or until ctx ends.
func (p *Provider) sleep(ctx context.Context, op, target string) error {
	t := time.NewTimer(p.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxErr(op, target, ctx)
	}
}

// upidNode returns the node field of a UPID
// "UPID:node:PID:PSTART:STARTTIME:type:id:user:".
func upidNode(upid string) (string, bool) {
	f := strings.Split(upid, ":")
	if len(f) < 9 || f[0] != "UPID" || f[1] == "" {
		return "", false
	}
	return f[1], true
}

// waitTask polls a worker task until it stops and fails unless its exit
// status is "OK" (or "WARNINGS: n", which PVE counts as success). A task
// that stopped with an error is reported as that error, classified like an
// API error with HTTP 500.
func (p *Provider) waitTask(ctx context.Context, op, target, upid string) error {
	node, ok := upidNode(upid)
	if !ok {
		return provider.NewError(op, target, provider.Permanent, fmt.Sprintf("server answered with a malformed task id %q", upid))
	}
	path := "/nodes/" + url.PathEscape(node) + "/tasks/" + url.PathEscape(upid) + "/status"
	for {
		var ts struct {
			Status     string `json:"status"`
			ExitStatus string `json:"exitstatus"`
		}
		if err := p.do(ctx, op, target, http.MethodGet, path, nil, &ts); err != nil {
			return err
		}
		if ts.Status == "stopped" {
			if ts.ExitStatus == "OK" || strings.HasPrefix(ts.ExitStatus, "WARNINGS") {
				return nil
			}
			e := classify(op, target, &apiError{Status: http.StatusInternalServerError, Message: "task failed: " + ts.ExitStatus})
			return e
		}
		if err := p.sleep(ctx, op, target); err != nil {
			return err
		}
	}
}

// post starts a worker task and returns its UPID.
func (p *Provider) post(ctx context.Context, op string, r ref, action string, form url.Values) (string, error) {
	var upid string
	err := p.do(ctx, op, r.id(), http.MethodPost, r.path()+"/status/"+action, form, &upid)
	return upid, err
}

// isMsg reports whether err is an API error whose message contains s.
func isMsg(err error, s string) bool {
	var ae *apiError
	return errors.As(err, &ae) && strings.Contains(ae.Message, s)
}

// haSID is the HA resource id of a guest: "vm:101" or "ct:101".
func haSID(r ref) string {
	if r.typ == "lxc" {
		return "ct:" + strconv.Itoa(r.vmid)
	}
	return "vm:" + strconv.Itoa(r.vmid)
}

// setHA sets the requested HA state of an HA-managed guest, so the HA
// stack neither restarts a guest we stop nor stops one we start. Needs
// Sys.Console on "/".
func (p *Provider) setHA(ctx context.Context, op string, r ref, st status, want string) error {
	if st.HA.Managed == 0 || st.HA.State == want {
		return nil
	}
	err := p.do(ctx, op, r.id(), http.MethodPut, "/cluster/ha/resources/"+url.PathEscape(haSID(r)),
		url.Values{"state": {want}}, nil)
	if err != nil {
		return err
	}
	p.log.Info("proxmox: HA resource state set", "guest", r.id(), "sid", haSID(r), "state", want)
	return nil
}

// ShutdownGuest asks the guest OS to shut down (ACPI, or the QEMU guest
// agent when it is enabled) with timeout=ShutdownTimeout and forceStop=0,
// and returns once PVE has accepted the task.
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	const op = "ShutdownGuest"
	r, err := p.parse(op, id)
	if err != nil {
		return err
	}
	g, st, err := p.guest(ctx, op, r)
	if err != nil {
		return err
	}
	switch g.Power {
	case provider.PowerOff:
		return p.setHA(ctx, op, r, st, "stopped")
	case provider.PowerSuspended:
		return provider.NewError(op, id, provider.Unsupported, "guest is suspended and cannot take a shutdown request")
	case provider.PowerUnknown:
		return provider.NewError(op, id, provider.Transient, "guest state is "+st.Status)
	}
	if r.typ == "qemu" && st.agentEnabled() && g.Tools == provider.ToolsNotRunning {
		// PVE shuts agent-enabled VMs down through the agent; with the
		// agent down the request fails.
		return provider.NewError(op, id, provider.Unsupported, "QEMU guest agent is enabled but not running")
	}
	if err := p.setHA(ctx, op, r, st, "stopped"); err != nil {
		return err
	}
	timeout := int(p.cfg.ShutdownTimeout / time.Second)
	upid, err := p.post(ctx, op, r, "shutdown", url.Values{"timeout": {strconv.Itoa(timeout)}, "forceStop": {"0"}})
	if isMsg(err, "not running") {
		return nil
	}
	if err != nil {
		return err
	}
	if _, ok := upidNode(upid); !ok {
		return provider.NewError(op, id, provider.Permanent, fmt.Sprintf("server answered with a malformed task id %q", upid))
	}
	p.log.Info("proxmox: shutdown requested", "guest", id, "task", upid)
	return nil
}

// SuspendGuest pauses a QEMU VM (suspend to RAM) and waits for the task.
// Containers: Unsupported.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	const op = "SuspendGuest"
	r, err := p.parse(op, id)
	if err != nil {
		return err
	}
	st, err := p.current(ctx, op, r)
	if err != nil {
		return err
	}
	if r.typ != "qemu" {
		return provider.NewError(op, id, provider.Unsupported, "containers cannot be suspended by sundown")
	}
	switch st.power(r.typ) {
	case provider.PowerOff, provider.PowerSuspended:
		return nil
	case provider.PowerUnknown:
		return provider.NewError(op, id, provider.Transient, "guest state is "+st.Status)
	}
	upid, err := p.post(ctx, op, r, "suspend", nil)
	if isMsg(err, "not running") {
		return nil
	}
	if err != nil {
		return err
	}
	return p.waitTask(ctx, op, id, upid)
}

// PowerOffGuest stops the guest hard (overruling a pending shutdown task)
// and waits for the task. An HA-managed guest's HA state is set to
// "stopped" first.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	const op = "PowerOffGuest"
	r, err := p.parse(op, id)
	if err != nil {
		return err
	}
	st, err := p.current(ctx, op, r)
	if err != nil {
		return err
	}
	if err := p.setHA(ctx, op, r, st, "stopped"); err != nil {
		return err
	}
	if st.Status == "stopped" && st.Lock != "suspended" {
		return nil
	}
	upid, err := p.post(ctx, op, r, "stop", url.Values{"overrule-shutdown": {"1"}})
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && ae.Errors["overrule-shutdown"] != "" {
		// PVE before 8.1 does not know overrule-shutdown.
		upid, err = p.post(ctx, op, r, "stop", nil)
	}
	if isMsg(err, "not running") {
		return nil
	}
	if err != nil {
		return err
	}
	err = p.waitTask(ctx, op, id, upid)
	if isMsg(err, "not running") {
		return nil
	}
	if err == nil {
		p.log.Info("proxmox: guest stopped", "guest", id)
	}
	return err
}

// PowerOnGuest starts a stopped (or hibernated) guest or resumes a paused
// one and waits for the task. An HA-managed guest's HA state is set to
// "started" first.
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	const op = "PowerOnGuest"
	r, err := p.parse(op, id)
	if err != nil {
		return err
	}
	st, err := p.current(ctx, op, r)
	if err != nil {
		return err
	}
	power := st.power(r.typ)
	if power == provider.PowerOn {
		return nil
	}
	if err := p.setHA(ctx, op, r, st, "started"); err != nil {
		return err
	}
	action := "start"
	if power == provider.PowerSuspended && st.Status == "running" {
		action = "resume"
	}
	upid, err := p.post(ctx, op, r, action, nil)
	if isMsg(err, "already running") {
		return p.WaitGuest(ctx, id, provider.PowerOn)
	}
	if err != nil {
		return err
	}
	err = p.waitTask(ctx, op, id, upid)
	if isMsg(err, "already running") {
		return p.WaitGuest(ctx, id, provider.PowerOn)
	}
	return err
}

// WaitGuest polls status/current until the guest's power state is want.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	const op = "WaitGuest"
	if want != provider.PowerOn && want != provider.PowerOff && want != provider.PowerSuspended {
		return provider.NewError(op, id, provider.Permanent, fmt.Sprintf("cannot wait for power state %q", want))
	}
	r, err := p.parse(op, id)
	if err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			return ctxErr(op, id, ctx)
		}
		st, err := p.current(ctx, op, r)
		if err != nil {
			if c := provider.ClassOf(err); c != provider.Unreachable && c != provider.Transient || ctx.Err() != nil {
				return err
			}
		} else if st.power(r.typ) == want {
			return nil
		}
		if err := p.sleep(ctx, op, id); err != nil {
			return err
		}
	}
}

// EnterMaintenance is Unsupported: PVE 8's node maintenance
// (ha-manager crm-command node-maintenance) has no API endpoint.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, _ provider.MaintenanceOptions) error {
	if p.closed.Load() {
		return provider.NewError("EnterMaintenance", hostID, provider.Permanent, "provider is closed")
	}
	return provider.NewError("EnterMaintenance", hostID, provider.Unsupported, "proxmox: node maintenance mode is not available through the API")
}

// ExitMaintenance is Unsupported; see EnterMaintenance.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	if p.closed.Load() {
		return provider.NewError("ExitMaintenance", hostID, provider.Permanent, "provider is closed")
	}
	return provider.NewError("ExitMaintenance", hostID, provider.Unsupported, "proxmox: node maintenance mode is not available through the API")
}

// ShutdownHost sends POST /nodes/{node}/status command=shutdown. Without
// force it refuses (Permanent) while guests still run on the node (PVE
// itself would stop them with its stop-all on the way down).
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = "ShutdownHost"
	if p.cfg.Node != "" && hostID != p.cfg.Node {
		return provider.NewError(op, hostID, provider.NotFound, "host is not the configured node")
	}
	var nodes []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
	}
	if err := p.do(ctx, op, hostID, http.MethodGet, "/nodes", nil, &nodes); err != nil {
		return err
	}
	found := false
	for _, n := range nodes {
		if n.Node == hostID {
			found = true
			if n.Status == "offline" {
				return nil
			}
		}
	}
	if !found {
		return provider.NewError(op, hostID, provider.NotFound, "no such node")
	}
	if !force {
		var res []struct {
			Node   string `json:"node"`
			VMID   int    `json:"vmid"`
			Status string `json:"status"`
		}
		if err := p.do(ctx, op, hostID, http.MethodGet, "/cluster/resources", url.Values{"type": {"vm"}}, &res); err != nil {
			return err
		}
		var running []string
		for _, e := range res {
			if e.Node == hostID && e.Status == "running" {
				running = append(running, strconv.Itoa(e.VMID))
			}
		}
		if len(running) > 0 {
			return provider.NewError(op, hostID, provider.Permanent, "guests still running on the node: "+strings.Join(running, ", "))
		}
	}
	err := p.do(ctx, op, hostID, http.MethodPost, "/nodes/"+url.PathEscape(hostID)+"/status", url.Values{"command": {"shutdown"}}, nil)
	if err != nil && provider.ClassOf(err) == provider.Unreachable && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		// The node we talk to went down while answering.
		err = nil
	}
	if err == nil {
		p.log.Info("proxmox: node shutdown requested", "node", hostID, "force", force)
	}
	return err
}
