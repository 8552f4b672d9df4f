//go:build unix

package wake

import (
	"syscall"
)

// broadcastControl returns a net.Dialer Control function that sets
// SO_BROADCAST to on. Go turns SO_BROADCAST on for every UDP socket by
// default; WOL turns it off again for unicast destinations so that only a
// destination the kernel knows as broadcast is ever sent as one.
func broadcastControl(on bool) func(network, address string, c syscall.RawConn) error {
	v := 0
	if on {
		v = 1
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, v)
		}); err != nil {
			return err
		}
		return serr
	}
}
