package ready

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// DefaultTCPTimeout bounds one TCP connect attempt.
const DefaultTCPTimeout = 3 * time.Second

// TCPProbe passes when a TCP connection to Addr is accepted. The
// connection is closed at once; nothing is sent.
type TCPProbe struct {
	Addr    string        // host:port
	Timeout time.Duration // per attempt; 0 means DefaultTCPTimeout
}

// TCP returns a probe for addr ("host:port") after checking its form.
func TCP(addr string) (*TCPProbe, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("tcp probe %q: %w", addr, err)
	}
	if host == "" || port == "" {
		return nil, fmt.Errorf("tcp probe %q: want host:port", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return nil, fmt.Errorf("tcp probe %q: bad port: %w", addr, err)
	}
	return &TCPProbe{Addr: addr}, nil
}

// String returns "tcp host:port".
func (p *TCPProbe) String() string { return "tcp " + p.Addr }

// Check dials Addr once.
func (p *TCPProbe) Check(ctx context.Context) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTCPTimeout
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return bareNetError(err)
	}
	return c.Close()
}

// bareNetError drops the "dial tcp host:port: connect:" prefixes of a
// dial error, since the probe's name already says what was dialed. The
// result still matches the errno (syscall.ECONNREFUSED) with errors.Is.
func bareNetError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return err
}
