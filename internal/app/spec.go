package app

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
)

// Spec maps the config's shutdown section and the targets' live
// inventories onto the planner's input. The config was validated by Load,
// so chains parse; history holds learned step durations (may be nil).
func Spec(c *config.Config, invs []plan.TargetInventory, history map[string]time.Duration) plan.Spec {
	s := c.Shutdown
	spec := plan.Spec{
		Targets:      invs,
		DefaultChain: chain(s.DefaultAction),
		Caps:         plan.Caps{Global: s.Caps.Global, PerHost: s.Caps.PerHost},
		Self:         plan.Self{VMUUID: selfUUID(s.Self.VMUUID), HostID: s.Self.Host, Target: s.Self.Target},
		History:      history,
	}
	if spec.Self.Target == "" && spec.Self.HostID != "" && len(c.Targets) == 1 {
		spec.Self.Target = c.Targets[0].Name
	}
	for _, g := range s.Groups {
		spec.Groups = append(spec.Groups, plan.Group{
			Name: g.Name,
			Select: plan.Selector{
				Names: g.Select.Names, Tags: g.Select.Tags, Hosts: g.Select.Hosts, Targets: g.Select.Targets,
			},
			Chain:     chain(g.Action),
			DependsOn: g.DependsOn,
		})
	}
	for _, g := range s.Guests {
		spec.Guests = append(spec.Guests, plan.GuestRule{Name: g.Name, Chain: chain(g.Action), DependsOn: g.DependsOn, Exclude: g.Exclude})
	}
	for _, h := range s.Hooks {
		kind := "exec"
		if h.HTTP != nil {
			kind = "http"
		}
		spec.Hooks = append(spec.Hooks, plan.Hook{Name: h.Name, Before: h.Before, Kind: kind, Timeout: h.Timeout.D()})
	}
	return spec
}

// TargetInventory wraps one target's inventory with its host settings.
func TargetInventory(t config.Target, inv plan.TargetInventory) plan.TargetInventory {
	inv.Target = t.Name
	inv.Maintenance = t.Hosts.Maintenance
	inv.ShutdownHosts = t.Hosts.Shutdown
	inv.MaintenanceTimeout = t.Hosts.MaintenanceTimeout.D()
	inv.HostShutdownTimeout = t.Hosts.ShutdownTimeout.D()
	return inv
}

func chain(ss []string) plan.Chain {
	acts, err := config.ParseChain(ss)
	if err != nil || len(acts) == 0 {
		return nil // validated by config.Load; nil means the default chain
	}
	out := make(plan.Chain, 0, len(acts))
	for _, a := range acts {
		k, err := plan.ParseActionKind(a.Kind)
		if err != nil {
			panic(fmt.Sprintf("config action %q has no plan kind: %v", a.Kind, err)) // a programming error: both lists are ours
		}
		out = append(out, plan.Action{Kind: k, Timeout: a.Timeout})
	}
	return out
}

// productUUIDPath is where Linux exposes the SMBIOS system UUID.
var productUUIDPath = "/sys/class/dmi/id/product_uuid"

// selfUUID resolves "auto" to this machine's SMBIOS UUID ("" if unreadable:
// then no VM is excluded, which `sundown plan` shows).
func selfUUID(v string) string {
	if v != "auto" {
		return strings.ToLower(v)
	}
	b, err := os.ReadFile(productUUIDPath)
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(string(b)))
}
