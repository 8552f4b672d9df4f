package vcsim

import (
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// handle is the registry's Handler hook: the simulator calls it before
// every API method. It counts the call (per method, and per method and
// object) and, for the methods the Sim changes, returns a wrapper object
// that handles the call instead of the simulator's own (see override).
func (s *Sim) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	s.mu.Lock()
	s.calls[m.Name]++
	s.objCalls[callKey{m.Name, m.This.Value}]++
	if req, ok := m.Body.(*types.EnterMaintenanceMode_Task); ok {
		s.maintenance = append(s.maintenance, *req)
	}
	s.mu.Unlock()

	switch m.This.Type {
	case "VirtualMachine":
		vm := s.vmByID[m.This.Value]
		if vm == nil {
			return nil, nil
		}
		switch m.Name {
		case "ShutdownGuest":
			if vm.spec.NoTools {
				var state types.VirtualMachinePowerState
				ctx.Map.WithLock(ctx, vm.ref, func() { state = vm.obj.Runtime.PowerState })
				if state == types.VirtualMachinePowerStatePoweredOn {
					return nil, &types.ToolsUnavailable{}
				}
				return nil, nil // the simulator answers InvalidPowerState
			}
			return override(ctx, &guestVM{VirtualMachine: vm.obj, sim: s, vm: vm}), nil
		case "PowerOnVM_Task":
			var host types.HostSystemPowerState
			ctx.Map.WithLock(ctx, vm.host.ref, func() { host = vm.host.obj.Runtime.PowerState })
			if host != types.HostSystemPowerStatePoweredOn {
				return nil, &types.InvalidHostState{Host: &vm.host.ref}
			}
		}
	case "HostSystem":
		h := s.hostByID[m.This.Value]
		if h != nil && m.Name == "ShutdownHost_Task" {
			return override(ctx, &downHost{HostSystem: h.obj, sim: s, host: h}), nil
		}
	}
	return nil, nil
}

// override makes w handle this call. The simulator looks the object up in
// the caller's session after the Handler hook, and that lookup falls back
// to the global inventory, so the hook's answer alone is ignored: the
// wrapper goes into the session too. It embeds the real object as its
// first field, so the lock, the properties and every other method still
// reach the real object; it stays in the session, replaced at the next
// call of the hooked method.
func override(ctx *simulator.Context, w mo.Reference) mo.Reference {
	if ctx.Session != nil {
		ctx.Session.Put(w)
	}
	return w
}

// guestVM is a VM whose guest OS takes its time to shut down, or ignores
// the request.
type guestVM struct {
	*simulator.VirtualMachine
	sim *Sim
	vm  *vmState
}

// ShutdownGuest accepts the request of a VM that is on and, unless the
// guest ignores it, powers the VM off after its shutdown delay. The caller
// holds the VM's lock.
func (g *guestVM) ShutdownGuest(ctx *simulator.Context, req *types.ShutdownGuest) soap.HasFault {
	body := &methods.ShutdownGuestBody{}
	if st := g.Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOn {
		body.Fault_ = simulator.Fault("", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn,
			ExistingState:  st,
		})
		return body
	}
	if !g.vm.spec.IgnoreShutdown {
		g.sim.scheduleShutdown(g.vm, bootTime(&g.VirtualMachine.VirtualMachine))
	}
	body.Res = new(types.ShutdownGuestResponse)
	return body
}

// bootTime is when the VM was last powered on (the simulator keeps it in
// the summary only).
func bootTime(vm *mo.VirtualMachine) time.Time {
	if t := vm.Summary.Runtime.BootTime; t != nil {
		return *t
	}
	return time.Time{}
}

// scheduleShutdown powers vm off after its shutdown delay, unless it has
// meanwhile been powered off or rebooted. A second request during the same
// boot does not restart the countdown.
func (s *Sim) scheduleShutdown(vm *vmState, boot time.Time) {
	id := vm.ref.Value
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if p, ok := s.pending[id]; ok {
		if p.boot.Equal(boot) {
			return
		}
		if p.timer.Stop() {
			s.timers.Done()
		}
	}
	p := &pendingShutdown{boot: boot}
	s.timers.Add(1)
	p.timer = time.AfterFunc(vm.spec.ShutdownDelay, func() {
		defer s.timers.Done()
		s.mu.Lock()
		if s.pending[id] == p {
			delete(s.pending, id)
		}
		s.mu.Unlock()
		s.guestDown(vm, boot)
	})
	s.pending[id] = p
}

// guestDown is the end of a guest OS shutdown: the VM turns poweredOff if
// it still runs the boot the request was made in.
func (s *Sim) guestDown(vm *vmState, boot time.Time) {
	ctx := s.owner()
	s.model.Map().WithLock(ctx, vm.ref, func() {
		if vm.obj.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || !bootTime(&vm.obj.VirtualMachine).Equal(boot) {
			return
		}
		s.model.Map().Update(ctx, vm.obj, poweredOff())
	})
}

func poweredOff() []types.PropertyChange {
	return []types.PropertyChange{
		{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
		{Name: "summary.runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
		{Name: "summary.runtime.bootTime", Val: nil},
	}
}

// downHost adds ShutdownHost_Task to a host.
type downHost struct {
	*simulator.HostSystem
	sim  *Sim
	host *hostState
}

// ShutdownHostTask behaves as documented: without force the host must be
// in maintenance mode (else InvalidState). The host then goes down with
// whatever VMs still run on it: they turn poweredOff, the host poweredOff
// (and, seen from vCenter, notResponding).
func (h *downHost) ShutdownHostTask(ctx *simulator.Context, req *types.ShutdownHost_Task) soap.HasFault {
	task := simulator.CreateTask(h.HostSystem, "shutdownHost", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		// The task holds the host's lock.
		if h.Runtime.PowerState != types.HostSystemPowerStatePoweredOn {
			return nil, &types.InvalidState{}
		}
		if !req.Force && !h.Runtime.InMaintenanceMode {
			return nil, &types.InvalidState{}
		}
		h.sim.hostDown(h.host)
		return nil, nil
	})
	return &methods.ShutdownHost_TaskBody{
		Res: &types.ShutdownHost_TaskResponse{Returnval: task.Run(ctx)},
	}
}

// hostDown takes a host and its VMs down. The caller holds the host's lock.
func (s *Sim) hostDown(h *hostState) {
	m := s.model.Map()
	for _, ref := range h.obj.Vm {
		vm := s.vmByID[ref.Value]
		if vm == nil {
			continue
		}
		ctx := s.owner()
		m.WithLock(ctx, vm.ref, func() {
			if vm.obj.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
				m.Update(ctx, vm.obj, poweredOff())
			}
		})
	}
	changes := []types.PropertyChange{{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOff}}
	if s.fleet.VCenter {
		changes = append(changes, types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding})
	}
	m.Update(s.owner(), h.obj, changes)
	s.mu.Lock()
	s.shutdowns = append(s.shutdowns, h.name)
	s.mu.Unlock()
}
