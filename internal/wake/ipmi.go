package wake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/sundown-ups/sundown/internal/config"
)

// IPMI defaults.
const (
	DefaultIPMIPort        = 623
	DefaultIPMITimeout     = 10 * time.Second
	DefaultIPMICipherSuite = 3
	DefaultIPMIPrivilege   = "operator"

	// closeTimeout bounds the Close Session sent after every call, so a
	// BMC that stopped answering cannot hold the caller.
	closeTimeout = time.Second
	// maxIPMIUser and maxIPMIPassword are the IPMI 2.0 field limits.
	maxIPMIUser     = 16
	maxIPMIPassword = 20
)

// IPMIConfig configures an IPMI waker (a BMC reached over RMCP+/lanplus).
type IPMIConfig struct {
	// Host is the BMC's address or name. Required.
	Host string
	// Port is the BMC's UDP port (default 623).
	Port int
	// User is the BMC user name. Required (at most 16 bytes).
	User string
	// Password of User (at most 20 bytes). Never printed.
	Password config.Secret
	// Privilege is the session privilege requested: "operator" (default;
	// the least that may control chassis power) or "administrator".
	Privilege string
	// Timeout bounds each call (session setup, command, close), default
	// 10s. The caller's context may end it sooner.
	Timeout time.Duration
	// CipherSuite is the RMCP+ cipher suite ID (default 3:
	// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128, which every BMC
	// supports). Naming it avoids a discovery round some BMCs (and
	// ipmi_sim) do not answer, which costs seconds per call.
	CipherSuite int
}

// IPMI powers a machine on and off through its BMC. Each call opens its own
// RMCP+ session and closes it before returning, so an IPMI value holds no
// connection and needs no Close; it is safe for concurrent use.
type IPMI struct {
	host     string
	port     int
	user     string
	password config.Secret
	priv     types.PrivilegeLevel
	timeout  time.Duration
	suite    types.CipherSuiteID
	target   string
}

var _ Waker = (*IPMI)(nil)

// NewIPMI validates cfg. Errors name the bad field; the password never
// appears in them.
func NewIPMI(cfg IPMIConfig) (*IPMI, error) {
	var problems []string
	if cfg.Host == "" {
		problems = append(problems, "host: required")
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultIPMIPort
	}
	if port < 1 || port > 65535 {
		problems = append(problems, fmt.Sprintf("port %d: out of range 1-65535", port))
	}
	if cfg.User == "" {
		problems = append(problems, "user: required")
	} else if len(cfg.User) > maxIPMIUser {
		problems = append(problems, fmt.Sprintf("user: longer than %d bytes", maxIPMIUser))
	}
	if len(cfg.Password.Reveal()) > maxIPMIPassword {
		problems = append(problems, fmt.Sprintf("password: longer than %d bytes", maxIPMIPassword))
	}
	var priv types.PrivilegeLevel
	switch strings.ToLower(cfg.Privilege) {
	case "", "operator":
		priv = types.PrivilegeLevelOperator
	case "administrator", "admin":
		priv = types.PrivilegeLevelAdministrator
	default:
		problems = append(problems, fmt.Sprintf("privilege %q: want operator or administrator", cfg.Privilege))
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultIPMITimeout
	}
	if timeout < 0 {
		problems = append(problems, fmt.Sprintf("timeout %s: negative", timeout))
	}
	suite := cfg.CipherSuite
	if suite == 0 {
		suite = DefaultIPMICipherSuite
	}
	if suite < 0 || suite > 255 {
		problems = append(problems, fmt.Sprintf("cipher suite %d: not supported", suite))
	} else if _, _, _, ok := types.GetCipherSuiteAlgorithms(types.CipherSuiteID(suite)); !ok {
		problems = append(problems, fmt.Sprintf("cipher suite %d: not supported", suite))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("ipmi %s: %s", cfg.Host, strings.Join(problems, "; "))
	}
	return &IPMI{
		host:     cfg.Host,
		port:     port,
		user:     cfg.User,
		password: cfg.Password,
		priv:     priv,
		timeout:  timeout,
		suite:    types.CipherSuiteID(suite),
		target:   net.JoinHostPort(cfg.Host, strconv.Itoa(port)),
	}, nil
}

// String names the waker in logs: "ipmi 10.0.0.5:623".
func (b *IPMI) String() string { return "ipmi " + b.target }

// PowerStatus reports whether the chassis power is on (Get Chassis Status).
func (b *IPMI) PowerStatus(ctx context.Context) (bool, error) {
	var on bool
	err := b.session(ctx, "ipmi power-status", func(ctx context.Context, c *client.Client) error {
		var err error
		on, err = powerIsOn(ctx, c)
		return err
	})
	return on, err
}

// PowerOn sends Chassis Control "power up". The BMC acknowledges at once;
// the machine then boots on its own.
func (b *IPMI) PowerOn(ctx context.Context) error {
	return b.control(ctx, "ipmi power-on", chassis.ChassisControlPowerUp)
}

// PowerOff sends Chassis Control "power down": a hard power cut, like
// holding the power button. The operating system does not shut down.
func (b *IPMI) PowerOff(ctx context.Context) error {
	return b.control(ctx, "ipmi power-off", chassis.ChassisControlPowerDown)
}

// SoftOff sends Chassis Control "soft shutdown": the BMC emulates an ACPI
// power-button press and the operating system decides whether and when
// to shut down. Success means only that the BMC accepted the request.
func (b *IPMI) SoftOff(ctx context.Context) error {
	return b.control(ctx, "ipmi soft-off", chassis.ChassisControlSoftShutdown)
}

// Wake powers the chassis on unless it already is, in one session:
// idempotent, and it never power-cycles a running machine.
func (b *IPMI) Wake(ctx context.Context) error {
	return b.session(ctx, "ipmi wake", func(ctx context.Context, c *client.Client) error {
		on, err := powerIsOn(ctx, c)
		if err != nil {
			return err
		}
		if on {
			return nil
		}
		_, err = c.ChassisControl(ctx, chassis.ChassisControlPowerUp)
		return err
	})
}

// Awake reports whether the chassis power is on.
func (b *IPMI) Awake(ctx context.Context) (bool, error) { return b.PowerStatus(ctx) }

func (b *IPMI) control(ctx context.Context, op string, ctl chassis.ChassisControl) error {
	return b.session(ctx, op, func(ctx context.Context, c *client.Client) error {
		_, err := c.ChassisControl(ctx, ctl)
		return err
	})
}

func powerIsOn(ctx context.Context, c *client.Client) (bool, error) {
	res, err := c.GetChassisStatus(ctx)
	if err != nil {
		return false, err
	}
	return res.PowerIsOn, nil
}

// session runs fn inside one RMCP+ session bounded by the configured
// timeout, always closes the session, and classifies any failure.
func (b *IPMI) session(ctx context.Context, op string, fn func(context.Context, *client.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()

	c, err := client.NewClient(b.host, b.port, b.user, b.password.Reveal())
	if err != nil {
		return b.fail(ctx, op, err)
	}
	c.WithCipherSuiteID(b.suite)
	c.WithMaxPrivilegeLevel(b.priv)
	// The library tries each exchange 5 times (1 + 4 retries, as
	// ipmitool does); keep all tries inside the call's timeout.
	c.WithTimeout(min(time.Second, b.timeout/5))

	err = c.Connect(ctx)
	if err != nil {
		// No session to close: a BMC ignores Close Session outside an
		// active session, so waiting for its reply only wastes time.
		// Close with a done context releases the socket and sends
		// nothing.
		done, cancelDone := context.WithCancel(context.WithoutCancel(ctx))
		cancelDone()
		_ = c.Close(done)
		return b.fail(ctx, op, err)
	}
	err = fn(ctx, c)
	// Close gets its own short deadline because ctx may be the reason fn
	// failed; the session must still be freed (BMCs have few).
	closeCtx, closeCancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	// A lost Close Session reply changes nothing about the command's
	// outcome; the BMC times the session out on its own.
	_ = c.Close(closeCtx)
	closeCancel()
	if err != nil {
		return b.fail(ctx, op, err)
	}
	return nil
}

func (b *IPMI) fail(ctx context.Context, op string, err error) error {
	k := classifyIPMI(err)
	if k == KindOther && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Whatever the library made of it, nothing useful came back
		// before the call's deadline.
		k = KindUnreachable
	}
	return &Error{Op: op, Target: b.target, Kind: k, Err: clean(err, b.password)}
}

// classifyIPMI sorts an error from go-ipmi. The library flattens the
// errors of its cipher-suite loop into text (Connect wraps them with %v),
// so the RAKP and RMCP+ status checks fall back to the library's own
// message texts, built from its own values so that they follow it.
func classifyIPMI(err error) Kind {
	msg := err.Error()

	var st *types.RmcpStatusError
	if errors.As(err, &st) {
		if k, ok := rmcpStatusKind(st.StatusCode()); ok {
			return k
		}
	}
	if errors.Is(err, client.ErrRAKPAuthentication) || strings.Contains(msg, client.ErrRAKPAuthentication.Error()) {
		return KindAuth
	}
	for code, k := range rmcpStatusKinds {
		if strings.Contains(msg, types.NewRmcpStatusError(code).Error()) {
			return k
		}
	}
	var re *types.ResponseError
	if errors.As(err, &re) {
		switch re.CompletionCode() {
		case types.CodeInsufficientPrivilege:
			return KindPermission
		case 0x80, 0x81:
			// Set Session Privilege Level: "requested level not
			// available for this user" / "exceeds the channel limit".
			if strings.Contains(msg, "SetSessionPrivilegeLevel") {
				return KindPermission
			}
		}
	}
	if k := classifyNet(err); k != KindOther {
		return k
	}
	// The library's unexported "no datagram matched" sentinel: every try
	// of an exchange timed out without an answer.
	if strings.Contains(msg, noDatagramMatched) {
		return KindUnreachable
	}
	return KindOther
}

const noDatagramMatched = "no datagram matched before deadline"

var rmcpStatusKinds = map[types.RmcpStatusCode]Kind{
	types.RmcpStatusCodeUnauthorizedName:           KindAuth,
	types.RmcpStatusCodeInvalidIntegrityCheckValue: KindAuth,
	types.RmcpStatusCodeInvalidRole:                KindPermission,
	types.RmcpStatusCodeUnauthorizedRoleOfPriLevel: KindPermission,
}

func rmcpStatusKind(code types.RmcpStatusCode) (Kind, bool) {
	k, ok := rmcpStatusKinds[code]
	return k, ok
}

// clean keeps the password out of an error's text should a library ever
// put it there, and folds the library's multi-line messages onto one line
// for logs, while errors.Is/As still reach the original.
func clean(err error, s config.Secret) error {
	msg := err.Error()
	pw := s.Reveal()
	hasPW := pw != "" && strings.Contains(msg, pw)
	if !hasPW && !strings.ContainsAny(msg, "\r\n") {
		return err
	}
	if hasPW {
		msg = strings.ReplaceAll(msg, pw, "<secret>")
	}
	msg = strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)), " ")
	return &cleaned{msg: msg, err: err}
}

type cleaned struct {
	msg string
	err error
}

func (e *cleaned) Error() string { return e.msg }
func (e *cleaned) Unwrap() error { return e.err }
