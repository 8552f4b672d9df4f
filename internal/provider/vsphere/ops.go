package vsphere

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

// ShutdownGuest implements provider.Provider with VirtualMachine.ShutdownGuest,
// which asks VMware Tools to shut the guest OS down and returns at once.
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	const op = "ShutdownGuest"
	ref := vmRef(id)
	return p.do(ctx, op, id, func(ctx context.Context) error {
		_, err := methods.ShutdownGuest(ctx, p.vc, &types.ShutdownGuest{This: ref})
		if err == nil {
			p.log.Debug("vsphere: guest shutdown requested", "vm", id)
			return nil
		}
		_, noTools := topFault(err).(*types.ToolsUnavailable)
		if !noTools && !invalidState(err) {
			return err
		}
		// The fault alone does not say whether the guest is off (fine),
		// suspended, or on without tools: look.
		vm, gerr := p.vm(ctx, id, []string{"runtime.powerState"})
		if gerr != nil {
			return gerr
		}
		switch vm.guest.Power {
		case provider.PowerOff:
			return nil
		case provider.PowerSuspended:
			return &provider.Error{Op: op, Target: id, Class: provider.Unsupported,
				Err: fmt.Errorf("guest is suspended, it cannot shut down by itself: %w", err)}
		case provider.PowerOn:
			if noTools || !invalidPowerState(err) {
				return &provider.Error{Op: op, Target: id, Class: provider.Unsupported,
					Err: fmt.Errorf("VMware Tools cannot deliver the request: %w", err)}
			}
		}
		// InvalidPowerState although on: it was just powered on.
		return &provider.Error{Op: op, Target: id, Class: provider.Transient, Err: err}
	})
}

// SuspendGuest implements provider.Provider with SuspendVM_Task.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	return p.powerTask(ctx, "SuspendGuest", id,
		func(ctx context.Context, ref types.ManagedObjectReference) (types.ManagedObjectReference, error) {
			res, err := methods.SuspendVM_Task(ctx, p.vc, &types.SuspendVM_Task{This: ref})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		},
		func(s provider.PowerState) bool { return s == provider.PowerSuspended || s == provider.PowerOff })
}

// PowerOffGuest implements provider.Provider with PowerOffVM_Task.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	return p.powerTask(ctx, "PowerOffGuest", id,
		func(ctx context.Context, ref types.ManagedObjectReference) (types.ManagedObjectReference, error) {
			res, err := methods.PowerOffVM_Task(ctx, p.vc, &types.PowerOffVM_Task{This: ref})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		},
		func(s provider.PowerState) bool { return s == provider.PowerOff })
}

// PowerOnGuest implements provider.Provider with PowerOnVM_Task.
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	return p.powerTask(ctx, "PowerOnGuest", id,
		func(ctx context.Context, ref types.ManagedObjectReference) (types.ManagedObjectReference, error) {
			res, err := methods.PowerOnVM_Task(ctx, p.vc, &types.PowerOnVM_Task{This: ref})
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			return res.Returnval, nil
		},
		func(s provider.PowerState) bool { return s == provider.PowerOn })
}

// powerTask starts a power task and waits for it. When the server refuses
// because of the power state, the guest's state decides: already where done
// says → nil.
func (p *Provider) powerTask(ctx context.Context, op, id string,
	start func(context.Context, types.ManagedObjectReference) (types.ManagedObjectReference, error),
	done func(provider.PowerState) bool,
) error {
	ref := vmRef(id)
	return p.do(ctx, op, id, func(ctx context.Context) error {
		t, err := start(ctx, ref)
		if err == nil {
			err = p.waitTask(ctx, t)
		}
		if err == nil {
			p.log.Debug("vsphere: "+op+" done", "vm", id)
			return nil
		}
		if !invalidState(err) {
			return err
		}
		vm, gerr := p.vm(ctx, id, []string{"runtime.powerState"})
		if gerr != nil {
			return gerr
		}
		if done(vm.guest.Power) {
			return nil
		}
		return err
	})
}

// WaitGuest implements provider.Provider: it reads the state at once, then
// after every round of the batched poller (poller.go), reading directly
// when a round could not read this guest. Direct reads go through the
// re-login logic, so a wait that spans a session loss survives it.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	const op = "WaitGuest"
	switch want {
	case provider.PowerOn, provider.PowerOff, provider.PowerSuspended:
	default:
		return provider.NewError(op, id, provider.Permanent, fmt.Sprintf("cannot wait for power state %q", want))
	}
	p.startPoller()
	defer p.poll.add(id)()
	read := func() (provider.PowerState, error) {
		var got provider.PowerState
		err := p.do(ctx, op, id, func(ctx context.Context) error {
			vm, err := p.vm(ctx, id, []string{"runtime.powerState"})
			got = vm.guest.Power
			return err
		})
		return got, err
	}
	got, err := read()
	for err == nil && got != want {
		round := p.poll.next()
		select {
		case <-ctx.Done():
			return &provider.Error{Op: op, Target: id, Class: provider.Transient,
				Err: fmt.Errorf("guest still %s: %w", got, ctx.Err())}
		case <-round:
		}
		st, ok := p.poll.result(id)
		if ok {
			got = st
		} else {
			got, err = read()
		}
	}
	return err
}

// waitTask polls a task until it ends, backing off from 10 ms to
// PollInterval. Polling (rather than a property collector filter) needs no
// server-side state to clean up when ctx ends and survives re-login.
func (p *Provider) waitTask(ctx context.Context, ref types.ManagedObjectReference) error {
	delay := 10 * time.Millisecond
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		oc, err := p.retrieveOne(ctx, ref, []string{"info.state", "info.error", "info.descriptionId"})
		if err != nil {
			return err
		}
		var (
			state string
			lmf   *types.LocalizedMethodFault
		)
		for _, dp := range oc.PropSet {
			switch dp.Name {
			case "info.state":
				state = str(dp.Val)
			case "info.error":
				switch v := dp.Val.(type) {
				case types.LocalizedMethodFault:
					lmf = &v
				case *types.LocalizedMethodFault:
					lmf = v
				}
			}
		}
		switch types.TaskInfoState(state) {
		case types.TaskInfoStateSuccess:
			return nil
		case types.TaskInfoStateError:
			if lmf == nil || lmf.Fault == nil {
				return fmt.Errorf("task %s failed without a fault", ref.Value)
			}
			return task.Error{LocalizedMethodFault: lmf}
		}
		delay = min(2*delay, p.cfg.PollInterval)
		timer.Reset(delay)
	}
}

// EnterMaintenance implements provider.Provider with EnterMaintenanceMode_Task.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	const op = "EnterMaintenance"
	var spec *types.HostMaintenanceSpec
	switch mode := types.VsanHostDecommissionModeObjectAction(opts.VSANMode); mode {
	case "":
	case types.VsanHostDecommissionModeObjectActionNoAction,
		types.VsanHostDecommissionModeObjectActionEnsureObjectAccessibility,
		types.VsanHostDecommissionModeObjectActionEvacuateAllData:
		spec = &types.HostMaintenanceSpec{VsanMode: &types.VsanHostDecommissionMode{ObjectAction: string(mode)}}
	default:
		return provider.NewError(op, hostID, provider.Permanent, fmt.Sprintf(
			"unknown vSAN mode %q (want ensureObjectAccessibility, evacuateAllData or noAction)", opts.VSANMode))
	}
	if opts.Timeout < 0 {
		return provider.NewError(op, hostID, provider.Permanent, "negative maintenance timeout")
	}
	// The API takes whole seconds; 0 means none. Round up so a sub-second
	// timeout does not become "no timeout".
	secs := int32(math.MaxInt32)
	if s := math.Ceil(opts.Timeout.Seconds()); s < math.MaxInt32 {
		secs = int32(s)
	}
	ref := hostRef(hostID)
	return p.do(ctx, op, hostID, func(ctx context.Context) error {
		h, err := p.host(ctx, hostID)
		if err != nil {
			return err
		}
		if h.host.Maintenance {
			return nil
		}
		res, err := methods.EnterMaintenanceMode_Task(ctx, p.vc, &types.EnterMaintenanceMode_Task{
			This: ref, Timeout: secs, MaintenanceSpec: spec,
		})
		if err == nil {
			err = p.waitTask(ctx, res.Returnval)
		}
		if err != nil && invalidState(err) {
			if h, herr := p.host(ctx, hostID); herr == nil && h.host.Maintenance {
				return nil
			}
		}
		if err == nil {
			p.log.Info("vsphere: host in maintenance mode", "host", hostID)
		}
		return err
	})
}

// ExitMaintenance implements provider.Provider with ExitMaintenanceMode_Task.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	const op = "ExitMaintenance"
	ref := hostRef(hostID)
	return p.do(ctx, op, hostID, func(ctx context.Context) error {
		h, err := p.host(ctx, hostID)
		if err != nil {
			return err
		}
		if !h.host.Maintenance {
			return nil
		}
		res, err := methods.ExitMaintenanceMode_Task(ctx, p.vc, &types.ExitMaintenanceMode_Task{This: ref})
		if err == nil {
			err = p.waitTask(ctx, res.Returnval)
		}
		if err != nil && invalidState(err) {
			if h, herr := p.host(ctx, hostID); herr == nil && !h.host.Maintenance {
				return nil
			}
		}
		if err == nil {
			p.log.Info("vsphere: host left maintenance mode", "host", hostID)
		}
		return err
	})
}

// ShutdownHost implements provider.Provider with ShutdownHost_Task. Through
// vCenter it waits for the task; a connection lost while waiting (vCenter
// ran on that host) counts as success. Connected to the ESXi host itself it
// returns once the task is created: that task never reports success.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = "ShutdownHost"
	ref := hostRef(hostID)
	return p.do(ctx, op, hostID, func(ctx context.Context) error {
		h, err := p.host(ctx, hostID)
		if err != nil {
			return err
		}
		if h.host.Power == provider.PowerOff {
			return nil
		}
		if h.connection != "" && types.HostSystemConnectionState(h.connection) != types.HostSystemConnectionStateConnected {
			return provider.NewError(op, hostID, provider.Unreachable,
				fmt.Sprintf("host is %s; it may already be off", h.connection))
		}
		res, err := methods.ShutdownHost_Task(ctx, p.vc, &types.ShutdownHost_Task{This: ref, Force: force})
		if err == nil {
			p.log.Info("vsphere: host shutdown requested", "host", hostID, "force", force)
			if p.hostAgent {
				return nil
			}
			err = p.waitTask(ctx, res.Returnval)
			if err != nil && ctx.Err() == nil {
				if c, _ := classOf(err); c == provider.Unreachable {
					p.log.Info("vsphere: connection lost after host shutdown was accepted; counting it as done", "host", hostID, "err", err)
					return nil
				}
			}
		}
		if err != nil && !force && invalidState(err) {
			return &provider.Error{Op: op, Target: hostID, Class: provider.Permanent,
				Err: fmt.Errorf("host refuses to shut down outside maintenance mode without force: %w", err)}
		}
		return err
	})
}
