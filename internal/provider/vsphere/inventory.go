package vsphere

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Properties read for VMs and hosts. Values are decoded by hand (not into
// mo.VirtualMachine) so that one VM with an unreadable property (an
// inaccessible VM has no config) cannot fail the whole inventory.
var (
	vmProps = []string{
		"name", "runtime.powerState", "runtime.host",
		"guest.toolsRunningStatus", "guest.toolsStatus",
		"config.uuid", "config.template", "config.annotation",
		"customValue", "availableField",
	}
	hostProps = []string{
		"name", "runtime.powerState", "runtime.connectionState",
		"runtime.inMaintenanceMode", "hardware.systemInfo.uuid",
	}
)

// AnnotationTag is the Tags key under which a VM's notes (config.annotation)
// appear. Custom attributes appear under their own names and win over the
// notes if one is called "annotation".
const AnnotationTag = "annotation"

func vmRef(id string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VirtualMachine", Value: id}
}

func hostRef(id string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "HostSystem", Value: id}
}

// vmInfo is one decoded VM.
type vmInfo struct {
	guest    provider.Guest
	template bool
}

// hostInfo is one decoded host.
type hostInfo struct {
	host       provider.Host
	connection string
	power      string
}

// Inventory implements provider.Provider.
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	var inv provider.Inventory
	err := p.do(ctx, "Inventory", p.endpoint, func(ctx context.Context) error {
		var err error
		inv, err = p.inventory(ctx)
		return err
	})
	return inv, err
}

func (p *Provider) inventory(ctx context.Context) (inv provider.Inventory, err error) {
	v, err := view.NewManager(p.vc).CreateContainerView(ctx, p.vc.ServiceContent.RootFolder, []string{"VirtualMachine", "HostSystem"}, true)
	if err != nil {
		return inv, err
	}
	defer func() {
		// Views live in the session until destroyed; do it even when ctx
		// has ended, but bounded.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if derr := v.Destroy(dctx); derr != nil && err == nil && !isNotAuthenticated(derr) {
			p.log.Debug("vsphere: destroy container view", "err", derr)
		}
	}()
	req := types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{{
		ObjectSet: []types.ObjectSpec{{
			Obj:  v.Reference(),
			Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
				Type: "ContainerView",
				Path: "view",
			}},
		}},
		PropSet: []types.PropertySpec{
			{Type: "VirtualMachine", PathSet: vmProps},
			{Type: "HostSystem", PathSet: hostProps},
		},
	}}}
	res, err := property.DefaultCollector(p.vc).RetrieveProperties(ctx, req)
	if err != nil {
		return inv, err
	}
	for _, oc := range res.Returnval {
		if err := missingError(oc); err != nil {
			return inv, err
		}
		if gone(oc) {
			continue // deleted while we listed
		}
		switch oc.Obj.Type {
		case "VirtualMachine":
			vm := decodeVM(oc)
			if vm.template {
				continue
			}
			inv.Guests = append(inv.Guests, vm.guest)
		case "HostSystem":
			inv.Hosts = append(inv.Hosts, decodeHost(oc).host)
		}
	}
	slices.SortFunc(inv.Guests, func(a, b provider.Guest) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(inv.Hosts, func(a, b provider.Host) int { return strings.Compare(a.ID, b.ID) })
	return inv, nil
}

// Guest implements provider.Provider.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	var g provider.Guest
	err := p.do(ctx, "Guest", id, func(ctx context.Context) error {
		vm, err := p.vm(ctx, id, vmProps)
		g = vm.guest
		return err
	})
	return g, err
}

// vm reads props of one VM.
func (p *Provider) vm(ctx context.Context, id string, props []string) (vmInfo, error) {
	oc, err := p.retrieveOne(ctx, vmRef(id), props)
	if err != nil {
		return vmInfo{}, err
	}
	return decodeVM(oc), nil
}

// host reads one host.
func (p *Provider) host(ctx context.Context, id string) (hostInfo, error) {
	oc, err := p.retrieveOne(ctx, hostRef(id), hostProps)
	if err != nil {
		return hostInfo{}, err
	}
	return decodeHost(oc), nil
}

// retrieveOne reads props of one object. A missing object is a
// ManagedObjectNotFound fault.
func (p *Provider) retrieveOne(ctx context.Context, ref types.ManagedObjectReference, props []string) (types.ObjectContent, error) {
	req := types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{{
		ObjectSet: []types.ObjectSpec{{Obj: ref, Skip: types.NewBool(false)}},
		PropSet:   []types.PropertySpec{{Type: ref.Type, PathSet: props}},
	}}}
	res, err := property.DefaultCollector(p.vc).RetrieveProperties(ctx, req)
	if err != nil {
		return types.ObjectContent{}, err
	}
	for _, oc := range res.Returnval {
		if oc.Obj != ref {
			continue
		}
		if err := missingError(oc); err != nil {
			return oc, err
		}
		if gone(oc) {
			break
		}
		return oc, nil
	}
	return types.ObjectContent{}, soap.WrapVimFault(&types.ManagedObjectNotFound{Obj: ref})
}

// missingError returns the fault of a missing property that must fail the
// call: a lost session (so do logs in again).
func missingError(oc types.ObjectContent) error {
	for _, m := range oc.MissingSet {
		if f, ok := m.Fault.Fault.(*types.NotAuthenticated); ok {
			return soap.WrapVimFault(f)
		}
	}
	return nil
}

// gone reports whether the object vanished while being read.
func gone(oc types.ObjectContent) bool {
	for _, m := range oc.MissingSet {
		if _, ok := m.Fault.Fault.(*types.ManagedObjectNotFound); ok {
			return true
		}
	}
	return false
}

func decodeVM(oc types.ObjectContent) vmInfo {
	g := provider.Guest{ID: oc.Obj.Value, Power: provider.PowerUnknown, Tools: provider.ToolsUnknown}
	var (
		template   bool
		annotation string
		running    string
		status     string
		values     []types.BaseCustomFieldValue
		fields     []types.CustomFieldDef
	)
	for _, dp := range oc.PropSet {
		switch dp.Name {
		case "name":
			g.Name = str(dp.Val)
		case "runtime.powerState":
			g.Power = vmPower(str(dp.Val))
		case "runtime.host":
			if ref, ok := dp.Val.(types.ManagedObjectReference); ok {
				g.HostID = ref.Value
			}
		case "guest.toolsRunningStatus":
			running = str(dp.Val)
		case "guest.toolsStatus":
			status = str(dp.Val)
		case "config.uuid":
			g.UUID = strings.ToLower(str(dp.Val))
		case "config.template":
			template, _ = dp.Val.(bool)
		case "config.annotation":
			annotation = str(dp.Val)
		case "customValue":
			if a, ok := dp.Val.(types.ArrayOfCustomFieldValue); ok {
				values = a.CustomFieldValue
			}
		case "availableField":
			if a, ok := dp.Val.(types.ArrayOfCustomFieldDef); ok {
				fields = a.CustomFieldDef
			}
		}
	}
	g.Tools = toolsState(running, status)
	g.Tags = tags(annotation, values, fields)
	return vmInfo{guest: g, template: template}
}

func decodeHost(oc types.ObjectContent) hostInfo {
	h := hostInfo{host: provider.Host{ID: oc.Obj.Value}}
	for _, dp := range oc.PropSet {
		switch dp.Name {
		case "name":
			h.host.Name = str(dp.Val)
		case "runtime.powerState":
			h.power = str(dp.Val)
		case "runtime.connectionState":
			h.connection = str(dp.Val)
		case "runtime.inMaintenanceMode":
			h.host.Maintenance, _ = dp.Val.(bool)
		case "hardware.systemInfo.uuid":
			h.host.UUID = strings.ToLower(str(dp.Val))
		}
	}
	h.host.Power = hostPower(h.power, h.connection)
	return h
}

// str returns the string value of a property that is a string or a string
// enum type, else "".
func str(v any) string {
	if v == nil {
		return ""
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.String {
		return rv.String()
	}
	return ""
}

func vmPower(s string) provider.PowerState {
	switch types.VirtualMachinePowerState(s) {
	case types.VirtualMachinePowerStatePoweredOn:
		return provider.PowerOn
	case types.VirtualMachinePowerStatePoweredOff:
		return provider.PowerOff
	case types.VirtualMachinePowerStateSuspended:
		return provider.PowerSuspended
	}
	return provider.PowerUnknown
}

// hostPower maps a host's power and connection state. vCenter cannot vouch
// for the power of a host it is not connected to, except that it saw it
// powered off.
func hostPower(power, connection string) provider.PowerState {
	switch {
	case types.HostSystemPowerState(power) == types.HostSystemPowerStatePoweredOff:
		return provider.PowerOff
	case connection != "" && types.HostSystemConnectionState(connection) != types.HostSystemConnectionStateConnected:
		return provider.PowerUnknown
	case types.HostSystemPowerState(power) == types.HostSystemPowerStatePoweredOn:
		return provider.PowerOn
	case types.HostSystemPowerState(power) == types.HostSystemPowerStateStandBy:
		return provider.PowerOff
	}
	return provider.PowerUnknown
}

func toolsState(running, status string) provider.ToolsState {
	switch types.VirtualMachineToolsRunningStatus(running) {
	case types.VirtualMachineToolsRunningStatusGuestToolsRunning,
		types.VirtualMachineToolsRunningStatusGuestToolsExecutingScripts:
		return provider.ToolsRunning
	case types.VirtualMachineToolsRunningStatusGuestToolsNotRunning:
		if types.VirtualMachineToolsStatus(status) == types.VirtualMachineToolsStatusToolsNotInstalled {
			return provider.ToolsNotInstalled
		}
		return provider.ToolsNotRunning
	}
	return provider.ToolsUnknown
}

// tags merges the notes and the custom attribute values (named through the
// entity's available field definitions).
func tags(annotation string, values []types.BaseCustomFieldValue, fields []types.CustomFieldDef) map[string]string {
	if annotation == "" && len(values) == 0 {
		return nil
	}
	m := map[string]string{}
	if annotation != "" {
		m[AnnotationTag] = annotation
	}
	names := make(map[int32]string, len(fields))
	for _, f := range fields {
		names[f.Key] = f.Name
	}
	for _, v := range values {
		sv, ok := v.(*types.CustomFieldStringValue)
		if !ok {
			continue
		}
		name, ok := names[sv.Key]
		if !ok {
			name = fmt.Sprintf("custom-%d", sv.Key)
		}
		m[name] = sv.Value
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
