package pvetest

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// aclPathRe is the character set PVE accepts in an ACL path
// (PVE::AccessControl::normalize_path).
var aclPathRe = regexp.MustCompile(`^[[:alnum:]._\-/]+$`)

// normPath normalizes an ACL path as PVE does: a leading "/", no repeated
// or trailing "/". It returns "" for a path PVE would not accept.
func normPath(p string) string {
	p = "/" + p
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	if !aclPathRe.MatchString(p) {
		return ""
	}
	return p
}

func vmPath(vmid int) string { return "/vms/" + strconv.Itoa(vmid) }

// privs returns the token's privileges on the normalized ACL path p, each
// mapped to its propagate flag (1 or 0) as GET /access/permissions shows
// them. Called with s.mu held.
func (s *Server) privs(p string) map[string]int {
	out := map[string]int{}
	if p == "" {
		return out
	}
	if s.fleet.ACL == nil {
		for _, priv := range AllPrivileges {
			out[priv] = 1
		}
	} else {
		// Walk from "/" down to p; the deepest path with entries that
		// apply there wins (PVE's "overwrite previous settings").
		prefixes := []string{"/"}
		if p != "/" {
			parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
			for i := range parts {
				prefixes = append(prefixes, "/"+strings.Join(parts[:i+1], "/"))
			}
		}
		for _, pre := range prefixes {
			var set map[string]int
			for _, a := range s.fleet.ACL {
				if a.Path != pre || (pre != p && !a.Propagate) {
					continue
				}
				if set == nil {
					set = map[string]int{}
				}
				flag := 0
				if a.Propagate {
					flag = 1
				}
				for _, priv := range a.Privileges {
					set[priv] = max(set[priv], flag)
				}
			}
			if set != nil {
				out = set
			}
		}
	}
	// The per-VM denials of Fleet (and nothing else) come on top.
	if id, ok := strings.CutPrefix(p, "/vms/"); ok {
		if vmid, err := strconv.Atoi(id); err == nil {
			if s.deny[vmid] {
				delete(out, "VM.PowerMgmt")
			}
			if slices.Contains(s.fleet.DenyMonitor, vmid) {
				delete(out, "VM.Monitor")
			}
		}
	}
	return out
}

// allowed reports whether the token holds priv on path. Called with s.mu
// held.
func (s *Server) allowed(path, priv string) bool {
	_, ok := s.privs(normPath(path))[priv]
	return ok
}

// permissions serves GET /access/permissions (PVE::API2::AccessControl
// "permissions"): with path, {path: {priv: propagate}} for that one path,
// inheritance applied (an empty map when nothing is granted there);
// without, every top-level path, every path named in an ACL and every
// guest path with a denial, each with what is granted there, paths with
// nothing left out. userid other than the token itself needs Sys.Audit on
// /access and is not modelled beyond that check.
func (s *Server) permissions(r *http.Request) (any, error) {
	for k := range r.Form {
		if k != "path" && k != "userid" {
			return nil, &apiError{code: 400, msg: "Parameter verification failed.",
				errors: map[string]string{k: "property is not defined in schema and the schema does not allow additional properties"}}
		}
	}
	if u := r.Form.Get("userid"); u != "" && u != s.user {
		if !s.allowed("/access", "Sys.Audit") {
			return nil, errf(403, "Permission check failed (/access, Sys.Audit)")
		}
		return nil, errf(500, "pvetest: the permissions of other users and tokens are not modelled")
	}
	if p := r.Form.Get("path"); p != "" {
		return map[string]map[string]int{p: s.privs(normPath(p))}, nil
	}
	paths := []string{"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
	for _, a := range s.fleet.ACL {
		paths = append(paths, a.Path)
	}
	for vmid := range s.deny {
		paths = append(paths, vmPath(vmid))
	}
	for _, vmid := range s.fleet.DenyMonitor {
		paths = append(paths, vmPath(vmid))
	}
	out := map[string]map[string]int{}
	for _, p := range paths {
		if pr := s.privs(p); len(pr) > 0 {
			out[p] = pr
		}
	}
	return out, nil
}
