package proxmox

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sundown-ups/sundown/internal/provider"
)

// The privileges sundown's power operations need (README.md, "Token
// privileges"). Reading the inventory needs VM.Audit and Sys.Audit, which
// a working Inventory has already proven.
const (
	// PrivVMPowerMgmt on /vms/{vmid}: ShutdownGuest, PowerOffGuest,
	// SuspendGuest, PowerOnGuest.
	PrivVMPowerMgmt = "VM.PowerMgmt"
	// PrivSysPowerMgmt on /nodes/{node}: ShutdownHost.
	PrivSysPowerMgmt = "Sys.PowerMgmt"
	// PrivSysConsole on /: setting an HA-managed guest's requested state
	// (stopped before a shutdown or stop, started before a start).
	PrivSysConsole = "Sys.Console"
)

// Grant is a set of privileges on one ACL path, and what needs them.
type Grant struct {
	// Path is the ACL path: "/vms/101", "/nodes/pve1" or "/".
	Path string
	// Privileges are the privileges wanted (or, from MissingPrivileges,
	// lacking) on Path.
	Privileges []string
	// For names what needs them: guest IDs ("pve1/qemu/101") and node
	// names, sorted.
	For []string
}

// RequiredPrivileges lists what acting on guests (shutdown, stop, suspend,
// start: VM.PowerMgmt on /vms/{vmid}) and shutting down nodes
// (Sys.PowerMgmt on /nodes/{node}) needs, plus Sys.Console on / when one of
// the guests is HA-managed. It reads GET /cluster/resources?type=vm once
// to learn which guests are HA resources (the "hastate" field); it changes
// nothing. The result has one Grant per path, "/" first, then nodes, then
// guests by VMID. A guest ID that is not a Proxmox guest ID is an error of
// class NotFound.
func (p *Provider) RequiredPrivileges(ctx context.Context, guests, nodes []string) ([]Grant, error) {
	const op = "RequiredPrivileges"
	byPath := map[string]*Grant{}
	add := func(path, priv, what string) {
		g := byPath[path]
		if g == nil {
			g = &Grant{Path: path}
			byPath[path] = g
		}
		if !slices.Contains(g.Privileges, priv) {
			g.Privileges = append(g.Privileges, priv)
		}
		if !slices.Contains(g.For, what) {
			g.For = append(g.For, what)
		}
	}
	refs := make([]ref, 0, len(guests))
	for _, id := range guests {
		r, err := p.parse(op, id)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	if len(refs) > 0 {
		var res []struct {
			Type    string `json:"type"`
			VMID    int    `json:"vmid"`
			HAState string `json:"hastate"`
		}
		if err := p.do(ctx, op, "", http.MethodGet, "/cluster/resources", url.Values{"type": {"vm"}}, &res); err != nil {
			return nil, err
		}
		ha := map[int]bool{}
		for _, e := range res {
			if e.HAState != "" {
				ha[e.VMID] = true
			}
		}
		for _, r := range refs {
			add("/vms/"+strconv.Itoa(r.vmid), PrivVMPowerMgmt, r.id())
			if ha[r.vmid] {
				add("/", PrivSysConsole, r.id())
			}
		}
	}
	for _, n := range nodes {
		if n == "" || strings.ContainsAny(n, "/?#") {
			return nil, provider.NewError(op, n, provider.NotFound, "not a node name")
		}
		add("/nodes/"+n, PrivSysPowerMgmt, n)
	}
	out := make([]Grant, 0, len(byPath))
	for _, g := range byPath {
		slices.Sort(g.For)
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Grant) int { return comparePaths(a.Path, b.Path) })
	return out, nil
}

// comparePaths orders "/" first, then /nodes/… by name, then /vms/… by
// VMID.
func comparePaths(a, b string) int {
	rank := func(p string) (int, int, string) {
		switch {
		case p == "/":
			return 0, 0, ""
		case strings.HasPrefix(p, "/nodes/"):
			return 1, 0, p
		case strings.HasPrefix(p, "/vms/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(p, "/vms/"))
			return 2, n, p
		}
		return 3, 0, p
	}
	ra, na, sa := rank(a)
	rb, nb, sb := rank(b)
	switch {
	case ra != rb:
		return ra - rb
	case na != nb:
		return na - nb
	}
	return strings.Compare(sa, sb)
}

// MissingPrivileges asks the server which of the required privileges the
// API token lacks: one GET /access/permissions?path=P per distinct path
// (every token may read its own permissions; the server applies ACL
// inheritance, pools and, for a privilege-separated token, the
// intersection with its user's rights). A privilege counts as granted when
// it appears in the answer for P, whatever its propagate flag. It changes
// nothing. The result has one Grant per path where something is missing,
// with only the missing privileges, in the order of required; nil when
// everything is granted. Errors are *provider.Error (a PVE without the
// endpoint, before 6.2, gives Unsupported).
func (p *Provider) MissingPrivileges(ctx context.Context, required []Grant) ([]Grant, error) {
	const op = "MissingPrivileges"
	held := map[string]map[string]any{}
	var out []Grant
	for _, g := range required {
		have, ok := held[g.Path]
		if !ok {
			var ans map[string]map[string]any
			if err := p.do(ctx, op, g.Path, http.MethodGet, "/access/permissions", url.Values{"path": {g.Path}}, &ans); err != nil {
				return nil, err
			}
			have = ans[g.Path] // absent: nothing granted there
			held[g.Path] = have
		}
		m := Grant{Path: g.Path, For: slices.Clone(g.For)}
		for _, priv := range g.Privileges {
			if _, ok := have[priv]; !ok {
				m.Privileges = append(m.Privileges, priv)
			}
		}
		if len(m.Privileges) > 0 {
			out = append(out, m)
		}
	}
	return out, nil
}
