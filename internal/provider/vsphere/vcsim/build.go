package vcsim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// build creates the model: the simulator's own builder makes the
// datacenter, cluster and hosts; the datastore and the VMs are created here
// through the in-process client, without the 20 ms the simulator's
// property collector takes to report each finished task (that wait, twice
// per VM, is what makes the simulator's own builder take ~40 s for 1,000
// VMs).
func (s *Sim) build(ctx context.Context) error {
	f := s.fleet
	var m *simulator.Model
	if f.VCenter {
		m = simulator.VPX()
		m.Datacenter = 1
		m.Host = 0 // no standalone hosts
		m.Cluster = 1
		m.ClusterHost = len(f.Hosts)
		m.Portgroup = 0 // no distributed switch: one reconfigure per host less
	} else {
		m = simulator.ESX()
	}
	m.Machine = 0
	m.Datastore = 0 // made below, in the Sim's own folder
	m.Autostart = false
	err := m.Create()
	if m.Service != nil {
		s.model = m // so that teardown removes what Create made
	}
	if err != nil {
		return fmt.Errorf("vcsim: create model: %w", err)
	}
	s.dsName = "LocalDS_0"

	if err := s.nameHosts(); err != nil {
		return err
	}
	c, err := vim25.NewClient(ctx, m.Service)
	if err != nil {
		return fmt.Errorf("vcsim: in-process client: %w", err)
	}
	dc, ok := m.Map().Any("Datacenter").(mo.Entity)
	if !ok {
		return fmt.Errorf("vcsim: the model has no datacenter")
	}
	folders, err := object.NewDatacenter(c, dc.Entity().Self).Folders(ctx)
	if err != nil {
		return fmt.Errorf("vcsim: datacenter folders: %w", err)
	}
	// One local datastore mounted on every host, backed by a folder of the
	// Sim's. Each VM gets a folder and three files there.
	dsDir := filepath.Join(s.dir, s.dsName)
	if err := os.Mkdir(dsDir, 0o700); err != nil {
		return fmt.Errorf("vcsim: datastore folder: %w", err)
	}
	pools := make(map[string]types.ManagedObjectReference, len(s.hosts))
	for _, h := range s.hosts {
		dss, err := object.NewHostSystem(c, h.ref).ConfigManager().DatastoreSystem(ctx)
		if err == nil {
			_, err = dss.CreateLocalDatastore(ctx, s.dsName, dsDir)
		}
		if err != nil {
			return fmt.Errorf("vcsim: datastore on host %s: %w", h.name, err)
		}
		pool, err := object.NewHostSystem(c, h.ref).ResourcePool(ctx)
		if err != nil {
			return fmt.Errorf("vcsim: resource pool of host %s: %w", h.name, err)
		}
		pools[h.name] = pool.Reference()
	}

	// Create the VMs in order. Each CreateVM task holds the VM folder's lock
	// until it ends, so the next request waits for it: the VMs get
	// increasing IDs in the declared order.
	tasks := make([]types.ManagedObjectReference, 0, len(f.VMs))
	for _, vm := range f.VMs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("vcsim: build: %w", err)
		}
		h := s.hostByNm[vm.Host]
		req := types.CreateVM_Task{
			This: folders.VmFolder.Reference(),
			Config: types.VirtualMachineConfigSpec{
				Name:       vm.Name,
				GuestId:    string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
				Files:      &types.VirtualMachineFileInfo{VmPathName: "[" + s.dsName + "]"},
				Annotation: vm.Annotation,
				Uuid:       vm.UUID,
			},
			Pool: pools[h.name],
			Host: &h.ref,
		}
		res, err := methods.CreateVM_Task(ctx, c, &req)
		if err != nil {
			return fmt.Errorf("vcsim: create VM %s: %w", vm.Name, err)
		}
		tasks = append(tasks, res.Returnval)
	}
	for i, t := range tasks {
		res, err := s.waitTask(ctx, t)
		if err != nil {
			return fmt.Errorf("vcsim: create VM %s: %w", f.VMs[i].Name, err)
		}
		ref, ok := res.(types.ManagedObjectReference)
		if !ok {
			return fmt.Errorf("vcsim: create VM %s: task result is %T", f.VMs[i].Name, res)
		}
		obj, ok := m.Map().Get(ref).(*simulator.VirtualMachine)
		if !ok {
			return fmt.Errorf("vcsim: create VM %s: %s not in the inventory", f.VMs[i].Name, ref)
		}
		vm := &vmState{spec: f.VMs[i], ref: ref, obj: obj, host: s.hostByNm[f.VMs[i].Host]}
		s.vms = append(s.vms, vm)
		s.vmByName[vm.spec.Name] = vm
		s.vmByID[ref.Value] = vm
	}

	// From here on the tools follow the power state.
	s.hook = &toolsHook{sim: s}
	s.hook.self = types.ManagedObjectReference{Type: "SundownVcsimToolsHook", Value: fmt.Sprintf("hook-%p", s.hook)}
	m.Map().AddHandler(s.hook)
	for _, vm := range s.vms {
		if vm.spec.NoTools {
			continue // the simulator's default: not installed, not running
		}
		ctx := s.owner()
		m.Map().WithLock(ctx, vm.obj, func() {
			m.Map().Update(ctx, vm.obj, toolsChanges(false))
		})
	}

	tasks = tasks[:0]
	var on []*vmState
	for _, vm := range s.vms {
		if vm.spec.PoweredOff {
			continue
		}
		res, err := methods.PowerOnVM_Task(ctx, c, &types.PowerOnVM_Task{This: vm.ref})
		if err != nil {
			return fmt.Errorf("vcsim: power on VM %s: %w", vm.spec.Name, err)
		}
		tasks = append(tasks, res.Returnval)
		on = append(on, vm)
	}
	for i, t := range tasks {
		if _, err := s.waitTask(ctx, t); err != nil {
			return fmt.Errorf("vcsim: power on VM %s: %w", on[i].spec.Name, err)
		}
	}
	return nil
}

// nameHosts finds the model's hosts and gives them the fleet's names.
func (s *Sim) nameHosts() error {
	m := s.model
	byName := map[string]*simulator.HostSystem{}
	for _, e := range m.Map().All("HostSystem") {
		if h, ok := e.(*simulator.HostSystem); ok {
			byName[h.Name] = h
		}
	}
	if len(byName) != len(s.fleet.Hosts) {
		return fmt.Errorf("vcsim: the model has %d hosts, want %d", len(byName), len(s.fleet.Hosts))
	}
	for i, spec := range s.fleet.Hosts {
		var obj *simulator.HostSystem
		if s.fleet.VCenter {
			obj = byName[fmt.Sprintf("DC0_C0_H%d", i)]
		} else {
			for _, h := range byName {
				obj = h
			}
		}
		if obj == nil {
			return fmt.Errorf("vcsim: the model has no host #%d", i)
		}
		ctx := s.owner()
		m.Map().WithLock(ctx, obj, func() {
			m.Map().Update(ctx, obj, []types.PropertyChange{
				{Name: "name", Val: spec.Name},
				{Name: "summary.config.name", Val: spec.Name},
			})
		})
		h := &hostState{name: spec.Name, ref: obj.Self, obj: obj}
		s.hosts = append(s.hosts, h)
		s.hostByNm[h.name] = h
		s.hostByID[h.ref.Value] = h
	}
	return nil
}

// waitTask waits for a simulator task by watching the task object itself,
// polling from 20 µs up to 5 ms.
func (s *Sim) waitTask(ctx context.Context, ref types.ManagedObjectReference) (types.AnyType, error) {
	t, ok := s.model.Map().Get(ref).(*simulator.Task)
	if !ok {
		return nil, fmt.Errorf("task %s not found", ref.Value)
	}
	delay := 20 * time.Microsecond
	for {
		var (
			state  types.TaskInfoState
			result types.AnyType
			fault  *types.LocalizedMethodFault
		)
		s.withLock(t, func() {
			state, result, fault = t.Info.State, t.Info.Result, t.Info.Error
		})
		switch state {
		case types.TaskInfoStateSuccess:
			return result, nil
		case types.TaskInfoStateError:
			if fault == nil {
				return nil, fmt.Errorf("task %s failed", ref.Value)
			}
			return nil, task.Error{LocalizedMethodFault: fault}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		time.Sleep(delay)
		delay = min(2*delay, 5*time.Millisecond)
	}
}

// toolsChanges are the guest property changes for VMware Tools that run
// (on) or are installed and not running (!on).
func toolsChanges(on bool) []types.PropertyChange {
	if on {
		return []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
			{Name: "guest.toolsStatus", Val: types.VirtualMachineToolsStatusToolsOk},
		}
	}
	return []types.PropertyChange{
		{Name: "guest.toolsRunningStatus", Val: string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)},
		{Name: "guest.toolsStatus", Val: types.VirtualMachineToolsStatusToolsNotRunning},
	}
}

// toolsHook is registered with the simulator's registry, which calls it on
// every property change. When a VM with tools changes power state, it sets
// the tools state to match, under the lock the changer holds.
type toolsHook struct {
	self types.ManagedObjectReference
	sim  *Sim
}

func (h *toolsHook) Reference() types.ManagedObjectReference { return h.self }

func (h *toolsHook) PutObject(*simulator.Context, mo.Reference) {}

func (h *toolsHook) RemoveObject(*simulator.Context, types.ManagedObjectReference) {}

func (h *toolsHook) UpdateObject(ctx *simulator.Context, obj mo.Reference, changes []types.PropertyChange) {
	vmo, ok := obj.(*mo.VirtualMachine)
	if !ok || vmo.Guest == nil {
		return
	}
	power := false
	for _, c := range changes {
		if c.Name == "runtime.powerState" {
			power = true
		}
	}
	vm := h.sim.vmByID[vmo.Self.Value]
	if !power || vm == nil || vm.spec.NoTools {
		return
	}
	on := vmo.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	want := toolsChanges(on)
	if vmo.Guest.ToolsRunningStatus == want[0].Val {
		return
	}
	h.sim.model.Map().Update(ctx, vmo, want)
}
