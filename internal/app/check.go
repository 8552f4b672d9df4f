package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sundown-ups/sundown/internal/apcupsd"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/proxmox"
	"github.com/sundown-ups/sundown/internal/provider/ssh"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
)

// DefaultCheckTimeout bounds each check of Check unless CheckOptions says
// otherwise.
const DefaultCheckTimeout = 20 * time.Second

// CheckOptions tune Check.
type CheckOptions struct {
	// Timeout bounds each check on its own: one UPS; one target's connect
	// and inventory; one target's privilege check. Default 20 s.
	Timeout time.Duration
	// History holds learned step durations for the plan's estimate (see
	// LearnedDurations); may be nil.
	History map[string]time.Duration
}

// CheckResult is the outcome of one check of `sundown check`.
type CheckResult struct {
	// Kind is "ups", "target" or "plan".
	Kind string
	// Name is the UPS's or target's name; "" for the plan.
	Name string
	// OK is false when the check failed: sundown would not work as
	// configured. Warn marks a check that passed with something to look at.
	OK   bool
	Warn bool
	// What says what was verified, or what went wrong.
	What string
	// Fix says what to do, concretely, when the check failed or warns; "" when
	// there is nothing to do.
	Fix string
}

// Check verifies a site without the daemon: every UPS (the connection, TLS,
// the login and, for a primary, the PRIMARY right; the variables sundown
// reads; the UPS command), every target (connect, credentials, inventory
// and the rights the plan needs: for vSphere the privileges on its VMs and
// hosts, for Proxmox the API token's privileges on its guests and nodes,
// for an SSH host — also a libvirt host_ssh — whether sudo allows the
// shutdown command, asked with `sudo -n -l`, which never runs it) and
// the plan (its problems, and whether its estimate fits the battery). UPS
// and target checks run concurrently, each bounded by opts.Timeout. Results
// come in config order: the UPSes, the targets, then the plan.
//
// Check changes nothing: it never sends FSD, SET or INSTCMD, never powers
// anything, never runs a shutdown command, and it releases every NUT LOGIN it takes (LOGOUT, then the
// connection closes) before it returns.
func Check(ctx context.Context, c *config.Config, log *slog.Logger, opts CheckOptions) []CheckResult {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultCheckTimeout
	}
	if log == nil {
		log = discard
	}
	nu := len(c.UPS)
	out := make([]CheckResult, nu+len(c.Targets))
	runtimes := make([]time.Duration, nu)
	conns := make([]targetConn, len(c.Targets))
	defer func() {
		for _, tc := range conns {
			if tc.p != nil {
				_ = tc.p.Close()
			}
		}
	}()

	var wg sync.WaitGroup
	for i, u := range c.UPS {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
			out[i], runtimes[i] = checkUPS(cctx, u, opts.Timeout)
		})
	}
	for i, t := range c.Targets {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
			out[nu+i], conns[i] = checkTarget(cctx, t, log, opts.Timeout)
		})
	}
	wg.Wait()

	// The plan from the inventories just read (what BuildPlan does, without
	// connecting a second time).
	var invs []plan.TargetInventory
	var unreachable []string
	for i, t := range c.Targets {
		if conns[i].p == nil {
			unreachable = append(unreachable, t.Name)
			continue
		}
		invs = append(invs, TargetInventory(t, plan.TargetInventory{Inventory: conns[i].inv}))
	}
	p, problems := plan.Build(Spec(c, invs, opts.History))

	for i, t := range c.Targets {
		var check func(context.Context)
		switch tp := conns[i].p.(type) {
		case *vsphere.Provider:
			check = func(ctx context.Context) { checkPrivileges(ctx, tp, t, conns[i].inv, p, &out[nu+i]) }
		case *proxmox.Provider:
			check = func(ctx context.Context) { checkProxmoxPrivileges(ctx, tp, t, conns[i].inv, p, &out[nu+i]) }
		case *ssh.Provider:
			check = func(ctx context.Context) { checkSSHCommand(ctx, tp, t, *t.SSH, p, &out[nu+i]) }
		case hostOverSSH:
			if sp, ok := tp.host.(*ssh.Provider); ok && t.Libvirt != nil && t.Libvirt.HostSSH != nil {
				check = func(ctx context.Context) { checkSSHCommand(ctx, sp, t, *t.Libvirt.HostSSH, p, &out[nu+i]) }
			}
		}
		if check == nil {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
			check(cctx)
		})
	}
	wg.Wait()

	return append(out, checkPlan(c, p, problems, unreachable, runtimes))
}

// ---- UPS ----

// checkUPS checks one UPS and returns its battery runtime (-1 when
// unknown).
func checkUPS(ctx context.Context, u config.UPS, timeout time.Duration) (CheckResult, time.Duration) {
	switch {
	case u.NUT != nil:
		return checkNUT(ctx, u, timeout)
	case u.Apcupsd != nil:
		return checkApcupsd(ctx, u, timeout)
	}
	return CheckResult{Kind: "ups", Name: u.Name, OK: true,
		What: "fed by `sundown trigger` (or the API's trigger endpoint): nothing to reach"}, -1
}

// checkNUT connects to upsd as the daemon does, logs in when a username
// is configured (and claims PRIMARY for a primary), reads the variables
// sundown uses and looks for the UPS command; then it logs out.
func checkNUT(ctx context.Context, u config.UPS, timeout time.Duration) (res CheckResult, runtime time.Duration) {
	n := u.NUT
	res = CheckResult{Kind: "ups", Name: u.Name}
	runtime = -1
	opts := nut.Options{}
	if n.TLS != nil {
		opts.TLS = &nut.TLSOptions{CAFile: n.TLS.CAFile, ServerName: n.TLS.ServerName, Fingerprint: n.TLS.Fingerprint}
	}
	fail := func(stage string, err error, served []string) (CheckResult, time.Duration) {
		res.OK = false
		res.What = stage + " failed: " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			res.What = fmt.Sprintf("%s: no answer within %s", stage, seconds(timeout))
		}
		res.Fix = nutFix(u, stage, err, served)
		return res, -1
	}
	c, err := nut.Dial(ctx, n.Address, opts)
	if err != nil {
		return fail("connect to "+n.Address, err, nil)
	}
	loginSent := false
	defer func() {
		// Never leave a LOGIN behind: LOGOUT (upsd then closes the
		// connection), bounded even when ctx has ended; closing the
		// connection releases the login in any case.
		if loginSent {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = c.Logout(lctx)
			cancel()
		}
		_ = c.Close()
	}()

	var what []string
	if n.TLS != nil {
		what = append(what, "STARTTLS verified")
	}
	if n.Username != "" {
		if err := c.Username(ctx, n.Username); err != nil {
			return fail("USERNAME", err, nil)
		}
		if err := c.Password(ctx, n.Password.Reveal()); err != nil {
			return fail("PASSWORD", err, nil)
		}
		loginSent = true
		if err := c.Login(ctx, n.UPS); err != nil {
			return fail("LOGIN "+n.UPS+" as "+n.Username, err, listUPS(ctx, c, err))
		}
		what = append(what, "login as "+n.Username+" works")
		if n.Mode == "primary" {
			if err := c.Primary(ctx, n.UPS); err != nil {
				return fail("PRIMARY "+n.UPS+" as "+n.Username, err, nil)
			}
			what = append(what, "PRIMARY granted")
		}
	}
	vars, err := c.GetVars(ctx, n.UPS, "ups.status", "battery.charge", "battery.runtime")
	if err != nil {
		return fail("GET VAR "+n.UPS, err, listUPS(ctx, c, err))
	}
	desc, warns, fixes, ok, rt := describeReading(u, vars)
	what = append(what, desc...)
	res.OK, runtime = ok, rt
	if ok && n.UPSCommand != "" {
		cmds, err := c.ListCmd(ctx, n.UPS)
		if err != nil {
			return fail("LIST CMD "+n.UPS, err, nil)
		}
		if !slices.ContainsFunc(cmds, func(x nut.Cmd) bool { return strings.EqualFold(x.Name, n.UPSCommand) }) {
			res.OK = false
			names := make([]string, len(cmds))
			for i, x := range cmds {
				names[i] = x.Name
			}
			what = append(what, "ups_command "+n.UPSCommand+" is NOT offered by the UPS")
			fixes = append(fixes, fmt.Sprintf("set nut.ups_command to one the UPS offers (%s; `upscmd -l %s@%s`), or remove it",
				orNone(names), n.UPS, hostOf(n.Address)))
		} else {
			// upsd checks the right to send it only when it is sent, which
			// a check must not do: say what the right is.
			user := n.Username
			if user == "" {
				user = "the user"
			}
			what = append(what, fmt.Sprintf("ups_command %s offered (sending it needs `instcmds = %s` for %s in upsd.users: not tried, it would act)",
				n.UPSCommand, n.UPSCommand, user))
		}
	}
	res.Warn = res.OK && len(warns) > 0
	what = append(what, warns...)
	res.What = strings.Join(what, ", ")
	res.Fix = strings.Join(fixes, "; ")
	return res, runtime
}

// checkApcupsd reads apcupsd's status once.
func checkApcupsd(ctx context.Context, u config.UPS, timeout time.Duration) (CheckResult, time.Duration) {
	res := CheckResult{Kind: "ups", Name: u.Name}
	addr := u.Apcupsd.Address
	r, err := apcupsd.Status(ctx, addr, apcupsd.Options{})
	switch {
	case err != nil:
		res.What = "reading apcupsd's status at " + addr + " failed: " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			res.What = fmt.Sprintf("apcupsd at %s: no answer within %s", addr, seconds(timeout))
		}
		res.Fix = fmt.Sprintf("make sure apcupsd runs on %s with NETSERVER on and NISIP/NISPORT letting this machine connect (apcupsd.conf); `apcaccess status %s` must work",
			hostOf(addr), addr)
		return res, -1
	case r.CommLost():
		res.What = "apcupsd at " + addr + " answers but has lost its UPS (COMMLOST)"
		res.Fix = "check the UPS's cable and apcupsd's UPSCABLE, UPSTYPE and DEVICE settings"
		return res, -1
	}
	desc, warns, fixes, ok, rt := describeReading(u, r.Vars())
	res.OK = ok
	res.Warn = ok && len(warns) > 0
	res.What = strings.Join(append(append([]string{"apcupsd status read"}, desc...), warns...), ", ")
	res.Fix = strings.Join(fixes, "; ")
	return res, rt
}

// describeReading turns a UPS's variables into the parts of What, the
// warnings, the fixes, whether the
// reading is usable, and the runtime (-1 when not served).
func describeReading(u config.UPS, vars map[string]string) (desc, warns, fixes []string, ok bool, runtime time.Duration) {
	runtime = -1
	st := strings.TrimSpace(vars["ups.status"])
	switch st {
	case "":
		desc = append(desc, "no ups.status served")
		fixes = append(fixes, "the driver serves no ups.status: check it with `upsc "+upsRef(u)+"`")
		return desc, warns, fixes, false, runtime
	case "WAIT":
		desc = append(desc, "ups.status WAIT")
		warns = append(warns, "the driver has sent no data yet")
		fixes = append(fixes, "check the driver (`upsc "+upsRef(u)+"` must show a status other than WAIT)")
	default:
		desc = append(desc, "ups.status "+st)
		words := strings.Fields(st)
		for _, w := range []string{"OB", "LB", "FSD", "RB"} {
			if slices.Contains(words, w) {
				warns = append(warns, "the UPS reports "+w+" right now")
				break
			}
		}
	}
	if v, has := vars["battery.charge"]; has {
		desc = append(desc, "battery.charge "+v+" %")
	} else if u.MinCharge > 0 {
		warns = append(warns, "battery.charge not served")
		fixes = append(fixes, "min_charge cannot work without battery.charge: remove it or use a driver that reports the charge")
	}
	if v, has := vars["battery.runtime"]; has {
		desc = append(desc, "battery.runtime "+v+" s")
		if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 {
			runtime = time.Duration(f * float64(time.Second))
		}
	} else {
		warns = append(warns, "battery.runtime not served")
		fixes = append(fixes, "without battery.runtime the runtime budget (plan estimate + runtime_margin) cannot be checked: sundown then shuts down on LB, min_charge or on_battery_delay only; set power.on_battery_delay or min_charge, or use a driver that reports the runtime")
	}
	return desc, warns, fixes, true, runtime
}

// listUPS lists the UPS names upsd serves, after an UNKNOWN-UPS answer
// (the connection stays usable after an ERR).
func listUPS(ctx context.Context, c *nut.Client, err error) []string {
	if !errors.Is(err, nut.ErrUnknownUPS) {
		return nil
	}
	ups, lerr := c.ListUPS(ctx)
	if lerr != nil {
		return nil
	}
	names := make([]string, len(ups))
	for i, x := range ups {
		names[i] = x.Name
	}
	return names
}

// nutFix says what to do about a failed NUT check.
func nutFix(u config.UPS, stage string, err error, served []string) string {
	n := u.NUT
	host := hostOf(n.Address)
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.Is(err, nut.ErrAccessDenied) && strings.HasPrefix(stage, "PRIMARY"):
		return fmt.Sprintf("add `upsmon primary` for user %s in upsd.users on %s (it may LOGIN but not claim primary) and reload upsd, or set mode: secondary",
			n.Username, host)
	case errors.Is(err, nut.ErrAccessDenied):
		return fmt.Sprintf("upsd refused user %s: check the password (%s) and that upsd.users on %s has [%s] with `upsmon secondary` (or `upsmon primary`); reload upsd after editing",
			n.Username, passwordSource(n), host, n.Username)
	case errors.Is(err, nut.ErrInvalidUsername), errors.Is(err, nut.ErrInvalidPassword):
		return fmt.Sprintf("upsd rejected the user name or password as malformed: check nut.username and the password (%s)", passwordSource(n))
	case errors.Is(err, nut.ErrUnknownUPS):
		return fmt.Sprintf("upsd on %s has no UPS named %q: it serves %s (`upsc -l %s`); set nut.ups to the right one", host, n.UPS, orNone(served), host)
	case errors.Is(err, nut.ErrDataStale):
		return fmt.Sprintf("the driver of %s sends no fresh data: check the driver and the UPS cable (`upsdrvctl stop %s; upsdrvctl start %s`, the driver's log)", n.UPS, n.UPS, n.UPS)
	case errors.Is(err, nut.ErrDriverNotConnected):
		return fmt.Sprintf("upsd on %s has no connection to the driver of %s: start the driver (`upsdrvctl start %s`) and check the UPS cable", host, n.UPS, n.UPS)
	case errors.Is(err, nut.ErrFingerprintMismatch):
		return fmt.Sprintf("the certificate of %s does not match nut.tls.fingerprint: if upsd got a new certificate, check it and update the fingerprint", host)
	case errors.Is(err, nut.ErrFeatureNotConfigured):
		return fmt.Sprintf("upsd on %s has no TLS configured: add CERTFILE (or CERTPATH and CERTIDENT) to upsd.conf, or remove nut.tls", host)
	case errors.Is(err, nut.ErrFeatureNotSupported):
		return fmt.Sprintf("upsd on %s was built without TLS support: install a NUT build with TLS, or remove nut.tls", host)
	case errors.As(err, &he):
		return fmt.Sprintf("the certificate of %s is not valid for the name checked (%s): set nut.tls.server_name to a name in the certificate", host, he.Error())
	case errors.As(err, &ua):
		return fmt.Sprintf("the certificate of %s is not signed by a CA in nut.tls.ca_file: point ca_file at the CA that signed upsd's certificate (or pin it with nut.tls.fingerprint)", host)
	case errors.As(err, &ci):
		return fmt.Sprintf("the certificate of %s is not valid (%s): renew it", host, ci.Error())
	case errors.Is(err, nut.ErrTLS):
		return fmt.Sprintf("STARTTLS with %s failed: check nut.tls (ca_file, server_name, fingerprint) and upsd's CERTFILE", host)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nut.ErrTimeout):
		return fmt.Sprintf("no answer from %s: check that upsd runs and listens there (LISTEN in upsd.conf) and that no firewall drops the port", n.Address)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: start upsd, check LISTEN in upsd.conf and nut.address", n.Address)
	case errors.Is(err, nut.ErrTransport):
		return fmt.Sprintf("cannot reach upsd at %s: check nut.address, that upsd runs, and the network and firewall between", n.Address)
	}
	return "see the error; compare with `upsc " + upsRef(u) + "` run on this machine"
}

func passwordSource(n *config.NUT) string {
	switch {
	case n.PasswordFile != "":
		return "password_file " + n.PasswordFile
	case n.PasswordEnv != "":
		return "$" + n.PasswordEnv
	}
	return "the configured password"
}

func upsRef(u config.UPS) string {
	if u.NUT != nil {
		return u.NUT.UPS + "@" + hostOf(u.NUT.Address)
	}
	return u.Name
}

// ---- targets ----

// targetConn is a target Check connected to, kept open for the plan and
// the privilege check.
type targetConn struct {
	p   provider.Provider
	inv provider.Inventory
}

func checkTarget(ctx context.Context, t config.Target, log *slog.Logger, timeout time.Duration) (CheckResult, targetConn) {
	res := CheckResult{Kind: "target", Name: t.Name}
	fail := func(stage string, err error) (CheckResult, targetConn) {
		res.What = stage + ": " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			res.What = fmt.Sprintf("%s: no answer within %s (%v)", stage, seconds(timeout), err)
		}
		res.Fix = targetFix(t, err)
		return res, targetConn{}
	}
	p, err := NewProvider(ctx, t, log)
	if err != nil {
		return fail("connect", err)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		_ = p.Close()
		return fail("connected, but reading the inventory failed", err)
	}
	res.OK = true
	res.What = fmt.Sprintf("%s: %s", describeTarget(t), countInventory(inv))

	// What the config asks of the hosts, against what the backend can do.
	caps := provider.CapabilitiesOf(p)
	var fixes []string
	if t.Hosts.Maintenance && !caps.Maintenance {
		res.Warn = true
		fixes = append(fixes, "this kind of target has no maintenance mode: remove hosts.maintenance (the hosts are shut down without it)")
	}
	if t.Hosts.Shutdown && !caps.HostShutdown {
		res.Warn = true
		fixes = append(fixes, "this kind of target cannot shut its hosts down: remove hosts.shutdown, or add a way to (libvirt: host_ssh)")
	}
	res.Fix = strings.Join(fixes, "; ")
	return res, targetConn{p: p, inv: inv}
}

func describeTarget(t config.Target) string {
	switch {
	case t.VSphere != nil:
		return "vSphere login as " + t.VSphere.Username + " works"
	case t.Proxmox != nil:
		return "Proxmox API token " + t.Proxmox.TokenID + " accepted"
	case t.ESXiSSH != nil:
		return "ESXi over SSH as " + t.ESXiSSH.User + " (host key verified) works"
	case t.Libvirt != nil:
		return "libvirt connection works"
	case t.SSH != nil:
		return "SSH as " + t.SSH.User + " to " + t.SSH.Address + " (host key verified) works"
	case t.Local != nil:
		return "the local machine"
	}
	return "connected"
}

func countInventory(inv provider.Inventory) string {
	return fmt.Sprintf("%d %s on %d %s", len(inv.Guests), plural(len(inv.Guests), "guest", "guests"),
		len(inv.Hosts), plural(len(inv.Hosts), "host", "hosts"))
}

// targetFix says what to do about a target that could not be connected or
// read, from the provider's error class.
func targetFix(t config.Target, err error) string {
	var pe *provider.Error
	errors.As(err, &pe)
	msg := err.Error()
	switch provider.ClassOf(err) {
	case provider.Auth:
		switch {
		case t.VSphere != nil:
			return fmt.Sprintf("the login as %s was refused: check username and the password (%s); for vCenter SSO the user is usually user@vsphere.local",
				t.VSphere.Username, secretSource(t.VSphere.PasswordFile, t.VSphere.PasswordEnv))
		case t.Proxmox != nil:
			return fmt.Sprintf("the API token %s was refused: check token_id (user@realm!name) and its secret (%s); the token must exist and not be expired (Datacenter › Permissions › API Tokens)",
				t.Proxmox.TokenID, secretSource(t.Proxmox.SecretFile, t.Proxmox.SecretEnv))
		}
		return "the SSH key was refused: add the public key of key_file to the user's authorized_keys on the host"
	case provider.Permission:
		if pe != nil && pe.Privilege != "" {
			return "grant the role privilege " + pe.Privilege + " to the account sundown uses"
		}
		return "give the account sundown uses a role that can read the inventory (vSphere: System.View and System.Read; Proxmox: VM.Audit and Sys.Audit)"
	case provider.Unreachable:
		return "cannot reach the target: check its address, that it is up, and the network and firewall between"
	case provider.Transient:
		if errors.Is(err, context.DeadlineExceeded) {
			return "no answer in time: check the address and that no firewall silently drops the connection"
		}
	}
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	untrusted := errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cv) ||
		strings.Contains(msg, "thumbprint") || strings.Contains(msg, "fingerprint") || strings.Contains(msg, "certificate")
	switch {
	case strings.Contains(msg, "host key changed"):
		return fmt.Sprintf("the host key of %s changed: check it (was the host reinstalled?) and update %s", sshAddress(t), knownHosts(t))
	case strings.Contains(msg, "has no key for"):
		return fmt.Sprintf("add the host key of %s to %s (from `ssh-keyscan`, after checking its fingerprint)", sshAddress(t), knownHosts(t))
	case untrusted && t.VSphere != nil:
		return "the server's certificate is not trusted: set ca_file to the CA that signed it (vCenter: https://VCENTER/certs/download.zip) or thumbprint to its fingerprint"
	case untrusted && t.Proxmox != nil:
		return "the server's certificate is not trusted: set ca_file (the cluster CA, /etc/pve/pve-root-ca.pem) or fingerprint (Node › Certificates)"
	case errors.Is(err, syscall.ECONNREFUSED) || isNetErr(err):
		return "cannot reach the target: check its address, that it is up, and the firewall"
	}
	return "correct the target's settings (the error says what is wrong)"
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

func secretSource(file, env string) string {
	switch {
	case file != "":
		return file
	case env != "":
		return "$" + env
	}
	return "the configured secret"
}

func sshAddress(t config.Target) string {
	switch {
	case t.SSH != nil:
		return t.SSH.Address
	case t.ESXiSSH != nil:
		return t.ESXiSSH.Address
	case t.Libvirt != nil && t.Libvirt.HostSSH != nil:
		return t.Libvirt.HostSSH.Address
	}
	return "the host"
}

func knownHosts(t config.Target) string {
	switch {
	case t.SSH != nil:
		return t.SSH.KnownHostsFile
	case t.ESXiSSH != nil:
		return t.ESXiSSH.KnownHostsFile
	case t.Libvirt != nil && t.Libvirt.HostSSH != nil:
		return t.Libvirt.HostSSH.KnownHostsFile
	}
	return "known_hosts"
}

// ---- vSphere privileges ----

// vsphereNeeds lists the privileges the plan (and the restore that undoes
// it) needs on target's VMs and hosts, in a stable order.
func vsphereNeeds(p *plan.Plan, target string) []vsphere.Need {
	byPriv := map[string]*vsphere.Need{}
	var order []string
	add := func(op, vm, host string) {
		priv, ok := vsphere.OpPrivilege(op)
		if !ok {
			return
		}
		n := byPriv[priv]
		if n == nil {
			n = &vsphere.Need{Privilege: priv}
			byPriv[priv] = n
			order = append(order, priv)
		}
		if vm != "" && !slices.Contains(n.VMs, vm) {
			n.VMs = append(n.VMs, vm)
		}
		if host != "" && !slices.Contains(n.Hosts, host) {
			n.Hosts = append(n.Hosts, host)
		}
	}
	for _, st := range p.Steps {
		if st.Target != target {
			continue
		}
		switch st.Kind {
		case plan.StepGuest:
			acts := false
			for _, a := range st.Chain {
				switch a.Kind {
				case plan.Shutdown:
					add("ShutdownGuest", st.GuestID, "")
				case plan.PowerOff:
					add("PowerOffGuest", st.GuestID, "")
				case plan.Suspend:
					add("SuspendGuest", st.GuestID, "")
				default:
					continue
				}
				acts = true
			}
			if acts {
				add("PowerOnGuest", st.GuestID, "") // the restore powers it on again
			}
		case plan.StepHostMaintenance:
			if st.HostID != "" {
				add("EnterMaintenance", "", st.HostID)
			}
		case plan.StepHostShutdown:
			if st.HostID != "" {
				add("ShutdownHost", "", st.HostID)
			}
		}
	}
	slices.SortFunc(order, func(a, b string) int { return privRank(a) - privRank(b) })
	out := make([]vsphere.Need, 0, len(order))
	for _, priv := range order {
		out = append(out, *byPriv[priv])
	}
	return out
}

func privRank(p string) int {
	return slices.Index([]string{vsphere.PrivPowerOff, vsphere.PrivSuspend, vsphere.PrivPowerOn, vsphere.PrivMaintenance}, p)
}

// checkPrivileges asks vSphere whether the account holds the privileges
// the plan needs on this target, and updates res.
func checkPrivileges(ctx context.Context, vs *vsphere.Provider, t config.Target, inv provider.Inventory, p *plan.Plan, res *CheckResult) {
	needs := vsphereNeeds(p, t.Name)
	if len(needs) == 0 {
		res.What += "; the plan does nothing on it, so no privilege to verify"
		return
	}
	missing, err := vs.MissingPrivileges(ctx, needs)
	if err != nil {
		res.Warn = true
		res.What += "; the privileges could not be verified: " + err.Error()
		res.Fix = joinFix(res.Fix, "verify by hand that the account's role has "+privList(needs)+" (see the vsphere provider's README)")
		return
	}
	names := map[string]string{}
	for _, g := range inv.Guests {
		names[g.ID] = g.Name
	}
	for _, h := range inv.Hosts {
		names[h.ID] = h.Name
	}
	if len(missing) == 0 {
		res.What += "; privileges verified: " + describeNeeds(needs, nil)
		return
	}
	res.OK = false
	res.What += "; MISSING privileges: " + describeNeeds(missing, names)
	var onVMs, onHosts, grants []string
	for _, m := range missing {
		if len(m.VMs) > 0 {
			onVMs = append(onVMs, m.Privilege)
		}
		if len(m.Hosts) > 0 {
			onHosts = append(onHosts, m.Privilege)
		}
	}
	if len(onVMs) > 0 {
		grants = append(grants, strings.Join(onVMs, ", ")+" on the VMs")
	}
	if len(onHosts) > 0 {
		grants = append(grants, strings.Join(onHosts, ", ")+" on the hosts")
	}
	res.Fix = joinFix(fmt.Sprintf("grant the role of %s %s %s (assign the role on the vCenter root with Propagate to children)",
		t.VSphere.Username, plural(len(onVMs)+len(onHosts), "the privilege", "the privileges"), strings.Join(grants, " and ")), res.Fix)
}

func privList(needs []vsphere.Need) string {
	var ps []string
	for _, n := range needs {
		ps = append(ps, n.Privilege)
	}
	return strings.Join(ps, ", ")
}

// describeNeeds renders needs as "P on 6 VMs, Q on 3 hosts"; with names,
// the entities are named (at most 5 each).
func describeNeeds(needs []vsphere.Need, names map[string]string) string {
	var parts []string
	for _, n := range needs {
		var on []string
		if len(n.VMs) > 0 {
			on = append(on, entities(n.VMs, "VM", "VMs", names))
		}
		if len(n.Hosts) > 0 {
			on = append(on, entities(n.Hosts, "host", "hosts", names))
		}
		parts = append(parts, n.Privilege+" on "+strings.Join(on, " and "))
	}
	return strings.Join(parts, ", ")
}

func entities(ids []string, one, many string, names map[string]string) string {
	s := fmt.Sprintf("%d %s", len(ids), plural(len(ids), one, many))
	if names == nil {
		return s
	}
	var shown []string
	for i, id := range ids {
		if i == 5 {
			shown = append(shown, fmt.Sprintf("and %d more", len(ids)-5))
			break
		}
		if nm := names[id]; nm != "" {
			shown = append(shown, nm)
		} else {
			shown = append(shown, id)
		}
	}
	return s + " (" + strings.Join(shown, ", ") + ")"
}

// ---- Proxmox privileges ----

// proxmoxNeeds lists the guests the plan acts on (shutdown, power off,
// suspend; the restore starts them again) and the nodes it shuts down on
// target.
func proxmoxNeeds(p *plan.Plan, target string) (guests, nodes []string) {
	for _, st := range p.Steps {
		if st.Target != target {
			continue
		}
		switch st.Kind {
		case plan.StepGuest:
			for _, a := range st.Chain {
				if (a.Kind == plan.Shutdown || a.Kind == plan.PowerOff || a.Kind == plan.Suspend) && !slices.Contains(guests, st.GuestID) {
					guests = append(guests, st.GuestID)
				}
			}
		case plan.StepHostShutdown:
			if st.HostID != "" && !slices.Contains(nodes, st.HostID) {
				nodes = append(nodes, st.HostID)
			}
		}
	}
	return guests, nodes
}

// checkProxmoxPrivileges asks Proxmox VE which privileges the API token
// holds where the plan acts, and updates res.
func checkProxmoxPrivileges(ctx context.Context, pv *proxmox.Provider, t config.Target, inv provider.Inventory, p *plan.Plan, res *CheckResult) {
	guests, nodes := proxmoxNeeds(p, t.Name)
	if len(guests)+len(nodes) == 0 {
		res.What += "; the plan does nothing on it, so no privilege to verify"
		return
	}
	req, err := pv.RequiredPrivileges(ctx, guests, nodes)
	var missing []proxmox.Grant
	if err == nil {
		missing, err = pv.MissingPrivileges(ctx, req)
	}
	if err != nil {
		res.Warn = true
		res.What += "; the privileges could not be verified: " + err.Error()
		user, tok, _ := strings.Cut(t.Proxmox.TokenID, "!")
		res.Fix = joinFix(res.Fix, fmt.Sprintf("verify by hand (`pveum user token permissions %s %s`) that the token has VM.PowerMgmt on the guests' /vms/{vmid}%s (see the proxmox provider's README)",
			user, shq(tok), nodeHint(nodes)))
		return
	}
	names := map[string]string{}
	for _, g := range inv.Guests {
		names[g.ID] = g.Name
	}
	if len(missing) == 0 {
		res.What += "; privileges verified: " + describeGrants(req, nil)
		return
	}
	res.OK = false
	res.What += "; MISSING privileges: " + describeGrants(missing, names)
	res.Fix = joinFix(proxmoxFix(t.Proxmox.TokenID, missing), res.Fix)
}

func nodeHint(nodes []string) string {
	if len(nodes) == 0 {
		return ""
	}
	return " and Sys.PowerMgmt on /nodes/{node}"
}

// describeGrants renders grants as "VM.PowerMgmt on /vms/101 (web), …";
// without names it counts: "VM.PowerMgmt on 3 guests, Sys.PowerMgmt on 1
// node, Sys.Console on / (2 HA guests)".
func describeGrants(gs []proxmox.Grant, names map[string]string) string {
	if names == nil {
		type agg struct{ guests, nodes, root int }
		byPriv := map[string]*agg{}
		var order []string
		for _, g := range gs {
			for _, pr := range g.Privileges {
				a := byPriv[pr]
				if a == nil {
					a = &agg{}
					byPriv[pr] = a
					order = append(order, pr)
				}
				switch {
				case g.Path == "/":
					a.root += len(g.For)
				case strings.HasPrefix(g.Path, "/nodes/"):
					a.nodes++
				default:
					a.guests++
				}
			}
		}
		var parts []string
		for _, pr := range order {
			a := byPriv[pr]
			switch {
			case a.root > 0:
				parts = append(parts, fmt.Sprintf("%s on / (%d HA %s)", pr, a.root, plural(a.root, "guest", "guests")))
			case a.nodes > 0:
				parts = append(parts, fmt.Sprintf("%s on %d %s", pr, a.nodes, plural(a.nodes, "node", "nodes")))
			default:
				parts = append(parts, fmt.Sprintf("%s on %d %s", pr, a.guests, plural(a.guests, "guest", "guests")))
			}
		}
		return strings.Join(parts, ", ")
	}
	var parts []string
	for i, g := range gs {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("and %d more paths", len(gs)-8))
			break
		}
		var who []string
		for _, f := range g.For {
			if n := names[f]; n != "" {
				who = append(who, n)
			} else {
				who = append(who, f)
			}
		}
		s := strings.Join(g.Privileges, ", ") + " on " + g.Path
		if g.Path == "/" {
			s += " (to set the HA state of " + strings.Join(who, ", ") + ")"
		} else {
			s += " (" + strings.Join(who, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// proxmoxFix gives the pveum commands that grant what is missing.
func proxmoxFix(token string, missing []proxmox.Grant) string {
	var vms []string
	var cmds []string
	custom := map[string]bool{}
	for _, m := range missing {
		if strings.HasPrefix(m.Path, "/vms/") && len(m.Privileges) == 1 && m.Privileges[0] == proxmox.PrivVMPowerMgmt {
			vms = append(vms, m.Path)
			continue
		}
		for _, pr := range m.Privileges {
			custom[pr] = true
		}
		cmds = append(cmds, fmt.Sprintf("`pveum acl modify %s --tokens %s --roles Sundown`", m.Path, shq(token)))
	}
	if len(vms) > 3 {
		vms = []string{"/vms"} // propagates to every guest
	}
	var vmCmds []string
	for _, path := range vms {
		vmCmds = append(vmCmds, fmt.Sprintf("`pveum acl modify %s --tokens %s --roles PVEVMUser`", path, shq(token)))
	}
	cmds = append(vmCmds, cmds...)
	out := "grant the API token " + token + " what it lacks: " + strings.Join(cmds, "; ")
	if len(custom) > 0 {
		var privs []string
		for _, pr := range []string{proxmox.PrivVMPowerMgmt, proxmox.PrivSysPowerMgmt, proxmox.PrivSysConsole} {
			if custom[pr] {
				privs = append(privs, pr)
			}
		}
		out += fmt.Sprintf(" (first `pveum role add Sundown --privs \"%s\"`, or add them to the token's role)", strings.Join(privs, " "))
	}
	return out + "; with privilege separation the token's user needs them too"
}

// shq quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ---- SSH shutdown command ----

// checkSSHCommand asks the host whether its shutdown command may run
// (`sudo -n -l`, which never runs it) when the plan shuts the host down,
// and updates res.
func checkSSHCommand(ctx context.Context, sp *ssh.Provider, t config.Target, h config.SSHHost, p *plan.Plan, res *CheckResult) {
	shuts := false
	for _, st := range p.Steps {
		if st.Target == t.Name && st.Kind == plan.StepHostShutdown {
			shuts = true
		}
	}
	if !shuts {
		res.What += "; the plan does not shut the host down, so its shutdown command is not checked"
		return
	}
	cc, err := sp.CheckCommand(ctx)
	if err != nil {
		res.Warn = true
		res.What += "; the shutdown command could not be checked: " + err.Error()
		res.Fix = joinFix(res.Fix, fmt.Sprintf("check by hand on %s that %s may run `%s` without a password", h.Address, h.User, cc.Command))
		return
	}
	switch cc.Verdict {
	case ssh.Allowed:
		res.What += fmt.Sprintf("; shutdown command `%s` allowed (`%s`: %s)", cc.Command, cc.Probe, strings.TrimPrefix(cc.Detail, "sudo allows it without a password: "))
	case ssh.Refused:
		res.OK = false
		res.What += fmt.Sprintf("; shutdown command `%s` REFUSED: %s", cc.Command, cc.Detail)
		res.Fix = joinFix(fmt.Sprintf("on %s add the sudoers rule `%s` (`visudo -f /etc/sudoers.d/sundown`)", h.Address, cc.Sudoers), res.Fix)
	default:
		res.Warn = true
		res.What += fmt.Sprintf("; shutdown command `%s` cannot be verified without running it: %s", cc.Command, cc.Detail)
		res.Fix = joinFix(res.Fix, fmt.Sprintf("make sure %s may run `%s` on %s (try it by hand in a maintenance window)", h.User, cc.Command, h.Address))
	}
}

// ---- plan ----

func checkPlan(c *config.Config, p *plan.Plan, problems []plan.Problem, unreachable []string, runtimes []time.Duration) CheckResult {
	res := CheckResult{Kind: "plan", OK: true}
	var errs, warns, what, fixes []string
	for _, pr := range problems {
		if pr.Warning {
			warns = append(warns, pr.String())
		} else {
			errs = append(errs, pr.String())
		}
	}
	if len(errs) > 0 {
		res.OK = false
		fixes = append(fixes, "correct these in the shutdown: section (`sundown plan -c FILE` shows the plan)")
	}
	if len(c.Targets) == 0 {
		res.Warn = len(warns) > 0
		res.What = strings.Join(append(append([]string{"no targets: sundown watches the power and shuts nothing down"}, errs...), warns...), "; ")
		res.Fix = strings.Join(fixes, "; ")
		return res
	}
	guests, hosts := 0, 0
	for _, st := range p.Steps {
		switch st.Kind {
		case plan.StepGuest:
			guests++
		case plan.StepHostMaintenance, plan.StepHostShutdown:
			hosts++
		}
	}
	s := p.Estimate(p.Caps)
	what = append(what, fmt.Sprintf("%d guest %s, %d host %s; makespan %s s, critical path %s s",
		guests, plural(guests, "step", "steps"), hosts, plural(hosts, "step", "steps"), secs(s.Makespan), secs(s.CriticalPathLen)))
	if len(unreachable) > 0 {
		warns = append(warns, fmt.Sprintf("%s could not be read: %s guests are missing from this plan and estimate",
			strings.Join(unreachable, ", "), plural(len(unreachable), "its", "their")))
		fixes = append(fixes, "fix the target(s) above first")
	}
	rt, known := time.Duration(0), false
	for i, r := range runtimes {
		if pv := c.UPS[i].PowerValue; pv != nil && *pv == 0 {
			continue // monitored only: it feeds none of this site's supplies
		}
		if r > 0 && (!known || r < rt) {
			rt, known = r, true
		}
	}
	m := s.Margin(rt, c.Power.RuntimeMargin.D())
	what = append(what, "battery: "+m.String())
	switch {
	case !known:
		warns = append(warns, "no UPS reports battery.runtime")
		fixes = append(fixes, fmt.Sprintf("make sure the battery lasts at least %s s (plan + runtime_margin)", secs(m.Plan+m.Required)))
	case !m.Fits:
		res.OK = false
		fixes = append(fixes, fmt.Sprintf("the plan (%s s) plus runtime_margin (%s s) needs more than the %s s the battery holds now: shorten the action timeouts (shutdown.default_action, groups' action), raise shutdown.caps, shed load earlier (shed:), or lower power.runtime_margin",
			secs(m.Plan), secs(m.Required), secs(m.Runtime)))
	}
	res.Warn = res.OK && len(warns) > 0
	res.What = strings.Join(append(append(what, errs...), warns...), "; ")
	res.Fix = strings.Join(fixes, "; ")
	return res
}

// ---- small helpers ----

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// secs renders d in whole seconds, rounded.
func secs(d time.Duration) string {
	return strconv.FormatInt(int64(d.Round(time.Second)/time.Second), 10)
}

// seconds renders a timeout as "20 s" (or "0.5 s").
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	return strings.Join(names, ", ")
}

func joinFix(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
