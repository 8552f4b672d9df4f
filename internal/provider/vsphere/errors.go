package vsphere

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

// topFault returns the outermost vSphere fault in err, or nil.
func topFault(err error) types.BaseMethodFault {
	if err == nil {
		return nil
	}
	var top types.BaseMethodFault
	fault.In(err, func(f types.BaseMethodFault, _ string, _ []types.LocalizableMessage) bool {
		top = f
		return true
	})
	return top
}

func isNotAuthenticated(err error) bool {
	_, ok := topFault(err).(*types.NotAuthenticated)
	return ok
}

// invalidPowerState reports whether err is an InvalidPowerState fault.
func invalidPowerState(err error) bool {
	_, ok := topFault(err).(*types.InvalidPowerState)
	return ok
}

// invalidState reports whether err is an InvalidState fault or one of its
// subtypes that mean "not in the right state for this".
func invalidState(err error) bool {
	switch topFault(err).(type) {
	case *types.InvalidState, *types.InvalidPowerState, *types.InvalidHostState:
		return true
	}
	return false
}

// classify turns any error from govmomi into a *provider.Error. An
// *provider.Error passes through unchanged. When ctx has ended the class is
// Transient and the result wraps ctx.Err().
func classify(ctx context.Context, op, target string, err error) error {
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: err}
	}
	e := &provider.Error{Op: op, Target: target, Err: err}
	e.Class, e.Privilege = classOf(err)
	return e
}

func classOf(err error) (provider.Class, string) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return provider.Transient, ""
	}
	switch f := topFault(err).(type) {
	case nil:
	case *types.NotAuthenticated, *types.InvalidLogin:
		return provider.Auth, ""
	case *types.NoPermission:
		return provider.Permission, privilegeOf(f)
	case *types.ManagedObjectNotFound, *types.NotFound:
		return provider.NotFound, ""
	case *types.ToolsUnavailable, *types.NotSupported, *types.NotImplemented,
		*types.MethodNotFound, *types.MethodDisabled,
		*types.RestrictedVersion: // free ESXi licence: the API is read-only
		return provider.Unsupported, ""
	case *types.RestrictedByAdministrator:
		return provider.Permission, ""
	case *types.TaskInProgress, *types.ConcurrentAccess, *types.Timedout,
		*types.NetworkDisruptedAndConfigRolledBack, *types.RequestCanceled:
		return provider.Transient, ""
	case *types.HostCommunication, *types.HostNotConnected, *types.HostNotReachable:
		return provider.Unreachable, ""
	default:
		return provider.Permanent, ""
	}
	// Not a vSphere fault: transport and TLS errors.
	if untrusted(err) {
		return provider.Permanent, ""
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return provider.Unreachable, ""
	}
	return provider.Permanent, ""
}

// untrusted reports whether err is a certificate verification failure.
func untrusted(err error) bool {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	return errors.Is(err, errPinMismatch) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &cv)
}

// privilegeOf names the missing privilege(s) of a NoPermission fault: the
// PrivilegeId, or for vSphere 8 the missingPrivileges list.
func privilegeOf(f *types.NoPermission) string {
	if f.PrivilegeId != "" {
		return f.PrivilegeId
	}
	var ids []string
	for _, m := range f.MissingPrivileges {
		ids = append(ids, m.PrivilegeIds...)
	}
	return strings.Join(ids, ",")
}
