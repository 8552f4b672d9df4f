package vsphere

import (
	"context"
	"slices"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

// The privileges sundown's operations need (README.md, "Minimum
// privileges"). Logging in and reading the inventory need only what every
// role has (System.Anonymous, System.View, System.Read).
const (
	// PrivPowerOff is needed by ShutdownGuest and PowerOffGuest.
	PrivPowerOff = "VirtualMachine.Interact.PowerOff"
	// PrivPowerOn is needed by PowerOnGuest (power on and resume).
	PrivPowerOn = "VirtualMachine.Interact.PowerOn"
	// PrivSuspend is needed by SuspendGuest.
	PrivSuspend = "VirtualMachine.Interact.Suspend"
	// PrivMaintenance is needed by EnterMaintenance, ExitMaintenance and
	// ShutdownHost. (Host.Config.Power is only for standby, which sundown
	// does not use.)
	PrivMaintenance = "Host.Config.Maintenance"
)

// OpPrivilege returns the privilege the named provider.Provider method
// ("ShutdownGuest", "PowerOffGuest", "SuspendGuest", "PowerOnGuest",
// "EnterMaintenance", "ExitMaintenance", "ShutdownHost") needs on its VM or
// host, and false for read-only or unknown methods.
func OpPrivilege(op string) (string, bool) {
	switch op {
	case "ShutdownGuest", "PowerOffGuest":
		return PrivPowerOff, true
	case "PowerOnGuest":
		return PrivPowerOn, true
	case "SuspendGuest":
		return PrivSuspend, true
	case "EnterMaintenance", "ExitMaintenance", "ShutdownHost":
		return PrivMaintenance, true
	}
	return "", false
}

// Need is one privilege wanted on some VMs and hosts, by their IDs (as in
// Inventory). As a result of MissingPrivileges it lists the entities on
// which the privilege is not granted.
type Need struct {
	Privilege string
	VMs       []string
	Hosts     []string
}

// privBatch bounds the entities of one HasPrivilegeOnEntities call.
const privBatch = 200

// MissingPrivileges asks the server which of the needed privileges this
// session lacks, entity by entity, with
// AuthorizationManager.HasPrivilegeOnEntities (vSphere 6.0 and later, on
// vCenter and ESXi; it needs only System.View). It changes nothing. The
// result has one Need per privilege not granted everywhere, in the order
// of needs, with the VMs and hosts that lack it (sorted); nil when all is
// granted.
//
// A VM or host the server does not know is reported as lacking the
// privilege (the server answers "not granted" for it). Errors are
// *provider.Error; a server without the method gives class Unsupported.
func (p *Provider) MissingPrivileges(ctx context.Context, needs []Need) ([]Need, error) {
	const op = "MissingPrivileges"
	// What to ask, per entity kind: the union of the privileges, on the
	// union of the entities; answers not asked for are ignored.
	type ask struct {
		typ   string
		ids   []string
		privs []string
	}
	asks := []*ask{{typ: "VirtualMachine"}, {typ: "HostSystem"}}
	seen := map[[2]string]bool{} // type, id
	for _, n := range needs {
		for i, ids := range [][]string{n.VMs, n.Hosts} {
			a := asks[i]
			if len(ids) > 0 && !slices.Contains(a.privs, n.Privilege) {
				a.privs = append(a.privs, n.Privilege)
			}
			for _, id := range ids {
				if k := [2]string{a.typ, id}; !seen[k] {
					seen[k] = true
					a.ids = append(a.ids, id)
				}
			}
		}
	}
	if len(seen) == 0 {
		return nil, nil
	}
	am := p.vc.ServiceContent.AuthorizationManager
	if am == nil {
		return nil, provider.NewError(op, p.endpoint, provider.Unsupported, "the server has no AuthorizationManager")
	}

	var denied map[[3]string]bool
	err := p.do(ctx, op, p.endpoint, func(ctx context.Context) error {
		denied = map[[3]string]bool{} // f may run twice (after a re-login)
		us, err := p.sm.UserSession(ctx)
		if err != nil {
			return err
		}
		if us == nil {
			return soap.WrapVimFault(&types.NotAuthenticated{})
		}
		for _, a := range asks {
			for start := 0; start < len(a.ids); start += privBatch {
				batch := a.ids[start:min(start+privBatch, len(a.ids))]
				refs := make([]types.ManagedObjectReference, len(batch))
				for i, id := range batch {
					refs[i] = types.ManagedObjectReference{Type: a.typ, Value: id}
				}
				res, err := methods.HasPrivilegeOnEntities(ctx, p.vc, &types.HasPrivilegeOnEntities{
					This: *am, Entity: refs, SessionId: us.Key, PrivId: a.privs,
				})
				if err != nil {
					return err
				}
				answered := map[[3]string]bool{}
				for _, ep := range res.Returnval {
					for _, pa := range ep.PrivAvailability {
						k := [3]string{a.typ, ep.Entity.Value, pa.PrivId}
						answered[k] = true
						if !pa.IsGranted {
							denied[k] = true
						}
					}
				}
				// An entity or privilege the server left out of its
				// answer is not known to be granted.
				for _, id := range batch {
					for _, priv := range a.privs {
						if k := [3]string{a.typ, id, priv}; !answered[k] {
							denied[k] = true
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	var out []Need
	for _, n := range needs {
		m := Need{Privilege: n.Privilege}
		for _, id := range n.VMs {
			if denied[[3]string{"VirtualMachine", id, n.Privilege}] {
				m.VMs = append(m.VMs, id)
			}
		}
		for _, id := range n.Hosts {
			if denied[[3]string{"HostSystem", id, n.Privilege}] {
				m.Hosts = append(m.Hosts, id)
			}
		}
		if len(m.VMs)+len(m.Hosts) == 0 {
			continue
		}
		if i := slices.IndexFunc(out, func(o Need) bool { return o.Privilege == m.Privilege }); i >= 0 {
			// The same privilege asked twice: merge.
			out[i].VMs = sortedSet(slices.Concat(out[i].VMs, m.VMs))
			out[i].Hosts = sortedSet(slices.Concat(out[i].Hosts, m.Hosts))
			continue
		}
		m.VMs, m.Hosts = sortedSet(m.VMs), sortedSet(m.Hosts)
		out = append(out, m)
	}
	return out, nil
}

// sortedSet sorts ids and drops duplicates, in place.
func sortedSet(ids []string) []string {
	slices.Sort(ids)
	return slices.Compact(ids)
}
